"""vNICs on a wireless parent through the real executor: a veth end the test made plays
the WiFi interface (`ORCH_WIRELESS_INTERFACES`), its peer in a test namespace the WiFi LAN
(its router, a LAN client, dnsmasq).  A stand-in vPLC gets a veth pair and proxy ARP
instead of MACVLAN: the LAN reaches it over HTTPS and sees only the host's MAC, status
names the link `wifi_<parent>_<vnic>`, a runtime restart gets a new pair, and delete
takes every piece away.

Needs root (namespaces, veth), the engine, iptables and dnsmasq.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from common.bus import RpcClient
from services.executor.net import wifi
from testkit.executor import (
    ExecutorProc,
    create_ok,
    https_ok_from,
    short_id,
    wait_ready,
    wait_status,
)
from testkit.helpers import wait_for
from testkit.movinglan import free_blocks, host
from tests.dhcp.lan import DhcpLan, sh
from tests.dhcp.wifilan import forward_rules, lan_neighbour, parent_mac, proxies, wifi_lan
from tests.rehome.fakebridge import FakeBridge

pytestmark = [pytest.mark.docker, pytest.mark.netns, pytest.mark.timeout(300)]

def default_via(dc: docker.DockerClient, name: str) -> list[str]:
    """The runtime's default routes' gateways (the WiFi router, not the internal bridge)."""
    pid = str(dc.api.inspect_container(name)["State"]["Pid"])
    rows = json.loads(sh("nsenter", "-t", pid, "-n", "ip", "-j", "route", "show", "default"))
    return [str(r.get("gateway")) for r in rows]


def runtime_routes(dc: docker.DockerClient, name: str) -> str:
    pid = str(dc.api.inspect_container(name)["State"]["Pid"])
    return sh("nsenter", "-t", pid, "-n", "ip", "route", "show")


@pytest.fixture
def wlan(lan_on: Callable[..., DhcpLan], blocks: Callable[[int], list[str]],
         docker_client: docker.DockerClient) -> Iterator[tuple[DhcpLan, str]]:
    """The WiFi LAN; afterwards, forwarding rules a failed test left for its runtimes'
    links are removed (the pairs go with the containers, the proxy entries with the
    parent)."""
    (block,) = blocks(1)
    lan = lan_on(block, server=False, ping=False)
    wifi_lan(lan, block)
    yield lan, block
    for container in docker_client.containers.list(all=True, filters={"name": "oat-w"}):
        for vnic in ("eth0", "wlan0"):
            wifi.forbid_forwarding(wifi.host_end(container.name, vnic))


async def test_static_vnic_on_wifi(
        wlan: tuple[DhcpLan, str], executor: ExecutorProc, bus: RpcClient,
        docker_client: docker.DockerClient) -> None:
    lan, block = wlan
    executor.start(ORCH_WIRELESS_INTERFACES=lan.parent)
    await wait_ready(bus)
    name, ip = f"oat-w-{short_id()}", host(block, 10)
    body = await create_ok(bus, name, [{"name": "wlan0", "parent_interface": lan.parent,
                                        "network_mode": "manual", "ip_address": ip,
                                        "subnet": block, "gateway": host(block, 1)}])
    network = f"wifi_{lan.parent}_wlan0"
    body = await wait_status(bus, name, lambda b: (b.get("networks") or {}).get(
        network, {}).get("ip_address") == ip, 20)
    assert set(body["networks"]) == {network}
    row = body["networks"][network]
    assert row["gateway"] == host(block, 1) and row["mac_address"]
    # No engine network carries the WiFi LAN: MACVLAN would not work there.
    assert not [n for n in docker_client.networks.list(names=[f"macvlan_{lan.parent}"])]

    wait_for(lambda: https_ok_from(lan.ns, ip), 30, interval=0.5,
             what="HTTPS from the WiFi LAN to the vPLC")
    # The LAN only ever sees the station's MAC (what an access point lets through).
    assert lan_neighbour(lan, ip) == parent_mac(lan)
    assert default_via(docker_client, name) == [host(block, 1)]
    link = wifi.host_end(name, "wlan0")
    assert ip in proxies(lan) and len(forward_rules(link)) == 2
    # No proxy_arp (the agent container cannot write /proc/sys): the host's end answers
    # for the gateway only, and the runtime reaches its subnet through the gateway.
    assert Path(f"/proc/sys/net/ipv4/conf/{link}/proxy_arp").read_text().strip() == "0"
    assert host(block, 1) in sh("ip", "neigh", "show", "proxy", "dev", link)
    assert f"{block} via {host(block, 1)} " in runtime_routes(docker_client, name)

    # The engine restarts the runtime: a new namespace gets a new pair.
    old_pid = docker_client.api.inspect_container(name)["State"]["Pid"]
    docker_client.containers.get(name).restart(timeout=3)

    def new_pair() -> bool:
        pid = docker_client.api.inspect_container(name)["State"]["Pid"]
        return bool(pid) and pid != old_pid and wifi.has_peer(pid, row["mac_address"])
    wait_for(new_pair, 30, interval=0.3, what="a new pair in the restarted runtime")
    wait_for(lambda: https_ok_from(lan.ns, ip), 30, interval=0.5,
             what="HTTPS from the WiFi LAN after the restart")

    ack = await bus.call("delete_device", {"device_id": name})
    assert ack["status"] == "deleting", ack
    await wait_status(bus, name, lambda b: b.get("status") == "not_found", 30)
    assert not wifi.exists(link)
    assert ip not in proxies(lan)
    assert forward_rules(link) == []
    assert f"{ip} " not in sh("ip", "route", "show", "table", "main")


# The executor as the agent container runs it: /proc/sys read-only (the engine's default
# for a container; here a private mount namespace), and no iptables program on its PATH.
READ_ONLY_PROC_SYS = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                      "mount --bind /proc/sys /proc/sys && "
                      "mount -o remount,bind,ro /proc/sys && exec \"$@\"", "sh"]
NO_IPTABLES_PATH = "/usr/local/bin:/usr/bin:/bin"


async def test_static_vnic_as_in_the_agent_container(
        wlan: tuple[DhcpLan, str], executor: ExecutorProc, bus: RpcClient,
        bridge: FakeBridge, docker_client: docker.DockerClient) -> None:
    """No sysctl is needed (a write to the read-only /proc/sys would fail the link); the
    missing iptables program is a status error, not a silent gap; with forwarding through
    the link accepted on the host (as an administrator would), the LAN reaches the vPLC.
    The parent has no gateway here: the runtime reaches its subnet through the host's own
    address on the parent."""
    lan, block = wlan
    bridge.table[lan.parent]["gateway"] = None
    assert not any(Path(d, "iptables").exists() for d in NO_IPTABLES_PATH.split(":"))
    executor.wrapper = READ_ONLY_PROC_SYS
    executor.start(ORCH_WIRELESS_INTERFACES=lan.parent, PATH=NO_IPTABLES_PATH)
    await wait_ready(bus)
    name, ip = f"oat-w-{short_id()}", host(block, 11)
    await create_ok(bus, name, [{"name": "wlan0", "parent_interface": lan.parent,
                                 "network_mode": "manual", "ip_address": ip}])
    network = f"wifi_{lan.parent}_wlan0"
    body = await wait_status(bus, name, lambda b: (b.get("networks") or {}).get(
        network, {}).get("ip_address") == ip, 20)
    assert "no iptables program" in body["networks"][network].get("error", "")
    assert body["networks"][network]["gateway"] is None
    link = wifi.host_end(name, "wlan0")
    assert f"{block} via {host(block, 2)} " in runtime_routes(docker_client, name)
    assert forward_rules(link) == []
    for rule in wifi._rules(link):  # the host's administrator accepts the link
        sh("iptables", "-w", "5", "-I", wifi.RULE_CHAIN, "1", *rule)
    wait_for(lambda: https_ok_from(lan.ns, ip), 30, interval=0.5,
             what="HTTPS from the WiFi LAN to the vPLC of a read-only /proc/sys executor")
    assert lan_neighbour(lan, ip) == parent_mac(lan)
    assert Path(f"/proc/sys/net/ipv4/conf/{link}/proxy_arp").read_text().strip() == "0"


def bound_on(network: str) -> Callable[[dict[str, Any]], bool]:
    def check(body: dict[str, Any]) -> bool:
        row = (body.get("networks") or {}).get(network) or {}
        return (row.get("dhcp") or {}).get("state") == "bound" and bool(row.get("ip_address"))
    return check


async def test_dhcp_vnics_on_wifi(
        wlan: tuple[DhcpLan, str], executor: ExecutorProc, bus: RpcClient,
        docker_client: docker.DockerClient) -> None:
    """Two dhcp vNICs behind one WiFi station: the LAN's dnsmasq sees one hardware path
    but two clients (client id and chaddr from each vNIC's MAC, broadcast replies), and
    leases each its own address; the LAN reaches both.  Delete releases the lease; a
    runtime removed by hand loses its host side too."""
    lan, block = wlan
    lan.pool = (host(block, 16), host(block, 24))
    lan.start_server()
    executor.start(ORCH_WIRELESS_INTERFACES=lan.parent)
    await wait_ready(bus)
    names = [f"oat-wd-{short_id()}" for _ in range(2)]
    network = f"wifi_{lan.parent}_eth0"
    for name in names:
        await create_ok(bus, name, [{"name": "eth0", "parent_interface": lan.parent,
                                     "network_mode": "dhcp"}])
    rows = []
    for name in names:
        body = await wait_status(bus, name, bound_on(network), 40)
        assert set(body["networks"]) == {network}
        rows.append(body["networks"][network])
    ips = {r["ip_address"] for r in rows}
    assert len(ips) == 2 and all(r["gateway"] == host(block, 1) for r in rows)
    assert lan.leases() == {r["mac_address"]: r["ip_address"] for r in rows}
    for ip in ips:
        wait_for(lambda ip=ip: https_ok_from(lan.ns, ip), 30, interval=0.5,
                 what=f"HTTPS from the WiFi LAN to the leased {ip}")
        assert lan_neighbour(lan, ip) == parent_mac(lan)
    deleted, by_hand = names
    ack = await bus.call("delete_device", {"device_id": deleted})
    assert ack["status"] == "deleting", ack
    await wait_status(bus, deleted, lambda b: b.get("status") == "not_found", 30)
    assert not wifi.exists(wifi.host_end(deleted, "eth0"))
    kept = {rows[1]["mac_address"]: rows[1]["ip_address"]}
    wait_for(lambda: lan.leases() == kept, 10, "dnsmasq's lease file without the release")
    assert rows[0]["ip_address"] not in proxies(lan)
    assert forward_rules(wifi.host_end(deleted, "eth0")) == []

    docker_client.containers.get(by_hand).remove(force=True)
    link = wifi.host_end(by_hand, "eth0")
    wait_for(lambda: not forward_rules(link) and rows[1]["ip_address"] not in proxies(lan),
             20, interval=0.3, what="the host side of a runtime removed by hand")


def move_wifi_lan(lan: DhcpLan, old: str, new: str) -> None:
    """The WiFi LAN moves to the block `new`: its router, client and dnsmasq (a fresh lease
    file) renumbered, the station's own address with them."""
    lan.stop_server()
    lan.leasefile.unlink(missing_ok=True)
    sh("ip", "addr", "del", f"{host(old, 2)}/27", "dev", lan.parent)
    wifi_lan(lan, new)
    lan.pool = (host(new, 16), host(new, 24))
    lan.start_server()


def in_block(block: str) -> Callable[[str | None], bool]:
    return lambda ip: bool(ip) and ipaddress.IPv4Address(str(ip)) in \
        ipaddress.IPv4Network(block)


async def test_wifi_vnics_follow_their_lan(
        wlan: tuple[DhcpLan, str], executor: ExecutorProc, bus: RpcClient,
        bridge: FakeBridge, docker_client: docker.DockerClient) -> None:
    """The station joins another subnet: the dhcp vNIC gets a lease from the new LAN's
    server at once, the static one (its address no longer fits) the lowest free address
    of the new subnet, the host's routes and proxy entries follow, status shows the new
    addresses, and the new LAN reaches both vPLCs."""
    lan, block = wlan
    (new,) = free_blocks(docker_client, 1, {block})
    lan.pool = (host(block, 16), host(block, 24))
    lan.start_server()
    executor.start(ORCH_WIRELESS_INTERFACES=lan.parent)
    await wait_ready(bus)
    dyn, static = f"oat-wd-{short_id()}", f"oat-w-{short_id()}"
    net_d, net_s = f"wifi_{lan.parent}_eth0", f"wifi_{lan.parent}_wlan0"
    await create_ok(bus, dyn, [{"name": "eth0", "parent_interface": lan.parent,
                                "network_mode": "dhcp"}])
    old_static = host(block, 10)
    await create_ok(bus, static, [{"name": "wlan0", "parent_interface": lan.parent,
                                   "network_mode": "manual", "ip_address": old_static}])
    old_lease = (await wait_status(bus, dyn, bound_on(net_d), 40))["networks"][net_d][
        "ip_address"]
    await wait_status(bus, static, lambda b: (b.get("networks") or {}).get(net_s, {}).get(
        "ip_address") == old_static, 20)
    for ip in (old_lease, old_static):
        wait_for(lambda ip=ip: https_ok_from(lan.ns, ip), 30, interval=0.5,
                 what=f"HTTPS from the WiFi LAN to {ip} before the move")

    move_wifi_lan(lan, block, new)
    bridge.change(lan.host_interface(new))
    fits = in_block(new)
    body = await wait_status(bus, dyn, lambda b: bound_on(net_d)(b) and fits(
        b["networks"][net_d]["ip_address"]), 40)
    row = body["networks"][net_d]
    assert row["gateway"] == host(new, 1)
    assert lan.leases() == {row["mac_address"]: row["ip_address"]}
    body = await wait_status(bus, static, lambda b: (b.get("networks") or {}).get(
        net_s, {}).get("ip_address") == host(new, 3), 30)
    assert body["networks"][net_s]["gateway"] == host(new, 1)
    for ip in (row["ip_address"], host(new, 3)):
        wait_for(lambda ip=ip: https_ok_from(lan.ns, ip), 30, interval=0.5,
                 what=f"HTTPS from the new WiFi LAN to {ip}")
        assert lan_neighbour(lan, ip) == parent_mac(lan)
    assert default_via(docker_client, static) == [host(new, 1)]
    for device in (dyn, static):  # the old gateway's proxy entry went with the move
        end = wifi.host_end(device, "eth0" if device == dyn else "wlan0")
        assert sh("ip", "neigh", "show", "proxy", "dev", end).split() == [host(new, 1), "proxy"]
        assert f"{new} via {host(new, 1)} " in runtime_routes(docker_client, device)
    listed = proxies(lan)
    assert old_lease not in listed and old_static not in listed
    routes = sh("ip", "route", "show", "table", "main")
    assert f"{old_lease} " not in routes and f"{old_static} " not in routes
