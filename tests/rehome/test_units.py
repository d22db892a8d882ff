"""Pure pieces of re-homing: the parent table, the subnet history, the events store, the
static-IP rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.executor.net.hostnets import HostNetworks, address_on, gateway_in, subnets
from services.executor.net.netevents import KEEP, NetEvents
from services.executor.rehome.model import Target, static_misfit


def iface(name: str = "oat0", *addrs: str, gateway: str | None = None,
          active: bool = True) -> dict[str, Any]:
    rows = []
    for cidr in addrs:
        address, length = cidr.split("/")
        network = ".".join(address.split(".")[:3]) + ".0"
        rows.append({"address": address, "prefixlen": int(length),
                     "subnet": f"{network}/{length}", "network_address": network})
    return {"interface": name, "ipv4_addresses": rows, "gateway": gateway, "active": active}


def test_subnets_of_active_interfaces_only() -> None:
    assert subnets(iface("oat0", "198.51.100.2/24", "203.0.113.2/24", "198.51.100.9/24")) == [
        "198.51.100.0/24", "203.0.113.0/24"]
    assert subnets(iface("oat0", "198.51.100.2/24", active=False)) == []
    assert subnets(None) == []
    # Records of the documented shape without `active` count as active.
    record = iface("oat0", "198.51.100.2/24")
    del record["active"]
    assert subnets(record) == ["198.51.100.0/24"]


def test_host_address_and_gateway_inside_the_subnet() -> None:
    record = iface("oat0", "198.51.100.2/24", "203.0.113.2/24", gateway="203.0.113.1")
    assert address_on(record, "203.0.113.0/24") == "203.0.113.2"
    assert address_on(record, "192.0.2.0/24") is None
    assert gateway_in(record, "203.0.113.0/24") == "203.0.113.1"
    assert gateway_in(record, "198.51.100.0/24") is None  # a gateway elsewhere is not ours
    assert gateway_in({"gateway": "bogus"}, "198.51.100.0/24") is None


def test_discovery_keeps_vanished_interfaces_as_inactive(tmp_path: Path) -> None:
    nets = HostNetworks(tmp_path)
    nets.replace([iface("oat0", "198.51.100.2/24"), iface("oat1", "203.0.113.2/24")])
    nets.replace([iface("oat1", "203.0.113.2/24")])
    assert nets.current("oat0") == [] and nets.get("oat0")["active"] is False
    assert nets.current("oat1") == ["203.0.113.0/24"]
    nets.update(iface("oat0", "198.51.100.7/24"))
    assert nets.current("oat0") == ["198.51.100.0/24"]


def test_subnet_history_persists(tmp_path: Path) -> None:
    nets = HostNetworks(tmp_path)
    nets.load()
    assert nets.seen("oat0") == []
    snapshot = nets.remember("oat0", ["198.51.100.0/24"])
    assert snapshot == {"oat0": ["198.51.100.0/24"]}
    nets.write(snapshot)
    assert nets.remember("oat0", ["198.51.100.0/24"]) is None  # unchanged: no write
    assert nets.remember("oat0", []) is None  # an inactive parent keeps its history
    again = HostNetworks(tmp_path)
    again.load()
    assert again.seen("oat0") == ["198.51.100.0/24"]


def test_subnet_history_survives_a_damaged_file(tmp_path: Path) -> None:
    (tmp_path / "host_subnets.json").write_text("{not json")
    nets = HostNetworks(tmp_path)
    nets.load()
    assert nets.seen("oat0") == []
    (tmp_path / "host_subnets.json").write_text(json.dumps({"oat0": ["x", "198.51.100.0/24"],
                                                            "oat1": "nope"}))
    nets.load()
    assert nets.seen("oat0") == ["198.51.100.0/24"] and nets.seen("oat1") == []


def test_events_are_bounded_and_forgotten_with_the_device(tmp_path: Path) -> None:
    events = NetEvents(tmp_path)
    events.load()
    snapshot: dict[str, Any] = {}
    for i in range(KEEP + 3):
        snapshot = events.add("plc", {"n": i})
    events.write(snapshot)
    again = NetEvents(tmp_path)
    again.load()
    assert [e["n"] for e in again.get("plc")] == list(range(3, KEEP + 3))
    assert again.forget("plc") == {}
    assert again.forget("plc") is None


def test_static_ip_rule() -> None:
    target = Target("oat0", "203.0.113.0/24", "203.0.113.1", "203.0.113.2")
    assert target.network == "macvlan_oat0_203.0.113.0_24"
    assert Target.from_dict(target.to_dict()) == target
    assert static_misfit("203.0.113.20", target) is None
    assert "not a host address" in (static_misfit("198.51.100.20", target) or "")
    assert "not a host address" in (static_misfit("203.0.113.255", target) or "")
    assert "gateway" in (static_misfit("203.0.113.1", target) or "")
    assert "host's own address" in (static_misfit("203.0.113.2", target) or "")
    assert Target.of("oat0", iface("oat0", "203.0.113.2/24", gateway="203.0.113.1"),
                     "203.0.113.0/24") == target
