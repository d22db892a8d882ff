"""The watchdog, the desired state and the crash-loop guard, against the real engine."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import docker
import pytest
import zmq.asyncio

from common.messages import LifecycleRestartScheduled
from testkit.executor import (
    ExecutorProc,
    Lan,
    create_ok,
    https_ok,
    manual_vnic,
    short_id,
    wait_ready,
    wait_status,
)
from testkit.helpers import wait_for
from tests.executor.lifecycle_events import (
    FAST_RESTARTS,
    LifecycleEvents,
    watched_executor,
)

pytestmark = [pytest.mark.docker]


def running(body: dict[str, Any]) -> bool:
    return body.get("is_running") is True


def record(executor: ExecutorProc, name: str) -> dict[str, Any]:
    path = executor.state_dir / "lifecycle" / f"{name}.json"
    return dict(json.loads(path.read_text()))


def boot_line(executor: ExecutorProc, counts: str) -> None:
    """The second boot sync's log line (the first came before the executor restart)."""
    def found() -> bool:
        lines = [line for line in executor.output().splitlines()
                 if "boot sync (start) done" in line]
        return len(lines) == 2 and counts in lines[1]
    wait_for(found, 20, f"boot sync with {counts}")


async def kill_and_see_restart(dc: docker.DockerClient, events: LifecycleEvents,
                               name: str, signal: str, exit_code: int) -> None:
    attrs = dc.api.inspect_container(name)
    started = attrs["State"]["StartedAt"]
    # Serving means its signal handlers are in place (PID 1 ignores a SIGTERM without one).
    ip = attrs["NetworkSettings"]["Networks"][f"{name}_internal"]["IPAddress"]
    wait_for(lambda: https_ok(ip), 20, f"{name} answering")
    dc.api.kill(name, signal=signal)
    scheduled = await events.wait("lifecycle.restart_scheduled",
                                  lambda m: m.device == name)
    assert isinstance(scheduled, LifecycleRestartScheduled)
    assert scheduled.exit_code == exit_code and scheduled.oom_killed is False
    done = await events.wait("lifecycle.restart_done", lambda m: m.device == name)
    assert done.ok is True, done
    state = dc.api.inspect_container(name)["State"]
    assert state["Running"] is True and state["StartedAt"] != started


async def test_killed_runtime_restarted_and_stop_survives_restart(
        make_executor: Callable[..., ExecutorProc], zctx: zmq.asyncio.Context,
        lans: Callable[[], Lan], docker_client: docker.DockerClient) -> None:
    async with watched_executor(make_executor, zctx, **FAST_RESTARTS) as (executor, bus, events):
        name = f"oat-plc-{short_id()}"
        body = await create_ok(bus, name, [manual_vnic(lans(), 21)])
        assert body["lifecycle"]["state"] == "running" and body["lifecycle"]["exits"] == []
        attrs = docker_client.api.inspect_container(name)
        assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"

        # SIGKILL of the main process (137), then a clean exit nobody asked for (0).
        await kill_and_see_restart(docker_client, events, name, "KILL", 137)
        await kill_and_see_restart(docker_client, events, name, "TERM", 0)
        body = await wait_status(bus, name, running)
        exits = body["lifecycle"]["exits"]
        assert [e["exit_code"] for e in exits] == [137, 0], exits
        assert all(e["oom_killed"] is False and e["at"].endswith("Z") for e in exits)
        assert body["lifecycle"]["state"] == "running"

        stopped = await bus.call("stop_device", {"device_id": name}, timeout=20)
        assert stopped["success"] is True and stopped["container_status"] == "exited"
        desired = await events.wait("lifecycle.desired", lambda m: m.device == name)
        assert (desired.desired, desired.reason) == ("stopped", "stop_device")
        await events.listen(2)  # longer than the restart delay: nothing restarts it
        assert docker_client.api.inspect_container(name)["State"]["Running"] is False
        assert "lifecycle.restart_scheduled" not in events.topics()
        assert record(executor, name)["desired"] == "stopped"

        executor.stop()
        executor.start()
        await wait_ready(bus)
        # The message may go out before the subscription has re-joined (PUB/SUB is
        # lossy); the log line says the same (the boot-sync test hears the message).
        boot_line(executor, "1 runtime(s), 0 started, 0 already running, 1 kept stopped")
        body = await bus.call("device_status", {"device_id": name})
        assert body["is_running"] is False and body["lifecycle"]["state"] == "stopped"

        started = await bus.call("start_device", {"device_id": name}, timeout=20)
        assert started["success"] is True and started["container_status"] == "running"
        body = await bus.call("device_status", {"device_id": name})
        assert body["lifecycle"]["state"] == "running" and body["lifecycle"]["exits"] == []


async def test_crash_loop_left_stopped_until_started(
        make_executor: Callable[..., ExecutorProc], zctx: zmq.asyncio.Context,
        lans: Callable[[], Lan], docker_client: docker.DockerClient) -> None:
    env = {**FAST_RESTARTS, "ORCH_CRASH_LOOP_EXITS": "3", "ORCH_CRASH_LOOP_WINDOW": "300"}
    async with watched_executor(make_executor, zctx, **env) as (executor, bus, events):
        name = f"oat-plc-{short_id()}"
        await create_ok(bus, name, [manual_vnic(lans(), 22)])
        for _ in range(2):
            await kill_and_see_restart(docker_client, events, name, "KILL", 137)
        docker_client.api.kill(name, signal="KILL")
        loop = await events.wait("lifecycle.crash_loop", lambda m: m.device == name)
        assert [e["exit_code"] for e in loop.exits] == [137, 137, 137]
        assert all(e["oom_killed"] is False for e in loop.exits)
        await events.listen(2)  # past the restart delay and its backoff: still down
        assert "lifecycle.restart_done" not in events.topics()
        assert docker_client.api.inspect_container(name)["State"]["Running"] is False
        body = await bus.call("device_status", {"device_id": name})
        # The documented fields stay; the guard is in the lifecycle block.
        assert body["status"] == "success" and body["container_status"] == "exited"
        assert body["is_running"] is False and body["exit_code"] == 137
        block = body["lifecycle"]
        assert block["state"] == "crash_loop" and block["desired"] == "running"
        assert [e["exit_code"] for e in block["exits"]] == [137, 137, 137]
        assert block["crash_loop_since"].endswith("Z")

        # The guard survives an executor restart.
        executor.stop()
        executor.start()
        await wait_ready(bus)
        boot_line(executor, "0 started, 0 already running, 0 kept stopped, 1 in crash loop")
        assert docker_client.api.inspect_container(name)["State"]["Running"] is False

        started = await bus.call("start_device", {"device_id": name}, timeout=20)
        assert started["success"] is True and started["container_status"] == "running"
        desired = await events.wait("lifecycle.desired", lambda m: m.device == name)
        assert (desired.desired, desired.reason) == ("running", "start_device")
        body = await bus.call("device_status", {"device_id": name})
        assert body["lifecycle"]["state"] == "running" and body["lifecycle"]["exits"] == []
        # Watched again from scratch.
        await kill_and_see_restart(docker_client, events, name, "KILL", 137)
