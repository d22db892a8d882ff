"""kill -9 of the executor in the middle of a create: after the restart the operation is
finished or rolled back, `device_status` says which, and nothing is orphaned."""

from __future__ import annotations

import json
from collections.abc import Callable

import docker
import pytest
import zmq.asyncio

from testkit.executor import (
    ExecutorProc,
    Lan,
    create_runtime,
    https_ok,
    journal,
    manual_vnic,
    owned_objects,
    settled,
    short_id,
    wait_ready,
    wait_status,
)
from testkit.helpers import wait_for

pytestmark = [pytest.mark.docker]


async def crash_after(step: str, make_executor: Callable[..., ExecutorProc],
                      zctx: zmq.asyncio.Context, lan: Lan, name: str,
                      mark: str, dc: docker.DockerClient,
                      ) -> tuple[ExecutorProc, tuple[list[str], list[str]]]:
    """Run a create until it passes `mark`, kill -9, restart; returns the executor and
    the objects the crash left behind."""
    executor = make_executor(OAT_PAUSE_AT=step).start()
    bus = executor.client(zctx)
    await wait_ready(bus)
    ack = await create_runtime(bus, name, [manual_vnic(lan, 25)])
    assert ack["status"] == "creating"
    wait_for(lambda: journal(executor, name).get("progress", {}).get(mark), 30,
         f"create of {name} to pass {mark}")
    body = await bus.call("device_status", {"device_id": name})
    assert body["status"] == "creating", body
    executor.kill()
    bus.close()
    # A journal written by a process killed at any moment still parses.
    assert journal(executor, name)["state"] == "in_progress"
    left = owned_objects(dc, executor.instance)
    executor.start(OAT_PAUSE_AT="")
    return executor, left


async def test_killed_after_network_step_rolls_back(
        make_executor: Callable[..., ExecutorProc], zctx: zmq.asyncio.Context,
        lans: Callable[[], Lan], docker_client: docker.DockerClient) -> None:
    lan = lans()
    name = f"oat-plc-{short_id()}"
    executor, (containers, networks) = await crash_after(
        "creating_networks", make_executor, zctx, lan, name, "networks_done", docker_client)
    bus = executor.client(zctx)
    await wait_ready(bus)
    body = await wait_status(bus, name, settled)
    assert body["status"] == "error" and body["operation"] == "create", body
    assert "Interrupted by an executor restart during step creating_networks" in body["error"]
    assert containers == [] and f"{name}_internal" in networks  # what the crash left behind
    wait_for(lambda: owned_objects(docker_client, executor.instance) == ([], []), 20,
         "rollback of the networks")
    assert journal(executor, name)["state"] == "error"
    bus.close()


async def test_killed_after_container_step_is_finished(
        make_executor: Callable[..., ExecutorProc], zctx: zmq.asyncio.Context,
        lans: Callable[[], Lan], docker_client: docker.DockerClient) -> None:
    lan = lans()
    name = f"oat-plc-{short_id()}"
    executor, (containers, _) = await crash_after(
        "container_created", make_executor, zctx, lan, name, "container_id", docker_client)
    assert containers == [name]
    assert docker_client.containers.get(name).status == "created"  # connected, not started
    bus = executor.client(zctx)
    await wait_ready(bus)
    body = await wait_status(bus, name, settled)
    assert body["status"] == "success" and body["is_running"] is True, body
    assert "last_operation" not in body
    wait_for(lambda: https_ok(body["internal_ip"]), 20, "the runtime answering")
    wait_for(lambda: lan.reach_https(lan.addr(25)), 20, "the LAN reaching the runtime")
    stored = json.loads((executor.state_dir / "runtime_vnics.json").read_text())
    assert stored[name][0]["ip_address"] == lan.addr(25)
    containers, networks = owned_objects(docker_client, executor.instance)
    assert containers == [name]
    assert sorted(networks) == sorted([f"{name}_internal",
                                       lan.network_name()])
    assert journal(executor, name)["state"] == "success"
    bus.close()
