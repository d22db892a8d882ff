"""DHCP through the real executor: stand-in runtimes with "dhcp" vNICs on a LAN served by
dnsmasq, created, restarted, re-homed and deleted over the bus; `device_status` shows the
leases, the LAN reaches the runtimes at the leased addresses, and dnsmasq's lease file
agrees.

Needs root (namespaces, veth, MACVLAN), the engine and dnsmasq.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from common.bus import RpcClient
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
from tests.dhcp.test_docker import container_addresses, container_links
from tests.rehome.fakebridge import FakeBridge

pytestmark = [pytest.mark.docker, pytest.mark.netns, pytest.mark.timeout(300)]

RESERVED_MAC = "02:0d:c6:33:64:31"


def dhcp_vnic(lan: DhcpLan, mac: str | None = None) -> dict[str, Any]:
    vnic: dict[str, Any] = {"name": "eth0", "parent_interface": lan.parent,
                            "network_mode": "dhcp", "dns": ["192.0.2.53"]}
    if mac:
        vnic["mac"] = mac
    return vnic


def lease_of(body: dict[str, Any]) -> dict[str, Any]:
    """The single LAN network of a status body, with its `dhcp` block."""
    ((_, net),) = body.get("networks", {}).items()
    return dict(net)


def in_state(*states: str) -> Callable[[dict[str, Any]], bool]:
    def check(body: dict[str, Any]) -> bool:
        nets = body.get("networks") or {}
        return len(nets) == 1 and (lease_of(body).get("dhcp") or {}).get("state") in states
    return check


def pid_of(dc: docker.DockerClient, name: str) -> int:
    return int(dc.api.inspect_container(name)["State"]["Pid"])


async def test_leases_restart_kill_and_delete(
        lan_on: Callable[..., DhcpLan], executor: ExecutorProc, bus: RpcClient,
        blocks: Callable[[int], list[str]], docker_client: docker.DockerClient) -> None:
    (block,) = blocks(1)
    lan = lan_on(block, ping=False, options=["option:T1,4", "option:T2,7"],
                 reservations={RESERVED_MAC: host(block, 12)})
    executor.start()
    await wait_ready(bus)
    reserved, pooled = f"oat-dr-{short_id()}", f"oat-dp-{short_id()}"
    await create_ok(bus, reserved, [dhcp_vnic(lan, RESERVED_MAC)])
    await create_ok(bus, pooled, [dhcp_vnic(lan)])
    network = macvlan_name(lan.parent, block)
    leased: dict[str, dict[str, Any]] = {}
    for name in (reserved, pooled):
        body = await wait_status(bus, name, in_state("bound"), 30)
        assert set(body["networks"]) == {network}
        leased[name] = lease_of(body)
    first, second = leased[reserved], leased[pooled]
    assert first["ip_address"] == host(block, 12)
    pool = [ipaddress.IPv4Address(a) for a in lan.pool]
    assert pool[0] <= ipaddress.IPv4Address(second["ip_address"]) <= pool[1]
    for net in (first, second):
        assert net["gateway"] == host(block, 1)
        dhcp = net["dhcp"]
        assert dhcp["state"] == "bound" and dhcp["server"] == host(block, 1)
        assert dhcp["lease_start"] and dhcp["lease_expiry"]
        assert dhcp["dns"] == ["192.0.2.53", host(block, 29)]
    assert lan.leases() == {RESERVED_MAC: first["ip_address"],
                            second["mac_address"]: second["ip_address"]}
    for name in (reserved, pooled):
        ip, mac = leased[name]["ip_address"], leased[name]["mac_address"]
        resolv = docker_client.containers.get(name).exec_run(
            ["cat", "/etc/resolv.conf"]).output.decode()
        assert "nameserver 192.0.2.53" in resolv and f"nameserver {host(block, 29)}" in resolv
        # Only the lease: the engine's IPAM address is gone from the interface.
        assert container_addresses(pid_of(docker_client, name), mac) == [f"{ip}/27"]
        wait_for(lambda ip=ip: https_ok_from(lan.ns, ip), 30, interval=0.5,
                 what=f"HTTPS from the LAN to {ip}")

    # Renewals at T1 (4 s) show as a later lease start.
    before = first["dhcp"]["lease_start"]
    await wait_status(bus, reserved, lambda b: in_state("bound", "renewing")(b) and
                      lease_of(b)["dhcp"]["lease_start"] > before, 20)

    # kill -9 and a new executor: the leases are resumed, still shown, still renewed.
    executor.kill()
    executor.start()
    await wait_ready(bus)
    body = await wait_status(bus, pooled, in_state("bound", "renewing"), 20)
    assert lease_of(body)["ip_address"] == second["ip_address"]
    since = lease_of(body)["dhcp"]["lease_start"]
    await wait_status(bus, pooled, lambda b: in_state("bound", "renewing")(b) and
                      lease_of(b)["dhcp"]["lease_start"] > since, 20)
    assert "resumed" in executor.output()

    # The engine restarts the runtime: a new namespace, the same lease asked for again.
    old_pid = pid_of(docker_client, pooled)
    docker_client.containers.get(pooled).restart(timeout=3)
    body = await wait_status(bus, pooled, lambda b: in_state("bound")(b) and
                             pid_of(docker_client, pooled) != old_pid, 30)
    assert lease_of(body)["ip_address"] == second["ip_address"]
    assert container_addresses(pid_of(docker_client, pooled), second["mac_address"]) == \
        [f"{second['ip_address']}/27"]
    wait_for(lambda: https_ok_from(lan.ns, second["ip_address"]), 30, interval=0.5,
             what="HTTPS from the LAN after the restart")

    # stop_device: no address shown while stopped; start_device: the same lease again.
    stopped = await bus.call("stop_device", {"device_id": reserved})
    assert stopped["status"] == "success", stopped
    body = await bus.call("device_status", {"device_id": reserved})
    net = lease_of(body)
    assert not body["is_running"] and net["ip_address"] is None and "dhcp" not in net
    started = await bus.call("start_device", {"device_id": reserved})
    assert started["status"] == "success", started
    body = await wait_status(bus, reserved, in_state("bound"), 30)
    assert lease_of(body)["ip_address"] == host(block, 12)

    # Delete releases: the server forgets the lease.
    for name in (reserved, pooled):
        ack = await bus.call("delete_device", {"device_id": name})
        assert ack["status"] == "deleting", ack
        await wait_status(bus, name, lambda b: b.get("status") == "not_found", 30)
    wait_for(lambda: lan.leases() == {}, 10, "dnsmasq's lease file emptied by the releases")
    assert not list((executor.state_dir / "dhcp").glob("*.json"))


async def test_no_server_shows_no_offer(
        lan_on: Callable[..., DhcpLan], executor: ExecutorProc, bus: RpcClient,
        blocks: Callable[[int], list[str]], docker_client: docker.DockerClient) -> None:
    (block,) = blocks(1)
    lan = lan_on(block, server=False)
    executor.start()
    await wait_ready(bus)
    name = f"oat-dn-{short_id()}"
    await create_ok(bus, name, [dhcp_vnic(lan)])
    body = await wait_status(bus, name, in_state("requesting", "no_offer"), 10)
    net = lease_of(body)
    assert net["ip_address"] is None and net["gateway"] is None
    # ORCH_DHCP_NO_OFFER_AFTER=4: no_offer within that bound (plus a poll's slack).
    body = await wait_status(bus, name, in_state("no_offer"), 10)
    assert lease_of(body)["ip_address"] is None
    # Not connected to the LAN's network until a lease comes (docs/dhcp.md).
    assert net["mac_address"] not in container_links(pid_of(docker_client, name))


async def test_rehomed_vnic_leases_from_the_new_server(
        lan_on: Callable[..., DhcpLan], executor: ExecutorProc, bridge: FakeBridge,
        bus: RpcClient, blocks: Callable[[int], list[str]],
        docker_client: docker.DockerClient, tmp_path: Path) -> None:
    old, new = blocks(2)
    lan = lan_on(old, ping=False)
    executor.start()
    await wait_ready(bus)
    name = f"oat-dm-{short_id()}"
    await create_ok(bus, name, [dhcp_vnic(lan)])
    body = await wait_status(bus, name, in_state("bound"), 30)
    mac = lease_of(body)["mac_address"]
    assert lan.leases() == {mac: lease_of(body)["ip_address"]}

    # The LAN changes: its old server goes, one for the new subnet serves the same wire.
    lan.retire_server(tmp_path / "second-server")
    lan.serve(new)
    bridge.change(lan.host_interface(new))
    network = macvlan_name(lan.parent, new)
    body = await wait_status(bus, name, lambda b: set(b.get("networks") or {}) == {network}
                             and in_state("bound")(b) and "rehoming" not in b, 60)
    net = lease_of(body)
    assert net["dhcp"]["server"] == host(new, 1) and net["mac_address"] == mac
    assert ipaddress.IPv4Address(net["ip_address"]) in ipaddress.IPv4Network(new)
    assert lan.leases() == {mac: net["ip_address"]}
    assert container_addresses(pid_of(docker_client, name), mac) == \
        [f"{net['ip_address']}/27"]
    wait_for(lambda: https_ok_from(lan.ns, net["ip_address"]), 30, interval=0.5,
             what="HTTPS from the LAN at the new lease")


async def test_twenty_at_once(
        lan_on: Callable[..., DhcpLan], executor: ExecutorProc, bus: RpcClient,
        blocks: Callable[[int], list[str]]) -> None:
    """Twenty dhcp vPLCs asked for at once all get distinct leases.  dnsmasq runs with
    `--no-ping` (its ping probe costs 3 s per new address, one at a time)."""
    (block,) = blocks(1)
    lan = lan_on(block, ping=False, pool=(4, 28))
    executor.start()
    await wait_ready(bus)
    names = [f"oat-d20-{short_id()}" for _ in range(20)]
    started = time.monotonic()
    acks = await asyncio.gather(*(bus.call("create_runtime", {
        "container_name": n, "vnic_configs": [dhcp_vnic(lan)], "runtime_version": "test"})
        for n in names))
    assert all(a["status"] == "creating" for a in acks), acks
    bound_after: dict[str, float] = {}

    async def leased(name: str) -> dict[str, Any]:
        body = await wait_status(bus, name, in_state("bound"), 120)
        bound_after[name] = time.monotonic() - started
        return lease_of(body)

    nets = await asyncio.gather(*(leased(n) for n in names))
    ips = {n["ip_address"] for n in nets}
    assert len(ips) == 20
    assert lan.leases() == {n["mac_address"]: n["ip_address"] for n in nets}
    times = sorted(bound_after.values())
    print(f"20 dhcp vPLCs: create asked -> bound: first {times[0]:.1f} s, "
          f"last {times[-1]:.1f} s")
