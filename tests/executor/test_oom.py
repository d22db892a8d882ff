"""A runtime killed by the kernel's OOM killer, against the real engine: the watchdog
records the exit with `oom_killed` and starts it again; the next OOM kill within the
window trips the crash-loop guard, whose exits say OOM too.

The stand-in image is not changed for this: the runtime gets a small memory limit through
the engine (`docker update`), and its main process is made to hold a large request body
in memory (the stand-in reads a body whole, up to 64 MiB, as the real runtime reads an
uploaded program), so the kernel kills PID 1 itself and the container dies OOM-killed.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
from collections.abc import Callable

import docker
import pytest
import zmq.asyncio

from common.messages import LifecycleCrashLoop, LifecycleRestartScheduled
from testkit.executor import (
    ExecutorProc,
    Lan,
    create_ok,
    https_ok,
    manual_vnic,
    short_id,
    wait_status,
)
from testkit.helpers import wait_for
from tests.executor.lifecycle_events import FAST_RESTARTS, watched_executor

pytestmark = [pytest.mark.docker]

FAST = {**FAST_RESTARTS, "ORCH_CRASH_LOOP_EXITS": "2", "ORCH_CRASH_LOOP_WINDOW": "300"}
# Well above the stand-in's own footprint (about 25 MiB), well below it plus the body.
LIMIT = 48 * 1024 * 1024
BODY = 63 * 1024 * 1024  # under the stand-in's 64 MiB request limit


def internal_ip(dc: docker.DockerClient, name: str) -> str:
    attrs = dc.api.inspect_container(name)
    return str(attrs["NetworkSettings"]["Networks"][f"{name}_internal"]["IPAddress"])


def send_big_body(ip: str) -> None:
    """POST a body the runtime reads into memory; it dies while reading it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(ip, 8443, timeout=20, context=context)
    chunk = b"\0" * (1024 * 1024)
    try:
        connection.putrequest("POST", "/api/test/echo")
        connection.putheader("Content-Length", str(BODY))
        connection.putheader("Content-Type", "application/octet-stream")
        connection.endheaders()
        for _ in range(BODY // len(chunk)):
            connection.send(chunk)
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass  # the runtime died under it: what this is for
    finally:
        with contextlib.suppress(OSError):
            connection.close()


async def oom_kill(dc: docker.DockerClient, name: str) -> str:
    """Make the runtime's main process exceed its limit; its StartedAt before."""
    ip = internal_ip(dc, name)
    wait_for(lambda: https_ok(ip), 20, f"{name} answering")
    started = str(dc.api.inspect_container(name)["State"]["StartedAt"])
    send_big_body(ip)
    return started


async def test_oom_killed_runtime_restarted_then_crash_loop(
        make_executor: Callable[..., ExecutorProc], zctx: zmq.asyncio.Context,
        lans: Callable[[], Lan], docker_client: docker.DockerClient) -> None:
    async with watched_executor(make_executor, zctx, **FAST) as (_, bus, events):
        name = f"oat-plc-{short_id()}"
        await create_ok(bus, name, [manual_vnic(lans(), 23)])
        # No swap to escape to: the limit is the limit.
        docker_client.api.update_container(name, mem_limit=LIMIT, memswap_limit=LIMIT)

        # 1. OOM-killed: recorded as such, restarted by the watchdog.
        before = await oom_kill(docker_client, name)
        scheduled = await events.wait("lifecycle.restart_scheduled",
                                      lambda m: m.device == name)
        assert isinstance(scheduled, LifecycleRestartScheduled)
        assert scheduled.oom_killed is True and scheduled.exit_code == 137, scheduled
        done = await events.wait("lifecycle.restart_done", lambda m: m.device == name)
        assert done.ok is True, done
        state = docker_client.api.inspect_container(name)["State"]
        assert state["Running"] is True and state["StartedAt"] != before, state
        body = await wait_status(bus, name, lambda b: b.get("is_running") is True)
        block = body["lifecycle"]
        assert block["state"] == "running", block
        assert [(e["exit_code"], e["oom_killed"]) for e in block["exits"]] == [(137, True)]

        # 2. Again within the window: the guard leaves it stopped, the exits say OOM.
        await oom_kill(docker_client, name)
        loop = await events.wait("lifecycle.crash_loop", lambda m: m.device == name)
        assert isinstance(loop, LifecycleCrashLoop)
        assert [(e["exit_code"], e["oom_killed"]) for e in loop.exits] == [(137, True)] * 2
        await events.listen(2)  # past the restart delay: still down
        assert "lifecycle.restart_done" not in events.topics()
        state = docker_client.api.inspect_container(name)["State"]
        assert state["Running"] is False and state["OOMKilled"] is True, state
        body = await bus.call("device_status", {"device_id": name})
        assert body["status"] == "success" and body["is_running"] is False, body
        assert body["exit_code"] == 137, body
        block = body["lifecycle"]
        assert block["state"] == "crash_loop" and block["desired"] == "running", block
        assert [(e["exit_code"], e["oom_killed"]) for e in block["exits"]] == [(137, True)] * 2
