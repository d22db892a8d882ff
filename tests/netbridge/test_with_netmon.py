"""netbridge as a real process on the bus, fed by a real netmon in a test namespace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.netbridge.bridge import BridgeProcess, Bus
from tests.netmon.nsutil import NetmonProcess, ip, link_info

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

OAT0_ADDR = {"address": "192.0.2.10", "prefixlen": 24, "subnet": "192.0.2.0/24",
             "network_address": "192.0.2.0"}


def fresh_with(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: not r["stale"] and any(i["interface"] == name for i in r["interfaces"])


async def bridge_on_bus(bus: Bus, bridge_factory: Callable[[], BridgeProcess]) -> BridgeProcess:
    """Start the bridge and return once a beat proves the subscriber is connected, so no
    later event can be lost to the subscription handshake."""
    bridge = bridge_factory()
    await bus.beat(lambda c: True, 15)
    return bridge


async def test_without_netmon_reports_error_and_empty_stale_cache(
        bus: Bus, bridge_factory: Callable[[], BridgeProcess]) -> None:
    await bridge_on_bus(bus, bridge_factory)
    reply = await bus.call("host_interfaces", {"include_virtual": False, "detailed": False})
    assert reply["status"] == "error"
    assert reply["error"] == ("Network interface cache is empty. The netmon sidecar may "
                              "not be running or has not yet discovered interfaces.")
    assert reply["stale"] is True and "stale_since" not in reply
    assert await bus.call("interfaces") == {"interfaces": [], "stale": True, "connected": False}


def with_ipv4(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of interfaces with IPv4; the namespace's up ends without an address
    (oat0p) come as `dedicated_only` rows (tests/netbridge/test_dedicated_rows.py)."""
    return [r for r in reply["interfaces"] if not r.get("dedicated_only")]


async def test_interfaces_and_host_interfaces(
        bus: Bus, bridge_factory: Callable[[], BridgeProcess], lan: str,
        netmon_factory: Callable[..., NetmonProcess]) -> None:
    await bridge_on_bus(bus, bridge_factory)
    netmon_factory(lan)
    discovery = await bus.next_event("net.discovery", lambda b: True, 15)
    assert [i["interface"] for i in discovery["interfaces"]] == ["oat0"]
    assert discovery["timestamp"]

    listing = await bus.wait_call("interfaces", fresh_with("oat0"), 10)
    assert listing["connected"] is True
    (oat0,) = listing["interfaces"]
    mac = link_info(lan, "oat0")["address"]
    assert oat0["ipv4_addresses"] == [OAT0_ADDR]
    assert oat0["gateway"] == "192.0.2.1"
    assert oat0["mac_address"] == mac
    assert oat0["operstate"] == "UP"

    reply = await bus.call("host_interfaces", {"include_virtual": False, "detailed": False})
    assert (reply["status"], reply["stale"]) == ("success", False)
    assert with_ipv4(reply) == [{
        "name": "oat0", "ip_address": "192.0.2.10", "ipv4_addresses": ["192.0.2.10"],
        "mac_address": mac}]

    detailed = await bus.call("host_interfaces", {})  # detailed by default
    (row,) = with_ipv4(detailed)
    assert row["subnet"] == "192.0.2.0/24" and row["gateway"] == "192.0.2.1"
    assert row["addresses"] == [OAT0_ADDR]
    assert row["index"] == link_info(lan, "oat0")["ifindex"]
    assert row["operstate"] == "UP" and row["timestamp"]


async def test_address_change_is_published(
        bus: Bus, bridge_factory: Callable[[], BridgeProcess], lan: str,
        netmon_factory: Callable[..., NetmonProcess]) -> None:
    await bridge_on_bus(bus, bridge_factory)
    netmon_factory(lan)
    await bus.next_event("net.discovery", lambda b: True, 15)

    ip(lan, "addr", "add", "198.51.100.20/24", "dev", "oat0")
    change = await bus.next_event(
        "net.change", lambda b: len(b["interface"]["ipv4_addresses"]) == 2, 10)
    assert change["interface"]["interface"] == "oat0"
    assert [a["subnet"] for a in change["interface"]["ipv4_addresses"]] == [
        "192.0.2.0/24", "198.51.100.0/24"]
    reply = await bus.wait_call(
        "host_interfaces", lambda r: len(r["interfaces"][0]["ipv4_addresses"]) == 2, 5)
    assert reply["interfaces"][0]["ipv4_addresses"] == ["192.0.2.10", "198.51.100.20"]

    # The interface loses its last address: announced, then gone from the cache.
    ip(lan, "addr", "flush", "dev", "oat0")
    gone = await bus.next_event("net.change", lambda b: b["interface"]["active"] is False, 10)
    assert gone["interface"]["ipv4_addresses"] == []
    assert (await bus.call("interfaces"))["interfaces"] == []
    # Only lo is left with IPv4 (virtual): success with no such row, as the original
    # answers; oat0, up without an address now, joins oat0p as `dedicated_only`.
    left = await bus.call("host_interfaces")
    assert (left["status"], with_ipv4(left)) == ("success", [])
    assert [r["name"] for r in left["interfaces"]] == ["oat0", "oat0p"]
    every = await bus.call("host_interfaces", {"include_virtual": True})
    assert [r["name"] for r in with_ipv4(every)] == ["lo"]


async def test_netmon_killed_then_restarted(
        bus: Bus, bridge_factory: Callable[[], BridgeProcess], lan: str,
        netmon_factory: Callable[..., NetmonProcess]) -> None:
    bridge = await bridge_on_bus(bus, bridge_factory)
    netmon = netmon_factory(lan)
    await bus.next_event("net.discovery", lambda b: True, 15)
    await bus.wait_call("interfaces", fresh_with("oat0"), 10)

    netmon.kill()
    listing = await bus.wait_call("interfaces", lambda r: r["stale"], 10)
    assert listing["connected"] is False
    assert [i["interface"] for i in listing["interfaces"]] == ["oat0"], "last contents kept"
    stale = await bus.wait_call("host_interfaces", lambda r: "stale_since" in r, 5)
    assert stale["status"] == "success" and stale["stale"] is True
    assert stale["interfaces"][0]["ip_address"] == "192.0.2.10"
    await bus.beat(lambda c: c.get("netmon_disconnects", 0) >= 1, 5)

    netmon_factory(lan)
    rediscovery = await bus.next_event("net.discovery", lambda b: True, 15)
    assert [i["interface"] for i in rediscovery["interfaces"]] == ["oat0"]
    listing = await bus.wait_call("interfaces", fresh_with("oat0"), 10)
    assert listing["connected"] is True
    reply = await bus.call("host_interfaces")
    assert reply["stale"] is False and "stale_since" not in reply
    counters = await bus.beat(lambda c: c.get("netmon_reconnects", 0) >= 1, 5)
    assert counters["netmon_connects"] == 2
    assert counters["net_discovery_published"] == 2

    log = bridge.log()
    assert log.count("net.state stale") == 1
    assert log.count("net.state fresh") == 2
    assert "Traceback" not in log


async def test_include_virtual_lists_what_netmon_flags_and_nothing_is_published(
        bus: Bus, bridge_factory: Callable[[], BridgeProcess], lan: str,
        netmon_factory: Callable[..., NetmonProcess]) -> None:
    # A VPN-like name on a veth end the test creates in its own namespace.
    ip(lan, "link", "add", "WGoat1", "type", "veth", "peer", "name", "oatwg1")
    ip(lan, "link", "set", "oatwg1", "up")
    ip(lan, "link", "set", "WGoat1", "up")
    ip(lan, "addr", "add", "198.51.100.7/24", "dev", "WGoat1")
    await bridge_on_bus(bus, bridge_factory)
    netmon_factory(lan)
    discovery = await bus.next_event("net.discovery", lambda b: True, 15)
    assert [i["interface"] for i in discovery["interfaces"]] == ["oat0"]
    listing = await bus.wait_call("interfaces", fresh_with("oat0"), 10)
    assert [i["interface"] for i in listing["interfaces"]] == ["oat0"]
    plain = await bus.call("host_interfaces", {})
    assert [r["name"] for r in with_ipv4(plain)] == ["oat0"]
    every = await bus.call("host_interfaces", {"include_virtual": True})
    names = [r["name"] for r in every["interfaces"]]
    assert "WGoat1" in names and "oat0" in names and names == sorted(names)
    row = next(r for r in every["interfaces"] if r["name"] == "WGoat1")
    assert row["ip_address"] == "198.51.100.7" and row["subnet"] == "198.51.100.0/24"
    # A change on the virtual interface is cached, not published.
    ip(lan, "addr", "add", "198.51.100.8/24", "dev", "WGoat1")
    ip(lan, "addr", "add", "203.0.113.20/24", "dev", "oat0")
    change = await bus.next_event("net.change", lambda b: True, 10)
    assert change["interface"]["interface"] == "oat0"
