"""The netmon process against real netlink in a test namespace."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from services.netmon.monitor import DEFAULT_DEBOUNCE
from tests.netmon.nsutil import (
    REPO,
    NetmonProcess,
    addresses,
    ip,
    ip_batch,
    link_info,
)

pytestmark = pytest.mark.timeout(60)

DEBOUNCE = 0.3
# Long enough for a debounced event plus process scheduling on a busy machine.
EVENT_WAIT = DEBOUNCE + 3.0


def has_addresses(n: int) -> Callable[[dict], bool]:
    return lambda d: len(d["ipv4_addresses"]) == n


def by_name(interfaces: list[dict]) -> dict[str, dict]:
    return {i["interface"]: i for i in interfaces}


def test_discovery_shape(netmon: NetmonProcess, lan: str) -> None:
    client = netmon.client()
    interfaces = client.discovery()
    found = by_name(interfaces)
    assert list(found) == ["lo", "oat0"], "sorted; oat0p has no IPv4"
    assert found["lo"]["virtual"] is True, "lo is reported, flagged virtual"
    oat0 = found["oat0"]
    assert oat0["virtual"] is False
    assert oat0["index"] == link_info(lan, "oat0")["ifindex"]
    assert oat0["operstate"] == "UP"
    assert oat0["ipv4_addresses"] == [
        {
            "address": "192.0.2.10",
            "prefixlen": 24,
            "subnet": "192.0.2.0/24",
            "network_address": "192.0.2.0",
        }
    ]
    assert oat0["gateway"] == "192.0.2.1"
    assert oat0["mac_address"] == link_info(lan, "oat0")["address"]
    assert oat0["active"] is True
    datetime.fromisoformat(oat0["timestamp"])
    client.close()


def test_address_add_change_remove(netmon: NetmonProcess, lan: str) -> None:
    client = netmon.client()
    client.discovery()

    ip(lan, "addr", "add", "198.51.100.20/24", "dev", "oat0")
    got = client.wait_change(
        "oat0", lambda d: len(d["ipv4_addresses"]) == 2, EVENT_WAIT
    )
    assert addresses(got) == ["192.0.2.10/24", "198.51.100.20/24"]
    assert got["ipv4_addresses"][1]["subnet"] == "198.51.100.0/24"

    ip(lan, "addr", "del", "192.0.2.10/24", "dev", "oat0")
    got = client.wait_change(
        "oat0", lambda d: len(d["ipv4_addresses"]) == 1, EVENT_WAIT
    )
    assert addresses(got) == ["198.51.100.20/24"]
    assert got["active"] is True

    # Last IPv4 address gone: one event the bridge can act on.
    ip(lan, "addr", "del", "198.51.100.20/24", "dev", "oat0")
    got = client.wait_change("oat0", lambda d: not d["active"], EVENT_WAIT)
    assert got["ipv4_addresses"] == []
    assert got["gateway"] is None
    assert got["operstate"] == "UP"

    # Back: reported as active again.
    ip(lan, "addr", "add", "203.0.113.5/24", "dev", "oat0")
    got = client.wait_change("oat0", lambda d: d["active"], EVENT_WAIT)
    assert addresses(got) == ["203.0.113.5/24"]
    client.close()


def test_default_route_sets_gateway(netmon: NetmonProcess, lan: str) -> None:
    client = netmon.client()
    assert by_name(client.discovery())["oat0"]["gateway"] == "192.0.2.1"

    ip(lan, "route", "del", "default")
    got = client.wait_change("oat0", lambda d: d["gateway"] is None, EVENT_WAIT)
    assert got["active"] is True

    ip(lan, "route", "add", "default", "via", "192.0.2.254", "dev", "oat0")
    got = client.wait_change("oat0", lambda d: d["gateway"] is not None, EVENT_WAIT)
    assert got["gateway"] == "192.0.2.254"

    # A non-default route is not a gateway and announces nothing.
    ip(lan, "route", "add", "203.0.113.0/24", "via", "192.0.2.2", "dev", "oat0")
    assert client.changes_for("oat0", DEBOUNCE + 1.0) == []
    client.close()


def test_link_down_up_and_removal(netmon: NetmonProcess, lan: str) -> None:
    client = netmon.client()
    client.discovery()

    ip(lan, "link", "set", "oat0", "down")
    got = client.wait_change("oat0", lambda d: not d["active"], EVENT_WAIT)
    assert got["operstate"] == "DOWN"
    assert got["ipv4_addresses"] == [] and got["gateway"] is None

    ip(lan, "link", "set", "oat0", "up")
    got = client.wait_change("oat0", lambda d: d["active"], EVENT_WAIT)
    assert addresses(got) == ["192.0.2.10/24"]
    assert got["operstate"] == "UP"

    index = got["index"]
    ip(lan, "link", "del", "oat0")
    got = client.wait_change("oat0", lambda d: not d["active"], EVENT_WAIT)
    assert got["operstate"] == "NOTPRESENT"
    assert got["index"] == index
    assert got["ipv4_addresses"] == []
    client.close()


def test_burst_is_one_event_with_final_state(netmon: NetmonProcess, lan: str) -> None:
    client = netmon.client()
    client.discovery()
    ip_batch(
        lan,
        [
            "addr add 198.51.100.1/24 dev oat0",
            "addr add 203.0.113.9/24 dev oat0",
            "addr del 198.51.100.1/24 dev oat0",
            "route replace default via 192.0.2.7 dev oat0",
            "addr add 198.51.100.2/24 dev oat0",
        ],
    )
    events = client.changes_for("oat0", EVENT_WAIT)
    assert len(events) == 1, events
    assert sorted(addresses(events[0])) == [
        "192.0.2.10/24",
        "198.51.100.2/24",
        "203.0.113.9/24",
    ]
    assert events[0]["gateway"] == "192.0.2.7"
    client.close()


def test_change_undone_within_window_announces_nothing(
    netmon: NetmonProcess, lan: str
) -> None:
    client = netmon.client()
    client.discovery()
    ip_batch(
        lan, ["addr add 198.51.100.3/24 dev oat0", "addr del 198.51.100.3/24 dev oat0"]
    )
    assert client.changes_for("oat0", DEBOUNCE + 1.5) == []
    client.close()


def test_flapping_interface_still_reported(netmon: NetmonProcess, lan: str) -> None:
    """Changes every 0.1 s never leave a quiet period; the cap (4 x debounce) still
    gets an event out while they continue."""
    client = netmon.client()
    client.discovery()
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < 8 * DEBOUNCE:
        ip(lan, "addr", "add", f"198.51.100.{100 + i}/24", "dev", "oat0")
        i += 1
        message = client.read(0.1)
        if message and message["type"] == "network_change":
            break
    else:
        pytest.fail("no event while the interface kept changing")
    assert time.monotonic() - start < 8 * DEBOUNCE
    client.close()


def test_virtual_names_reported_with_their_flag(
    lan: str, netmon_factory: Callable[..., NetmonProcess]
) -> None:
    ip(lan, "link", "add", "vethoat1", "type", "veth", "peer", "name", "oat1p")
    ip(lan, "link", "set", "oat1p", "up")
    ip(lan, "link", "set", "vethoat1", "up")
    ip(lan, "addr", "add", "198.51.100.7/24", "dev", "vethoat1")
    netmon = netmon_factory(lan, debounce=DEBOUNCE)
    client = netmon.client()
    found = by_name(client.discovery())
    assert found["oat0"]["virtual"] is False
    assert found["vethoat1"]["virtual"] is True
    assert {n for n, i in found.items() if not i["virtual"]} == {"oat0"}

    ip(lan, "addr", "add", "198.51.100.8/24", "dev", "vethoat1")
    ip(lan, "link", "set", "vethoat1", "down")
    # A change on oat0 afterwards proves events were flowing meanwhile.
    ip(lan, "addr", "add", "203.0.113.8/24", "dev", "oat0")
    client.wait_change("oat0", lambda d: len(d["ipv4_addresses"]) == 2, EVENT_WAIT)
    names = {
        m["data"]["interface"] for m in client.seen if m["type"] == "network_change"
    }
    assert "oat0" in names and names <= {"oat0", "vethoat1"}
    client.close()


def test_late_client_gets_current_state(netmon: NetmonProcess, lan: str) -> None:
    first = netmon.client()
    first.discovery()
    ip(lan, "addr", "add", "203.0.113.44/24", "dev", "oat0")
    first.wait_change("oat0", lambda d: len(d["ipv4_addresses"]) == 2, EVENT_WAIT)

    late = netmon.client()
    oat0 = by_name(late.discovery())["oat0"]
    assert addresses(oat0) == ["192.0.2.10/24", "203.0.113.44/24"]
    first.close()
    late.close()


def test_two_clients_and_a_client_that_never_reads(
    netmon: NetmonProcess, lan: str
) -> None:
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    idle.connect(str(netmon.sock_path))
    try:
        a, b = netmon.client(), netmon.client()
        a.discovery()
        b.discovery()
        for n in range(3):
            ip(lan, "addr", "add", f"198.51.100.{50 + n}/24", "dev", "oat0")
            pred = has_addresses(2 + n)
            got_a = a.wait_change("oat0", pred, EVENT_WAIT)
            got_b = b.wait_change("oat0", pred, EVENT_WAIT)
            assert got_a == got_b
        a.close()
        b.close()
    finally:
        idle.close()


def test_sigterm_stops_cleanly_and_removes_socket(netmon: NetmonProcess) -> None:
    client = netmon.client()
    client.discovery()
    assert netmon.terminate() == 0
    assert not netmon.sock_path.exists()
    client.close()


def test_socket_mode_is_0660(netmon: NetmonProcess) -> None:
    # Deliberately not the original's 0666 (docs/netmon.md): owner and group only.
    assert netmon.sock_path.stat().st_mode & 0o777 == 0o660


def test_stale_socket_file_is_replaced(
    lan: str, state_dir: Path, netmon_factory: Callable[..., NetmonProcess]
) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(state_dir / "netmon.sock"))
    stale.close()
    assert (state_dir / "netmon.sock").exists()
    netmon = netmon_factory(lan)
    assert by_name(netmon.client().discovery())["oat0"]["active"] is True


def test_second_instance_refuses_to_start(
    netmon: NetmonProcess, lan: str, netmon_factory: Callable[..., NetmonProcess]
) -> None:
    inode = netmon.sock_path.stat().st_ino
    second = netmon_factory(lan, wait=False)
    assert second.wait_exit(15) == 1
    assert "another netmon" in second.log()
    assert netmon.sock_path.stat().st_ino == inode
    client = netmon.client()
    assert by_name(client.discovery())["oat0"]["active"] is True
    client.close()


def run_check(state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "services.netmon",
            "--check",
            "--state-dir",
            str(state_dir),
        ],
        check=False,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_healthcheck(netmon: NetmonProcess, state_dir: Path) -> None:
    ok = run_check(state_dir)
    assert ok.returncode == 0, ok.stderr
    assert netmon.terminate() == 0
    bad = run_check(state_dir)
    assert bad.returncode == 1
    assert "unhealthy" in bad.stderr


def test_default_debounce_semantics(
    lan: str, netmon_factory: Callable[..., NetmonProcess]
) -> None:
    """With no --debounce flag: five changes spread over about one second give one
    event, no earlier than the configured quiet period after the last change."""
    netmon = netmon_factory(lan, debounce=None)
    client = netmon.client()
    client.discovery()
    last_change = 0.0
    for n in range(5):
        ip(lan, "addr", "add", f"203.0.113.{60 + n}/24", "dev", "oat0")
        last_change = time.monotonic()
        # Spacing the changes is the point of the test; reading doubles as the pause
        # and proves nothing is announced while they keep coming.
        assert client.read(0.2) is None
    first = client.read(DEFAULT_DEBOUNCE + 3.0)
    arrived = time.monotonic()
    assert first is not None and first["type"] == "network_change"
    assert arrived - last_change >= DEFAULT_DEBOUNCE - 0.1
    assert arrived - last_change < DEFAULT_DEBOUNCE + 2.0
    assert len(first["data"]["ipv4_addresses"]) == 6
    assert client.read(1.0) is None, "a second event for the same burst"
    client.close()
