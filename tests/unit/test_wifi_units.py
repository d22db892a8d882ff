"""Wireless vNICs, the pure parts: detection (sysfs and the setting), names, marking,
re-homing's plan."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from common.config import Config
from services.executor.net import wifi
from services.executor.rehome import wifimove
from services.executor.rehome.model import Target
from services.executor.runtime.wifilinks import WifiLinks, link_of, static_ip


def test_detection_by_sysfs_and_by_setting(tmp_path: Path) -> None:
    for name, marker in (("wlp2s0", "phy80211"), ("wlan0", "wireless"), ("eth0", None)):
        (tmp_path / name).mkdir()
        if marker:
            (tmp_path / name / marker).mkdir()
    assert wifi.is_wireless("wlp2s0", sysfs=tmp_path)
    assert wifi.is_wireless("wlan0", sysfs=tmp_path)
    assert not wifi.is_wireless("eth0", sysfs=tmp_path)
    assert not wifi.is_wireless("missing", sysfs=tmp_path)
    assert wifi.is_wireless("eth0", wifi.forced_list("oat1, eth0"), sysfs=tmp_path)


def test_setting_from_the_environment() -> None:
    config, _ = Config.load([], {"ORCH_WIRELESS_INTERFACES": "oat1,oat2 oat3"})
    assert wifi.forced_list(config.wireless_interfaces) == {"oat1", "oat2", "oat3"}
    assert wifi.forced_list(Config().wireless_interfaces) == frozenset()


def test_names() -> None:
    assert wifi.network_name("wlan0", "eth1") == "wifi_wlan0_eth1"
    end = wifi.host_end("plc-1", "eth1")
    assert end == wifi.host_end("plc-1", "eth1") != wifi.host_end("plc-1", "eth2")
    assert end.startswith("wf") and len(end + "c") <= 15  # IFNAMSIZ - 1
    assert not end.startswith("veth")


def test_mark_and_link() -> None:
    links = WifiLinks(frozenset({"oatw0"}))
    vnics = [{"name": "eth1", "parent_interface": "oatw0", "parent_subnet": "192.0.2.0/27",
              "parent_gateway": "192.0.2.1", "ip_address": "192.0.2.10",
              "mac_address": "02:AA:00:00:00:01", "network_mode": "manual",
              "network": "macvlan_oatw0_192.0.2.0_27"},
             {"name": "eth2", "parent_interface": "oat-not-wireless-0",
              "parent_subnet": "198.51.100.0/24", "network": "macvlan_x"}]
    links.mark(vnics)
    assert vnics[0]["wifi"] is True and vnics[0]["network"] == "wifi_oatw0_eth1"
    assert "wifi" not in vnics[1] and vnics[1]["network"] == "macvlan_x"
    link = link_of("plc", vnics[0])
    assert (link.ip, link.prefixlen, link.gateway, link.mac) == \
        ("192.0.2.10", 27, "192.0.2.1", "02:aa:00:00:00:01")
    assert link_of("plc", {**vnics[0], "network_mode": "dhcp"}).ip is None


def test_status_rows() -> None:
    links = WifiLinks(frozenset())
    vnic = {"name": "eth1", "parent_interface": "wl0", "parent_subnet": "192.0.2.0/27",
            "parent_gateway": "192.0.2.1", "ip_address": "192.0.2.10", "wifi": True,
            "mac_address": "02:aa:00:00:00:01", "network": "wifi_wl0_eth1"}
    networks: dict[str, dict[str, object]] = {}
    links.decorate("plc", 42, [vnic], networks)
    # Not placed for this process yet: no address shown.
    assert networks == {"wifi_wl0_eth1": {"ip_address": None, "gateway": "192.0.2.1",
                                          "mac_address": "02:aa:00:00:00:01"}}
    links.placed[("plc", "eth1")] = 42
    links.decorate("plc", 42, [vnic], networks)
    assert networks["wifi_wl0_eth1"]["ip_address"] == "192.0.2.10"
    links.decorate("plc", 43, [vnic], networks)  # restarted, not placed again yet
    assert networks["wifi_wl0_eth1"]["ip_address"] is None


class _Store:
    def __init__(self, table: dict[str, list[dict[str, Any]]]) -> None:
        self.table = table

    def devices(self) -> list[str]:
        return sorted(self.table)

    def get(self, device: str) -> list[dict[str, Any]]:
        return self.table[device]


def _ctx(table: dict[str, list[dict[str, Any]]], misfit: str = "assign") -> Any:
    return SimpleNamespace(vnics=_Store(table),
                           config=SimpleNamespace(rehome_static_misfit=misfit))


TARGET = Target("oatw0", "198.51.100.32/27", "198.51.100.33", "198.51.100.34")


def test_rehome_plan_static_fit_assign_detach() -> None:
    fits = {"name": "wlan0", "network_mode": "manual", "ip_address": "198.51.100.40",
            "assigned_ip": "198.51.100.35"}
    ctx = _ctx({"a": [fits]})
    assert wifimove.plan(ctx, "a", fits, TARGET) == ("rehomed", None)
    assert "assigned_ip" not in fits and static_ip(fits) == "198.51.100.40"

    misfit = {"name": "wlan0", "network_mode": "manual", "ip_address": "192.0.2.10"}
    other = {"name": "eth0", "network_mode": "manual", "ip_address": "198.51.100.35"}
    ctx = _ctx({"a": [misfit], "b": [other]})
    outcome, note = wifimove.plan(ctx, "a", misfit, TARGET)
    # .33 the gateway, .34 the host, .35 another vNIC's: .36 is the lowest free one.
    assert outcome == "rehomed_new_ip" and "198.51.100.36" in str(note)
    assert static_ip(misfit) == "198.51.100.36" and misfit["ip_address"] == "192.0.2.10"

    ctx = _ctx({"a": [misfit]}, misfit="detach")
    outcome, note = wifimove.plan(ctx, "a", misfit, TARGET)
    assert outcome == "detached" and misfit["detached"] == note and static_ip(misfit) is None

    dhcp = {"name": "eth0", "network_mode": "dhcp", "ip_address": None}
    assert wifimove.plan(_ctx({"a": [dhcp]}), "a", dhcp, TARGET) == ("rehomed", None)


def test_rehome_settle_follows_the_parent() -> None:
    vnic = {"name": "wlan0", "parent_subnet": "192.0.2.0/27", "parent_gateway": "192.0.2.1",
            "subnet": "192.0.2.0/27", "gateway": "192.0.2.1", "parent_address": "192.0.2.2"}
    wifimove.settle(vnic, TARGET)
    assert (vnic["subnet"], vnic["gateway"]) == ("198.51.100.32/27", "198.51.100.33")
    assert vnic["parent_subnet"] == "198.51.100.32/27"
    assert vnic["parent_address"] == "198.51.100.34"
    link = link_of("a", {**vnic, "mac_address": "02:00:00:00:00:01",
                         "parent_interface": "oatw0", "ip_address": "198.51.100.40"})
    assert (link.prefixlen, link.gateway) == (27, "198.51.100.33")


def test_rehome_followers() -> None:
    moved = {"name": "wlan0", "wifi": True, "parent_interface": "oatw0",
             "parent_subnet": "192.0.2.0/27", "parent_address": "192.0.2.2"}
    unknown = {"name": "wlan1", "wifi": True, "parent_interface": "oatw0",
               "parent_subnet": "203.0.113.0/27"}
    staying = {"name": "wlan2", "wifi": True, "parent_interface": "oatw0",
               "parent_subnet": "198.51.100.32/27"}
    wired = {"name": "eth0", "parent_interface": "oatw0", "parent_subnet": "192.0.2.0/27",
             "parent_address": "192.0.2.2"}
    ctx = _ctx({"a": [moved], "b": [unknown], "c": [staying], "d": [wired]})
    ctx.hostnets = SimpleNamespace(seen=lambda parent: [])
    assert wifimove.followers(ctx, "oatw0", ["198.51.100.32/27"]) == [("a", "wlan0")]
    ctx.hostnets = SimpleNamespace(seen=lambda parent: ["203.0.113.0/27"])
    assert wifimove.followers(ctx, "oatw0", ["198.51.100.32/27"]) == [("a", "wlan0"),
                                                                  ("b", "wlan1")]


def _program(directory: Path, name: str, sees_chain: bool) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\nexit {0 if sees_chain else 1}\n")
    path.chmod(0o755)


def test_the_iptables_backend_that_sees_the_engines_chain(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert wifi._binary() is None
    with pytest.raises(wifi.ForwardingError, match="no iptables program"):
        wifi.allow_forwarding("wf0123456789")
    wifi.forbid_forwarding("wf0123456789")  # nothing to remove: no error
    _program(tmp_path, "iptables", sees_chain=False)
    assert wifi._binary() == str(tmp_path / "iptables")  # no chain: the engine's own way
    _program(tmp_path, "iptables-legacy", sees_chain=True)
    assert wifi._binary() == str(tmp_path / "iptables-legacy")
