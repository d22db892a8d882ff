"""Pure rules: activity, gateway choice, virtual names, what a change announces."""

from __future__ import annotations

import pytest

from common.netmon_proto import is_virtual
from services.netmon.model import (
    IFF_LOWER_UP,
    IFF_UP,
    AddrRecord,
    LinkRecord,
    RouteRecord,
    build_state,
    diff_state,
    link_is_up,
)


@pytest.mark.parametrize(
    ("operstate", "flags", "up"),
    [
        ("UP", 0, True),
        ("UNKNOWN", IFF_UP | IFF_LOWER_UP, True),
        ("UNKNOWN", IFF_UP, False),
        ("UNKNOWN", IFF_LOWER_UP, False),
        ("DOWN", IFF_UP | IFF_LOWER_UP, False),
        ("LOWERLAYERDOWN", IFF_UP, False),
        ("DORMANT", IFF_UP | IFF_LOWER_UP, False),
    ],
)
def test_link_is_up(operstate: str, flags: int, up: bool) -> None:
    assert link_is_up(operstate, flags) is up


@pytest.mark.parametrize(
    "name",
    ["lo", "docker0", "docker_gwbridge", "br-1a2b3c", "veth12ab", "vethoat1", "virbr0"],
)
def test_virtual_names(name: str) -> None:
    assert is_virtual(name)


@pytest.mark.parametrize(
    "name", ["eth0", "ens37", "enp3s0", "wlan0", "oat0", "br0", "bond0"]
)
def test_real_names(name: str) -> None:
    assert not is_virtual(name)


def link(index: int, name: str, operstate: str = "UP") -> LinkRecord:
    return LinkRecord(
        index, name, operstate, IFF_UP | IFF_LOWER_UP, f"02:00:00:00:00:0{index}"
    )


def test_build_state_rules() -> None:
    links = [
        link(1, "lo", "UNKNOWN"),
        link(2, "oat0"),
        link(3, "oat1", "DOWN"),
        link(4, "oat2"),
    ]
    addrs = [
        AddrRecord(1, "127.0.0.1", 8),
        AddrRecord(2, "192.0.2.10", 24),
        AddrRecord(2, "198.51.100.10", 25),
        AddrRecord(3, "203.0.113.3", 24),
        AddrRecord(9, "203.0.113.9", 24),  # its link vanished between the dumps
    ]
    routes = [
        RouteRecord(oif=2, gateway="192.0.2.254", priority=200),
        RouteRecord(oif=2, gateway="192.0.2.1", priority=100),
        RouteRecord(oif=3, gateway="203.0.113.1", priority=0),
        RouteRecord(oif=4, gateway=None, priority=0),
    ]
    state = build_state(links, addrs, routes, "t0")
    assert set(state) == {1, 2, 3, 4}, "index 9 has no link"
    lo = state[1].to_wire()
    assert lo["virtual"] is True and lo["active"] is True, "reported, flagged virtual"
    assert state[2].to_wire()["virtual"] is False
    oat0 = state[2].to_wire()
    assert oat0["active"] is True
    assert oat0["gateway"] == "192.0.2.1", "lowest metric wins"
    assert oat0["ipv4_addresses"][1] == {
        "address": "198.51.100.10",
        "prefixlen": 25,
        "subnet": "198.51.100.0/25",
        "network_address": "198.51.100.0",
    }
    assert (
        state[3].active is False
        and state[3].addresses == ()
        and state[3].gateway is None
    )
    assert state[4].active is False, "up but without IPv4"


def test_diff_state_announcements() -> None:
    up = build_state([link(2, "oat0")], [AddrRecord(2, "192.0.2.10", 24)], [], "t0")
    same_later = build_state(
        [link(2, "oat0")], [AddrRecord(2, "192.0.2.10", 24)], [], "t1"
    )
    down = build_state(
        [link(2, "oat0", "DOWN")], [AddrRecord(2, "192.0.2.10", 24)], [], "t1"
    )
    renamed = build_state(
        [link(2, "oat9")], [AddrRecord(2, "192.0.2.10", 24)], [], "t1"
    )

    assert diff_state({}, up, 2, "t") == [up[2]]
    assert diff_state(up, same_later, 2, "t") == [], "timestamps alone are no change"
    assert diff_state(up, {}, 2, "t")[0].to_wire() | {"timestamp": None} == {
        "interface": "oat0",
        "index": 2,
        "operstate": "NOTPRESENT",
        "ipv4_addresses": [],
        "gateway": None,
        "timestamp": None,
        "mac_address": "02:00:00:00:00:02",
        "active": False,
        "virtual": False,
    }
    [gone] = diff_state(up, down, 2, "t")
    assert (gone.operstate, gone.active) == ("DOWN", False)
    assert diff_state({}, down, 2, "t") == [], "never reported, nothing to retract"
    old, new = diff_state(up, renamed, 2, "t")
    assert (old.name, old.active, new.name, new.active) == ("oat0", False, "oat9", True)
