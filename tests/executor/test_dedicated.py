"""Dedicated NICs against the real engine: the host end of a test veth pair plays the
physical NIC; it moves into a stand-in runtime, the LAN namespace on its peer reaches the
runtime at the static address, and it comes back to the host (its name, its up state) on
stop, delete, a removal by hand and across executor crashes.

A veth end is destroyed with the namespace it is in, so every return here also proves
that the executor held the runtime's namespace until the NIC was out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import docker
import pytest
import zmq.asyncio

from common.bus import RpcClient
from testkit.executor import (
    STANDIN_TAG,
    ExecutorProc,
    Lan,
    create_ok,
    manual_vnic,
    short_id,
    wait_ready,
    wait_status,
)
from testkit.helpers import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.netns, pytest.mark.timeout(300)]


def on_host(name: str) -> bool:
    try:
        with open(f"/sys/class/net/{name}/flags") as f:
            return bool(f.read())
    except OSError:
        return False


def is_up(name: str) -> bool:
    with open(f"/sys/class/net/{name}/flags") as f:
        return bool(int(f.read(), 16) & 1)


def dedicated_vnic(lan: Lan, host: int) -> dict[str, Any]:
    return manual_vnic(lan, host, name="fieldbus", dedicated_interface=lan.parent)


def nic(body: dict[str, Any], lan: Lan) -> dict[str, Any]:
    return dict((body.get("networks") or {}).get(f"dedicated_{lan.parent}") or {})


def state_is(lan: Lan, state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: nic(body, lan).get("state") == state


def record(executor: ExecutorProc) -> dict[str, Any]:
    path = executor.state_dir / "runtime_dedicated.json"
    return json.loads(path.read_text()) if path.exists() else {}


async def test_moves_in_serves_the_lan_and_returns_on_stop_and_delete(
        executor: ExecutorProc, bus: RpcClient, lans: Callable[[], Lan],
        docker_client: docker.DockerClient) -> None:
    lan = lans()
    assert on_host(lan.parent) and is_up(lan.parent)
    name = f"oat-plc-{short_id()}"
    body = await create_ok(bus, name, [dedicated_vnic(lan, 20)])
    assert nic(body, lan) == {
        "dedicated": True, "interface": lan.parent, "vnic": "fieldbus",
        "state": "in_runtime", "network_mode": "manual", "ip_address": lan.addr(20),
        "subnet": lan.subnet, "gateway": lan.gateway, "mac_address": nic(body, lan)["mac_address"]}
    assert nic(body, lan)["mac_address"]
    assert not on_host(lan.parent)
    # create answers once the engine has started the runtime; its server may need a moment
    wait_for(lambda: lan.reach_https(lan.addr(20)), 20, "the LAN reaching the runtime on its NIC")
    caps = docker_client.api.inspect_container(name)["HostConfig"]["CapAdd"]
    assert "NET_RAW" in caps and "NET_ADMIN" not in caps, caps
    assert record(executor)[name][0]["interface"] == lan.parent

    reply = await bus.call("stop_device", {"device_id": name}, timeout=30)
    assert reply["status"] == "success", reply
    assert on_host(lan.parent) and is_up(lan.parent), "not back (or down) after stop"
    await wait_status(bus, name, state_is(lan, "on_host"), 10)

    reply = await bus.call("start_device", {"device_id": name}, timeout=30)
    assert reply["status"] == "success", reply
    assert not on_host(lan.parent)
    wait_for(lambda: lan.reach_https(lan.addr(20)), 20, "runtime reachable after start")

    ack = await bus.call("delete_device", {"device_id": name})
    assert ack["status"] == "deleting", ack
    await wait_status(bus, name, lambda b: b.get("status") == "not_found", 30)
    assert on_host(lan.parent) and is_up(lan.parent), "not back after delete"
    assert name not in record(executor)


async def test_returns_when_the_container_is_removed_by_hand(
        executor: ExecutorProc, bus: RpcClient, lans: Callable[[], Lan],
        docker_client: docker.DockerClient) -> None:
    lan = lans()
    name = f"oat-plc-{short_id()}"
    await create_ok(bus, name, [dedicated_vnic(lan, 21)])
    assert not on_host(lan.parent)
    docker_client.api.remove_container(name, force=True)
    wait_for(lambda: on_host(lan.parent), 15, "NIC back after docker rm -f")
    assert is_up(lan.parent)
    wait_for(lambda: name not in record(executor), 15, "record dropped")


async def test_executor_crashes_while_dedicated(
        make_executor: Callable[..., ExecutorProc], zctx: zmq.asyncio.Context,
        lans: Callable[[], Lan], docker_client: docker.DockerClient) -> None:
    executor = make_executor().start()
    lan = lans()
    first, second = f"oat-plc-{short_id()}", f"oat-plc-{short_id()}"
    bus = executor.client(zctx)
    try:
        await wait_ready(bus)
        await create_ok(bus, first, [dedicated_vnic(lan, 22)])
        executor.kill()  # kill -9 while the NIC is in the runtime
        bus.close()
        executor.start()
        bus = executor.client(zctx)
        await wait_ready(bus)
        body = await wait_status(bus, first, state_is(lan, "in_runtime"), 15)
        assert body["status"] == "success", body
        wait_for(lambda: lan.reach_https(lan.addr(22)), 20, "the LAN reaching the runtime")
        ack = await bus.call("delete_device", {"device_id": first})
        assert ack["status"] == "deleting", ack
        await wait_status(bus, first, lambda b: b.get("status") == "not_found", 30)
        assert on_host(lan.parent) and is_up(lan.parent), "not back after delete"

        # Killed again, and the container removed by hand while no executor runs: the
        # pin keeps the namespace (and the veth end) until the next executor returns it.
        await create_ok(bus, second, [dedicated_vnic(lan, 23)])
        executor.kill()
        bus.close()
        docker_client.api.remove_container(second, force=True)
        assert not on_host(lan.parent)
        executor.start()
        bus = executor.client(zctx)
        await wait_ready(bus)
        wait_for(lambda: on_host(lan.parent), 20, "NIC back after the executor's restart")
        assert is_up(lan.parent)
        wait_for(lambda: second not in record(executor), 15, "record dropped")
    finally:
        bus.close()


async def test_bad_dedicated_interfaces_are_refused_and_change_nothing(
        executor: ExecutorProc, bus: RpcClient, lans: Callable[[], Lan],
        netbridge: Any, docker_client: docker.DockerClient) -> None:
    lan, other = lans(), lans()
    owner = f"oat-plc-{short_id()}"
    await create_ok(bus, owner, [dedicated_vnic(lan, 24)])
    netbridge.items = [other.iface()]
    user = f"oat-plc-{short_id()}"
    await create_ok(bus, user, [manual_vnic(other, 24)])  # other.parent: a MACVLAN parent
    before = record(executor)
    name = f"oat-plc-{short_id()}"
    cases = [
        (dict(manual_vnic(other, 25, name="fb"), dedicated_interface="oatmissing0"),
         "does not exist on the host"),
        (dict(manual_vnic(other, 25, name="fb"), dedicated_interface=lan.parent),
         f"already dedicated to runtime {owner}"),
        (dict(manual_vnic(other, 25, name="fb"), dedicated_interface=other.parent),
         "parent of MACVLAN network"),
        (dict(manual_vnic(other, 25, name="fb"), dedicated_interface="docker0"),
         "virtual interface"),
        (manual_vnic(lan, 25), f"is dedicated to runtime {owner}"),
    ]
    for vnic, text in cases:
        reply = await bus.call("create_runtime", {
            "container_name": name, "vnic_configs": [vnic], "runtime_version": STANDIN_TAG})
        assert reply["status"] == "error" and text in reply["error"], (vnic, reply)
    assert not docker_client.containers.list(all=True, filters={"name": f"^{name}$"})
    assert record(executor) == before
    body = await wait_status(bus, owner, state_is(lan, "in_runtime"), 5)
    assert body["status"] == "success"
    wait_for(lambda: lan.reach_https(lan.addr(24)), 20, "the LAN reaching the runtime")
