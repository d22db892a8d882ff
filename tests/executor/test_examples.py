"""The product README's examples on a veth-parent test LAN.

The LAN is a veth pair: the host end is the MACVLAN parent, the peer end sits in a test
namespace with an address in the same documentation subnet (the "LAN host").  Each test
checks that the runtime runs, carries the requested MAC and IP, and that the LAN host
reaches the stand-in's HTTPS port on the vPLC's MACVLAN address — with the MAC the LAN
sees in its neighbour table.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import docker
import pytest

from common.bus import RpcClient
from testkit.executor import (
    STANDIN_TAG,
    ExecutorProc,
    FakeNetbridge,
    Lan,
    create_ok,
    settled,
    short_id,
    wait_status,
)
from testkit.helpers import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.netns]


def lan_mac_of(lan: Lan, ip: str) -> str | None:
    """The MAC the LAN host has learnt for `ip`."""
    out = subprocess.run(["ip", "-n", lan.ns, "-j", "neigh", "show", ip], capture_output=True,
                         text=True, check=True, timeout=10).stdout
    for entry in json.loads(out or "[]"):
        if entry.get("lladdr"):
            return str(entry["lladdr"])
    return None


def check_reachable(lan: Lan, ip: str, mac: str) -> None:
    wait_for(lambda: lan.reach_https(ip), 30, f"LAN host reaching https://{ip}:8443")
    assert lan_mac_of(lan, ip) == mac


async def test_dhcp_mode_detects_subnet_from_interface_cache(
        bus: RpcClient, netbridge: FakeNetbridge, executor: ExecutorProc,
        lans: Callable[[], Lan]) -> None:
    lan = lans()
    netbridge.items = [lan.iface()]
    name = f"oat-plc-{short_id()}"
    body = await create_ok(bus, name, [
        {"name": "vnic0", "parent_interface": lan.parent, "network_mode": "dhcp"}])
    assert netbridge.calls >= 1
    net = body["networks"][lan.network_name()]
    assert net["gateway"] == lan.gateway
    mac = net["mac_address"]
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01, mac  # generated: local, unicast
    stored = json.loads((executor.state_dir / "runtime_vnics.json").read_text())
    assert stored[name][0]["mac_address"] == mac
    assert stored[name][0]["parent_subnet"] == lan.subnet
    check_reachable(lan, net["ip_address"], mac)


async def test_dhcp_mode_without_netbridge_fails_clearly(
        bus: RpcClient, executor: ExecutorProc, lans: Callable[[], Lan],
        docker_client: docker.DockerClient) -> None:
    lan = lans()
    name = f"oat-plc-{short_id()}"
    ack = await bus.call("create_runtime", {"container_name": name, "runtime_version": STANDIN_TAG,
                                            "vnic_configs": [{"name": "vnic0",
                                                              "parent_interface": lan.parent,
                                                              "network_mode": "dhcp"}]})
    assert ack["status"] == "creating"
    body = await wait_status(bus, name, settled)
    assert body["status"] == "error" and body["step"] == "validating_config"
    assert f"Cannot detect the subnet of {lan.parent}" in body["error"]
    assert "netbridge did not answer" in body["error"]
    assert docker_client.containers.list(all=True, filters={"name": name}) == []


async def test_manual_ip_with_requested_mac(bus: RpcClient, lans: Callable[[], Lan]) -> None:
    lan = lans()
    name = f"oat-plc-{short_id()}"
    mac = "02:5e:00:12:34:56"
    body = await create_ok(bus, name, [
        {"name": "vnic0", "parent_interface": lan.parent, "network_mode": "static",
         "ip": lan.addr(30), "subnet": "255.255.255.192", "gateway": lan.gateway,
         "mac": mac, "dns": ["192.0.2.53"]}])
    net = body["networks"][lan.network_name()]
    assert net == {"ip_address": lan.addr(30), "mac_address": mac, "gateway": lan.gateway}
    check_reachable(lan, lan.addr(30), mac)


async def test_multiple_vnics_on_two_lans(bus: RpcClient, executor: ExecutorProc,
                                          lans: Callable[[], Lan],
                                          docker_client: docker.DockerClient) -> None:
    lan_a, lan_b = lans(), lans()
    name = f"oat-plc-{short_id()}"
    macs = ["02:5e:00:00:0a:01", "02:5e:00:00:0b:01"]
    body = await create_ok(bus, name, [
        {"name": "plant", "parent_interface": lan_a.parent, "network_mode": "manual",
         "ip_address": lan_a.addr(40), "parent_subnet": lan_a.subnet,
         "parent_gateway": lan_a.gateway, "mac_address": macs[0]},
        {"name": "field", "parent_interface": lan_b.parent, "network_mode": "manual",
         "ip_address": lan_b.addr(41), "subnet": lan_b.subnet, "gateway": lan_b.gateway,
         "mac_address": macs[1]},
    ])
    assert body["networks"][lan_a.network_name()]["mac_address"] == macs[0]
    assert body["networks"][lan_b.network_name()]["mac_address"] == macs[1]
    check_reachable(lan_a, lan_a.addr(40), macs[0])
    check_reachable(lan_b, lan_b.addr(41), macs[1])
    # A restart re-creates the interfaces; the requested MACs come back.
    restarted = await bus.call("restart_device", {"device_id": name})
    assert restarted["success"] is True
    subprocess.run(["ip", "-n", lan_b.ns, "neigh", "flush", "all"], check=True, timeout=10)
    check_reachable(lan_b, lan_b.addr(41), macs[1])
    body = await bus.call("device_status", {"device_id": name})
    assert body["networks"][lan_b.network_name()]["mac_address"] == macs[1]
    # Restarted behind the executor's back (a user, the restart policy): the live view sees
    # the start event and sets the MAC again.
    docker_client.containers.get(name).restart(timeout=3)
    subprocess.run(["ip", "-n", lan_b.ns, "neigh", "flush", "all"], check=True, timeout=10)
    check_reachable(lan_b, lan_b.addr(41), macs[1])
