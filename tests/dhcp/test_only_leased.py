"""A dhcp vPLC never carries an address the LAN's server did not lease to it.

Every network namespace the engine makes during the test is watched from its first
moment (`netwatch.NetnsWatch`: subscribed to its address events before the engine moves
the MACVLAN interface in), so an address that lived for a millisecond is still seen.

* Through the executor with dnsmasq: create, `docker restart`, stop/start,
  `restart_device`: the only address ever seen on the LAN's subnet is the lease; the
  same for a create on a LAN without a server (left unconnected until a server appears),
  a re-homing, and a lease that moved while the runtime was stopped.
* The watch itself: it sees the engine's IPAM address of a plain container started on a
  MACVLAN network, so a watch that saw nothing else above would have seen an IPAM
  address had there been one.

Needs root, the engine and dnsmasq.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from common.bus import RpcClient
from services.executor.dhcp.lease import Lease
from testkit.dockerenv import TEST_LABELS
from testkit.executor import (
    ExecutorProc,
    create_ok,
    https_ok_from,
    macvlan_name,
    short_id,
    wait_ready,
    wait_status,
)
from testkit.helpers import wait_for
from testkit.movinglan import host
from tests.dhcp.lan import DhcpLan
from tests.dhcp.netwatch import ENGINE_NETNS, NetnsWatch
from tests.dhcp.test_docker import container_addresses, container_links
from tests.dhcp.test_executor import dhcp_vnic, in_state, lease_of, pid_of
from tests.rehome.fakebridge import FakeBridge

pytestmark = [pytest.mark.docker, pytest.mark.netns, pytest.mark.timeout(240),
              pytest.mark.skipif(not __import__("os").path.isdir(ENGINE_NETNS),
                                 reason="the engine's namespaces are not visible here")]


async def test_only_the_lease_is_ever_on_the_vnic(
        lan_on: Callable[..., DhcpLan], executor: ExecutorProc, bus: RpcClient,
        blocks: Callable[[int], list[str]], docker_client: docker.DockerClient) -> None:
    (block,) = blocks(1)
    lan = lan_on(block, ping=False)
    executor.start()
    await wait_ready(bus)
    name = f"oat-dw-{short_id()}"
    with NetnsWatch() as watch:
        await create_ok(bus, name, [dhcp_vnic(lan)])
        body = await wait_status(bus, name, in_state("bound"), 30)
        net = lease_of(body)
        ip, mac = net["ip_address"], net["mac_address"]
        leased = {f"{ip}/27"}
        assert container_addresses(pid_of(docker_client, name), mac) == [f"{ip}/27"]
        assert lan.leases() == {mac: ip}

        # The engine restarts it: a new namespace, the same fixed (leased) address.
        old_pid = pid_of(docker_client, name)
        docker_client.containers.get(name).restart(timeout=3)
        await wait_status(bus, name, lambda b: in_state("bound")(b) and
                          pid_of(docker_client, name) != old_pid, 30)
        # The executor stops and starts it.
        assert (await bus.call("stop_device", {"device_id": name}))["status"] == "success"
        assert (await bus.call("start_device", {"device_id": name}))["status"] == "success"
        body = await wait_status(bus, name, in_state("bound"), 30)
        assert lease_of(body)["ip_address"] == ip
        # restart_device: a stop and a start (the lease on file checked in between).
        old_pid = pid_of(docker_client, name)
        restarted = await bus.call("restart_device", {"device_id": name}, timeout=30)
        assert restarted["status"] == "success", restarted
        body = await wait_status(bus, name, lambda b: in_state("bound")(b) and
                                 pid_of(docker_client, name) != old_pid, 30)
        assert lease_of(body)["ip_address"] == ip
        wait_for(lambda: len(watch.seen) >= 4, 10, "four namespaces of the runtime watched")
    print(f"namespaces watched: {len(watch.seen)}, watch lag (s): "
          f"{sorted(round(v, 4) for v in watch.lag.values())}")
    assert watch.addresses_in(block) == leased, watch.seen


async def test_the_watch_sees_what_the_engine_puts(
        lans: Callable[..., DhcpLan], blocks: Callable[[int], list[str]],
        docker_client: docker.DockerClient, standin_image: str) -> None:
    (plain_block,) = blocks(1)
    plain_lan = lans()  # no DHCP server
    network = docker_client.networks.create(
        f"oat-dwn-{uuid.uuid4().hex[:8]}", driver="macvlan",
        options={"parent": plain_lan.parent}, labels=TEST_LABELS,
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
            subnet=plain_block, gateway=host(plain_block, 1))]))
    plain = None
    try:
        with NetnsWatch() as watch:
            plain = docker_client.containers.run(
                standin_image, detach=True, name=f"oat-dwp-{short_id()}",
                labels=TEST_LABELS, network=network.name)
            plain.reload()
            ipam = plain.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
            wait_for(lambda: watch.addresses_in(plain_block), 10, "the plain container seen")
        print(f"watch lag (s): {sorted(round(v, 4) for v in watch.lag.values())}")
        assert watch.addresses_in(plain_block) == {f"{ipam}/27"}
    finally:
        if plain is not None:
            plain.remove(force=True)
        network.remove()


async def test_no_server_then_a_server(
        lan_on: Callable[..., DhcpLan], executor: ExecutorProc, bus: RpcClient,
        blocks: Callable[[int], list[str]], docker_client: docker.DockerClient) -> None:
    """No lease at create: the vNIC is not connected (no address on the LAN's subnet,
    `no_offer`), also across an executor kill -9; a server appears: the runtime is
    connected with its lease and answers HTTPS from the LAN."""
    (block,) = blocks(1)
    lan = lan_on(block, server=False, ping=False)
    network = macvlan_name(lan.parent, block)
    executor.start()
    await wait_ready(bus)
    name = f"oat-dwq-{short_id()}"
    with NetnsWatch() as watch:
        await create_ok(bus, name, [dhcp_vnic(lan)])
        body = await wait_status(bus, name, in_state("no_offer"), 30)
        net = lease_of(body)
        mac = net["mac_address"]
        assert body["is_running"] and set(body["networks"]) == {network}
        assert net["ip_address"] is None and net["gateway"] is None
        assert network not in docker_client.api.inspect_container(name)[
            "NetworkSettings"]["Networks"]
        assert mac not in container_links(pid_of(docker_client, name))  # no such vNIC

        # kill -9 while waiting: the new executor finds the vNIC still unconnected.
        executor.kill()
        executor.start()
        await wait_ready(bus)
        await wait_status(bus, name, in_state("requesting", "no_offer"), 30)

        lan.serve(block)
        body = await wait_status(bus, name, in_state("bound"), 60)
        net = lease_of(body)
        ip = net["ip_address"]
        assert net["mac_address"] == mac and lan.leases() == {mac: ip}
        attrs = docker_client.api.inspect_container(name)["NetworkSettings"]["Networks"]
        assert attrs[network]["IPAMConfig"]["IPv4Address"] == ip  # fixed: the lease
        assert container_addresses(pid_of(docker_client, name), mac) == [f"{ip}/27"]
        wait_for(lambda: https_ok_from(lan.ns, ip), 30, interval=0.5,
                 what="HTTPS from the LAN at the lease")
    print(f"namespaces watched: {len(watch.seen)}")
    assert watch.addresses_in(block) == {f"{ip}/27"}, watch.seen


@pytest.mark.parametrize("server_first", [True, False], ids=["served", "served-later"])
async def test_rehoming_shows_only_leases(
        lan_on: Callable[..., DhcpLan], executor: ExecutorProc, bridge: FakeBridge,
        bus: RpcClient, blocks: Callable[[int], list[str]],
        docker_client: docker.DockerClient, tmp_path: Path, server_first: bool) -> None:
    """Re-homing to a subnet with its own dnsmasq: the vNIC is leased on the new LAN
    before it is connected; with no server there yet it stays unconnected (`no_offer`)
    until one serves."""
    old, new = blocks(2)
    lan = lan_on(old, ping=False)
    executor.start()
    await wait_ready(bus)
    name = f"oat-dwm-{short_id()}"
    network = macvlan_name(lan.parent, new)
    with NetnsWatch() as watch:
        await create_ok(bus, name, [dhcp_vnic(lan)])
        body = await wait_status(bus, name, in_state("bound"), 30)
        first, mac = lease_of(body)["ip_address"], lease_of(body)["mac_address"]

        lan.retire_server(tmp_path / "second-server")
        if server_first:
            lan.serve(new)
        else:  # the wire carries the new subnet's router address, nothing serves it yet
            lan.renumber(new)
        bridge.change(lan.host_interface(new))
        if not server_first:
            body = await wait_status(bus, name, lambda b: set(b.get("networks") or {}) ==
                                     {network} and in_state("no_offer")(b), 60)
            assert lease_of(body)["ip_address"] is None
            assert mac not in container_links(pid_of(docker_client, name))
            lan.serve(new)
        body = await wait_status(bus, name, lambda b: set(b.get("networks") or {}) ==
                                 {network} and in_state("bound")(b) and "rehoming" not in b,
                                 60)
        ip = lease_of(body)["ip_address"]
        assert lease_of(body)["dhcp"]["server"] == host(new, 1)
        attrs = docker_client.api.inspect_container(name)["NetworkSettings"]["Networks"]
        assert attrs[network]["IPAMConfig"]["IPv4Address"] == ip  # fixed: the lease
        assert container_addresses(pid_of(docker_client, name), mac) == [f"{ip}/27"]
        wait_for(lambda: https_ok_from(lan.ns, ip), 30, interval=0.5,
                 what="HTTPS from the LAN at the new lease")
    assert watch.addresses_in(old) == {f"{first}/27"}, watch.seen
    assert watch.addresses_in(new) == {f"{ip}/27"}, watch.seen


async def test_a_moved_lease_is_fixed_before_the_start(
        lan_on: Callable[..., DhcpLan], executor: ExecutorProc, bus: RpcClient,
        blocks: Callable[[int], list[str]], docker_client: docker.DockerClient,
        tmp_path: Path) -> None:
    """The lease on file expired while the runtime was stopped and the server now gives
    the vNIC another address: `start_device` leases again and reconnects the endpoint
    with the new lease before the start, so the old one never appears again."""
    (block,) = blocks(1)
    lan = lan_on(block, ping=False)
    executor.start(ORCH_DHCP_LEASE_CAP="6")  # given up locally after 6 s
    await wait_ready(bus)
    name = f"oat-dwx-{short_id()}"
    with NetnsWatch() as watch:
        await create_ok(bus, name, [dhcp_vnic(lan)])
        body = await wait_status(bus, name, in_state("bound"), 30)
        first, mac = lease_of(body)["ip_address"], lease_of(body)["mac_address"]
        assert (await bus.call("stop_device", {"device_id": name}))["status"] == "success"

        # The server forgets it and reserves another address for its MAC.
        moved = host(block, 13)
        lan.retire_server(tmp_path / "second-server")
        lan.reservations = {mac: moved}
        lan.start_server()
        wait_for(lambda: not executor_lease_valid(executor, name), 15, interval=0.5,
                 what="the lease on file expired")
        before = set(watch.seen)
        assert (await bus.call("start_device", {"device_id": name}))["status"] == "success"
        body = await wait_status(bus, name, lambda b: in_state("bound")(b) and
                                 lease_of(b)["ip_address"] == moved, 60)
        attrs = docker_client.api.inspect_container(name)["NetworkSettings"]["Networks"]
        network = macvlan_name(lan.parent, block)
        assert attrs[network]["IPAMConfig"]["IPv4Address"] == moved  # fixed: the new lease
        assert container_addresses(pid_of(docker_client, name), mac) == [f"{moved}/27"]
        wait_for(lambda: https_ok_from(lan.ns, moved), 30, interval=0.5,
                 what="HTTPS from the LAN at the moved lease")
    after = [a for k, v in watch.seen.items() if k not in before for a in v
             if ipaddress.IPv4Interface(a) in ipaddress.IPv4Network(block)]
    assert set(after) == {f"{moved}/27"}, watch.seen
    assert watch.addresses_in(block) == {f"{first}/27", f"{moved}/27"}, watch.seen


def executor_lease_valid(executor: ExecutorProc, name: str) -> bool:
    record = json.loads((executor.state_dir / "dhcp" / f"{name}@eth0.json").read_text())
    lease = record.get("lease")
    return bool(lease) and not Lease.from_dict(lease).expired()
