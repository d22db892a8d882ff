"""What `device_status` shows of a dhcp vNIC (`DhcpWiring.decorate`), with a stand-in
keeper: the lease in place of the engine's address, the `dhcp` block, static vNICs and
unmanaged vNICs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from services.executor.dhcp.wiring import DhcpWiring, fits, is_dhcp

LEASE = {"state": "bound", "ip_address": "198.51.100.120", "gateway": "198.51.100.1",
         "server": "198.51.100.1", "lease_start": "2026-11-29T15:22:44+00:00",
         "lease_expiry": "2026-11-29T15:24:44+00:00", "dns": ["198.51.100.53"],
         "renew_at": "x", "prefixlen": 24}


class Keeper:
    def __init__(self, found: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.found = found

    def status(self, device: str, vnic: str) -> dict[str, Any] | None:
        return self.found.get((device, vnic))


def networks() -> dict[str, dict[str, Any]]:
    return {"mv_a": {"ip_address": "198.51.100.3", "mac_address": "02:00:00:00:00:01",
                     "gateway": "198.51.100.1"},
            "mv_b": {"ip_address": "203.0.113.3", "mac_address": "02:00:00:00:00:02",
                     "gateway": "203.0.113.1"}}


VNICS = [{"name": "eth0", "network_mode": "dhcp", "network": "mv_a"},
         {"name": "eth1", "network_mode": "manual", "network": "mv_b"}]


def wiring(tmp_path: Path, found: dict[tuple[str, str], dict[str, Any]]) -> DhcpWiring:
    w = DhcpWiring(tmp_path, 30.0)
    w.keeper = Keeper(found)  # type: ignore[assignment]
    return w


def test_lease_replaces_the_engine_address(tmp_path: Path) -> None:
    nets = networks()
    wiring(tmp_path, {("plc", "eth0"): LEASE}).decorate("plc", VNICS, nets)
    assert nets["mv_a"] == {
        "ip_address": "198.51.100.120", "mac_address": "02:00:00:00:00:01",
        "gateway": "198.51.100.1",
        "dhcp": {"state": "bound", "server": "198.51.100.1",
                 "lease_start": LEASE["lease_start"], "lease_expiry": LEASE["lease_expiry"],
                 "dns": ["198.51.100.53"]}}
    assert nets["mv_b"] == networks()["mv_b"]  # static: unchanged


def test_no_lease_shows_no_address(tmp_path: Path) -> None:
    nets = networks()
    waiting = dict(LEASE, state="no_offer", ip_address=None, gateway=None, server=None)
    wiring(tmp_path, {("plc", "eth0"): waiting}).decorate("plc", VNICS, nets)
    assert nets["mv_a"]["ip_address"] is None and nets["mv_a"]["gateway"] is None
    assert nets["mv_a"]["dhcp"]["state"] == "no_offer"


def test_unmanaged_vnic_shows_no_address_and_the_attach_error(tmp_path: Path) -> None:
    nets = networks()
    w = wiring(tmp_path, {})
    w.decorate("plc", VNICS, nets)
    assert nets["mv_a"]["ip_address"] is None and "dhcp" not in nets["mv_a"]
    w.errors[("plc", "eth0")] = "plc/eth0: no interface with MAC 02:00:00:00:00:01"
    w.decorate("plc", VNICS, nets)
    assert nets["mv_a"]["dhcp"] == {"state": None, "error": w.errors[("plc", "eth0")]}


def test_mode_names() -> None:
    assert is_dhcp({"network_mode": "dhcp"}) and is_dhcp({"network_mode": "DHCP"})
    assert not is_dhcp({"network_mode": "manual"}) and not is_dhcp({})


def test_a_lease_is_fixed_only_inside_the_networks_subnet() -> None:
    vnic = {"name": "eth0", "parent_subnet": "198.51.100.0/24"}
    assert fits("198.51.100.120", vnic)
    assert not fits("203.0.113.7", vnic)  # the engine would refuse to start it
    assert fits("203.0.113.7", {"name": "eth0"})  # no subnet known: nothing to check


def test_an_unconnected_vnic_is_listed_without_an_address(tmp_path: Path) -> None:
    """Not connected yet (no lease at create): listed under its network with its MAC; a
    lease held through our own link is not shown as the runtime's."""
    nets = {"mv_b": networks()["mv_b"]}
    vnics = [dict(VNICS[0], mac_address="02:00:00:00:00:0A"), VNICS[1]]
    w = wiring(tmp_path, {("plc", "eth0"): LEASE})
    w.pending[("plc", "eth0")] = object()  # type: ignore[assignment]
    w.decorate("plc", vnics, nets)
    assert nets["mv_a"]["mac_address"] == "02:00:00:00:00:0a"
    assert nets["mv_a"]["ip_address"] is None and nets["mv_a"]["gateway"] is None
    assert nets["mv_a"]["dhcp"]["state"] == "requesting"
    assert nets["mv_b"] == networks()["mv_b"]


def test_a_pending_vnic_is_not_detached_with_its_runtime(tmp_path: Path) -> None:
    """Stopping the runtime leaves a vNIC leasing through its own link alone."""
    calls: list[tuple[str, str, str]] = []

    class Recording(Keeper):
        def known(self) -> list[tuple[str, str]]:
            return [("plc", "eth0"), ("plc", "eth1")]

        def managed(self) -> list[tuple[str, str]]:
            return []

        def detach(self, device: str, vnic: str) -> bool:
            calls.append(("detach", device, vnic))
            return True

    w = DhcpWiring(tmp_path, 30.0)
    w.keeper = Recording({})  # type: ignore[assignment]
    w.pending[("plc", "eth0")] = object()  # type: ignore[assignment]
    asyncio.run(w.drop("plc", "detach"))
    assert calls == [("detach", "plc", "eth1")]
