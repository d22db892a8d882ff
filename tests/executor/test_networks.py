"""MACVLAN networks: sharing, reuse on "Pool overlaps", stale objects, garbage collection."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import docker
import docker.errors
import docker.types
import pytest

from common.bus import RpcClient
from testkit.dockerenv import TEST_LABELS
from testkit.executor import (
    ExecutorProc,
    Lan,
    create_ok,
    create_runtime,
    manual_vnic,
    settled,
    short_id,
    wait_status,
)
from testkit.helpers import wait_for

pytestmark = [pytest.mark.docker]


async def delete_ok(bus: RpcClient, name: str) -> None:
    ack = await bus.call("delete_device", {"device_id": name})
    assert ack["status"] == "deleting", ack
    body = await wait_status(bus, name, settled)
    assert body["status"] == "not_found", body


def network_names(dc: docker.DockerClient) -> set[str]:
    return {n.name for n in dc.networks.list()}


async def test_two_runtimes_share_one_macvlan_network(
        bus: RpcClient, executor: ExecutorProc, lans: Callable[[], Lan],
        docker_client: docker.DockerClient) -> None:
    lan = lans()
    first, second = f"oat-a-{short_id()}", f"oat-b-{short_id()}"
    await create_ok(bus, first, [manual_vnic(lan, 20)])
    await create_ok(bus, second, [manual_vnic(lan, 21)])
    shared = docker_client.networks.get(lan.network_name())
    assert shared.attrs["Labels"]["orchestrator.instance"] == executor.instance
    # Stopped, the second still "uses" the network: deleting the first must keep it.
    assert (await bus.call("stop_device", {"device_id": second}))["success"] is True
    await delete_ok(bus, first)
    names = network_names(docker_client)
    assert lan.network_name() in names
    assert f"{first}_internal" not in names and f"{second}_internal" in names
    assert (await bus.call("start_device", {"device_id": second}))["success"] is True
    await delete_ok(bus, second)
    assert lan.network_name() not in network_names(docker_client)


async def test_pool_overlap_reuses_existing_macvlan_network(
        bus: RpcClient, executor: ExecutorProc, lans: Callable[[], Lan],
        docker_client: docker.DockerClient) -> None:
    lan = lans()
    # A MACVLAN network for the same LAN under another name, made by someone else.
    ipam = docker.types.IPAMConfig(pool_configs=[
        docker.types.IPAMPool(subnet=lan.subnet, gateway=lan.gateway)])
    foreign = docker_client.networks.create(f"oat-user-lan-{short_id()}", driver="macvlan",
                                            options={"parent": lan.parent}, ipam=ipam,
                                            labels=TEST_LABELS)
    try:
        name = f"oat-plc-{short_id()}"
        body = await create_ok(bus, name, [manual_vnic(lan, 22)])
        assert set(body["networks"]) == {foreign.name}
        assert body["networks"][foreign.name]["ip_address"] == lan.addr(22)
        assert lan.network_name() not in network_names(docker_client)
        stored = (executor.state_dir / "runtime_vnics.json").read_text()
        assert foreign.name in stored
        await delete_ok(bus, name)
        # Not ours: it stays.
        foreign.reload()
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            foreign.remove()


async def test_overlap_with_a_foreign_bridge_is_a_clear_error(
        bus: RpcClient, executor: ExecutorProc, lans: Callable[[], Lan],
        docker_client: docker.DockerClient) -> None:
    lan = lans()
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=lan.subnet)])
    bridge = docker_client.networks.create(f"oat-user-br-{short_id()}", driver="bridge",
                                           ipam=ipam, labels=TEST_LABELS)
    try:
        name = f"oat-plc-{short_id()}"
        ack = await create_runtime(bus, name, [manual_vnic(lan, 22)])
        assert ack["status"] == "creating"
        body = await wait_status(bus, name, settled)
        assert body["status"] == "error" and body["step"] == "creating_networks"
        assert "overlaps an existing Docker network" in body["error"]
        assert f"{name}_internal" not in network_names(docker_client)
        bridge.reload()  # untouched
    finally:
        bridge.remove()


async def test_stale_network_object_is_replaced(
        bus: RpcClient, executor: ExecutorProc, lans: Callable[[], Lan],
        docker_client: docker.DockerClient) -> None:
    lan = lans()
    # A leftover of ours with our name but another gateway, used by nobody: stale.
    stale_gateway = lan.addr(62)
    ipam = docker.types.IPAMConfig(pool_configs=[
        docker.types.IPAMPool(subnet=lan.subnet, gateway=stale_gateway)])
    stale = docker_client.networks.create(
        lan.network_name(), driver="macvlan", options={"parent": lan.parent}, ipam=ipam,
        labels={"orchestrator.managed": "true", "orchestrator.instance": executor.instance,
                "orchestrator.kind": "macvlan"})
    # And a leftover internal network of ours for a device that has no container.
    ghost = f"oat-ghost-{short_id()}"
    docker_client.networks.create(
        f"{ghost}_internal", driver="bridge", internal=True,
        labels={"orchestrator.managed": "true", "orchestrator.instance": executor.instance,
                "orchestrator.kind": "internal", "orchestrator.device": ghost})
    name = f"oat-plc-{short_id()}"
    body = await create_ok(bus, name, [manual_vnic(lan, 23)])
    net = body["networks"][lan.network_name()]
    assert net["gateway"] == lan.gateway
    assert docker_client.networks.get(lan.network_name()).id != stale.id
    # The ghost's internal network goes at the next reconciliation (a restart).
    executor.stop()
    executor.start()
    wait_for(lambda: f"{ghost}_internal" not in network_names(docker_client), 20,
         "leftover internal network removed")
    assert f"{name}_internal" in network_names(docker_client)


def test_a_network_still_used_is_not_removed_and_says_by_whom(
        docker_client: docker.DockerClient) -> None:
    """`remove_left` (the removal after a move's disconnects) waits out the engine's
    late endpoint count only while it lists no endpoint: one that is listed ends it at
    once, with the container named."""
    from services.executor.errors import OperationFailed
    from services.executor.net.networks import remove_left
    from testkit.dockerenv import ensure_base_image

    api = docker_client.api
    net = docker_client.networks.create(f"oat-left-{short_id()}", driver="bridge",
                                        internal=True, labels=TEST_LABELS)
    box = docker_client.containers.run(ensure_base_image(docker_client), ["sleep", "120"],
                                       name=f"oat-left-{short_id()}", detach=True,
                                       network=net.name, labels=TEST_LABELS)
    try:
        started = time.monotonic()
        with pytest.raises(OperationFailed, match=f"still used by {box.name}"):
            remove_left(api, net.id, wait=5.0)
        assert time.monotonic() - started < 2.5  # not the wait: the endpoint is listed
        assert net.id in {n.id for n in docker_client.networks.list()}
        api.disconnect_container_from_network(box.id, net.id, force=True)
        assert remove_left(api, net.id) is True
        assert remove_left(api, net.id) is False  # gone: nothing to do
    finally:
        box.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            net.remove()
