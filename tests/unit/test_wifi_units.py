"""Wireless vNICs, the pure parts: detection (sysfs and the setting), names, marking."""

from __future__ import annotations

from pathlib import Path

from common.config import Config
from services.executor.net import wifi
from services.executor.runtime.wifilinks import WifiLinks, link_of


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
