"""The lease keeper against a real DHCP server: dnsmasq in a LAN namespace, runtime
stand-ins in namespaces of their own with a MACVLAN on the LAN's veth (as the engine
makes them), each first carrying an address of its own like the engine's IPAM one.

Needs root (namespaces, veth, MACVLAN) and dnsmasq, which `install/test-env.sh` installs.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.executor.dhcp import LeaseKeeper, VnicTarget
from testkit.helpers import wait_for
from tests.dhcp.lan import DNS, RANGE, ROUTER, DhcpLan, Runtime, sh

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

Lans = Callable[..., DhcpLan]
Keepers = Callable[..., LeaseKeeper]


def target(rt: Runtime, device: str, **kwargs: Any) -> VnicTarget:
    return VnicTarget(device, "eth0", rt.mac, rt.netns, hostname=device,
                      resolv_conf=rt.resolv_conf, **kwargs)


def in_range(ip: str | None) -> bool:
    assert ip is not None
    low, high = (ipaddress.IPv4Address(a) for a in RANGE)
    return low <= ipaddress.IPv4Address(ip) <= high


def state_is(*states: str) -> Callable[[dict[str, Any]], bool]:
    return lambda status: status["state"] in states


def test_two_runtimes_get_distinct_leases_and_the_reservation(
        lans: Lans, keepers: Keepers) -> None:
    lan = lans()
    plain, reserved = lan.runtime(), lan.runtime()
    lan.reservations[reserved.mac] = "198.51.100.50"
    lan.start_server()
    keeper = keepers()
    t0 = time.monotonic()
    keeper.attach(target(plain, "plc-a", dns=("203.0.113.53",)))
    keeper.attach(target(reserved, "plc-b"))
    a = keeper.wait("plc-a", "eth0", state_is("bound"), 20)
    b = keeper.wait("plc-b", "eth0", state_is("bound"), 20)
    print(f"both leased in {time.monotonic() - t0:.2f} s")
    assert in_range(a["ip_address"]) and b["ip_address"] == "198.51.100.50"
    assert lan.leases() == {plain.mac: a["ip_address"], reserved.mac: "198.51.100.50"}
    for rt, status in ((plain, a), (reserved, b)):
        # Only the leased address: the stand-in's "IPAM" address 198.51.100.77 is gone.
        assert rt.addresses() == [f"{status['ip_address']}/24"]
        assert rt.default_route().startswith(f"default via {ROUTER} dev {rt.link}")
        assert status["gateway"] == ROUTER and status["server"] == ROUTER
        assert status["lease_time"] == 20 and status["lease_expiry"] > status["lease_start"]
        assert lan.reach_from_lan(rt, status["ip_address"])
    assert a["dns"] == ["203.0.113.53", DNS]  # configured first, then the lease's
    assert plain.resolv().splitlines()[1:] == ["nameserver 203.0.113.53", f"nameserver {DNS}"]
    assert f"nameserver {DNS}" in reserved.resolv()


def test_renewal_rebinding_expiry_and_recovery(lans: Lans, keepers: Keepers) -> None:
    lan = lans(options=["option:T1,2", "option:T2,4"])
    rt = lan.runtime()
    lan.start_server()
    seen: list[str] = []
    keeper = keepers(on_change=lambda _d, _v, status: seen.append(status["state"]))
    keeper.attach(target(rt, "plc-r"))
    first = keeper.wait("plc-r", "eth0", state_is("bound"), 20)
    # Renewal at T1 (2 s): renewing, then bound again with a later lease start.
    renewed = keeper.wait("plc-r", "eth0", lambda s: s["state"] == "bound"
                          and s["lease_start"] > first["lease_start"], 10)
    assert "renewing" in seen and renewed["ip_address"] == first["ip_address"]
    # The server goes away: renewing, rebinding at T2, the address kept until expiry.
    lan.stop_server()
    keeper.wait("plc-r", "eth0", state_is("rebinding"), 10)
    assert rt.addresses() == [f"{first['ip_address']}/24"]
    expired = keeper.wait("plc-r", "eth0", state_is("expired"), 25)
    assert expired["ip_address"] is None
    assert rt.addresses() == [] and rt.default_route() == ""
    assert seen.index("renewing") < seen.index("rebinding") < seen.index("expired")
    # The server is back: leased again (the same address, dnsmasq still knows the MAC).
    lan.start_server()
    back = keeper.wait("plc-r", "eth0", state_is("bound"), 15)
    assert back["ip_address"] == first["ip_address"]
    assert rt.addresses() == [f"{first['ip_address']}/24"]


def test_rebinding_is_answered_by_a_server_back_before_expiry(
        lans: Lans, keepers: Keepers) -> None:
    lan = lans(options=["option:T1,2", "option:T2,4"])
    rt = lan.runtime()
    lan.start_server()
    keeper = keepers()
    keeper.attach(target(rt, "plc-b"))
    first = keeper.wait("plc-b", "eth0", state_is("bound"), 20)
    lan.stop_server()
    keeper.wait("plc-b", "eth0", state_is("rebinding"), 10)
    lan.start_server()
    rebound = keeper.wait("plc-b", "eth0", state_is("bound"), 15)
    assert rebound["ip_address"] == first["ip_address"]
    assert "DHCPREQUEST" in lan.log()


def test_keeper_restart_resumes_and_a_runtime_restart_asks_for_its_address(
        lans: Lans, keepers: Keepers, tmp_path: Path) -> None:
    lan = lans()
    rt = lan.runtime()
    lan.start_server()
    state = tmp_path / "kstate"
    keeper = keepers(state)
    keeper.attach(target(rt, "plc-k"))
    first = keeper.wait("plc-k", "eth0", state_is("bound"), 20)
    keeper.stop()
    assert rt.addresses() == [f"{first['ip_address']}/24"]  # stays while the keeper is away
    saved = json.loads((state / "dhcp" / "plc-k@eth0.json").read_text())
    assert saved["lease"]["ip_address"] == first["ip_address"]
    discovers = lan.log().count("DHCPDISCOVER")
    # An executor restart: the interface still carries the lease, which is resumed.
    keeper2 = keepers(state)
    resumed = keeper2.attach(target(rt, "plc-k"))
    assert resumed["state"] == "bound" and resumed["ip_address"] == first["ip_address"]
    assert resumed["lease_start"] == first["lease_start"]
    # A runtime restart: a fresh interface with the engine's address on it.  INIT-REBOOT
    # asks for the previous address, and nothing but the leased address is applied.
    keeper2.detach("plc-k", "eth0")
    lan_ipam = "198.51.100.78/24"
    rt_ns_cmd = ["ip", "-n", rt.ns]
    sh(*rt_ns_cmd, "addr", "flush", "dev", rt.link)
    sh(*rt_ns_cmd, "addr", "add", lan_ipam, "dev", rt.link)
    status = keeper2.attach(target(rt, "plc-k"))
    assert status["state"] == "requesting"
    # The engine's address went at attach; the ACK may already have put the lease back.
    assert rt.addresses() in ([], [f"{first['ip_address']}/24"])
    again = keeper2.wait("plc-k", "eth0", state_is("bound"), 20)
    assert again["ip_address"] == first["ip_address"]
    assert again["lease_start"] > first["lease_start"]
    assert lan.log().count("DHCPDISCOVER") == discovers  # no DISCOVER: INIT-REBOOT did it


def test_release_removes_the_lease_from_the_server(lans: Lans, keepers: Keepers,
                                                   tmp_path: Path) -> None:
    lan = lans()
    rt = lan.runtime()
    lan.start_server()
    keeper = keepers()
    keeper.attach(target(rt, "plc-d"))
    leased = keeper.wait("plc-d", "eth0", state_is("bound"), 20)
    assert rt.mac in lan.leases()
    assert keeper.release("plc-d", "eth0") is True
    wait_for(lambda: rt.mac not in lan.leases(), 5, "the lease to leave dnsmasq's file",
             interval=0.1)
    assert f"DHCPRELEASE({lan.peer}) {leased['ip_address']} {rt.mac}" in lan.log()
    assert rt.addresses() == []
    assert keeper.status("plc-d", "eth0") is None and keeper.known() == []
    assert not (tmp_path / "state" / "dhcp" / "plc-d@eth0.json").exists()


def test_no_server_reports_no_offer_then_leases_when_one_appears(
        lans: Lans, keepers: Keepers) -> None:
    lan = lans()
    rt = lan.runtime()
    keeper = keepers()
    t0 = time.monotonic()
    keeper.attach(target(rt, "plc-n"))
    assert rt.addresses() == []  # the engine's address is not kept meanwhile
    status = keeper.wait("plc-n", "eth0", state_is("no_offer"), 10)
    assert time.monotonic() - t0 < 4.0 + 1.0  # the bound (no_offer_after) plus a margin
    assert status["ip_address"] is None
    lan.start_server()
    leased = keeper.wait("plc-n", "eth0", state_is("bound"), 15)
    assert in_range(leased["ip_address"])


def test_a_previous_address_from_another_lan_is_never_applied(
        lans: Lans, keepers: Keepers, tmp_path: Path) -> None:
    lan = lans()
    rt = lan.runtime(ipam_address=None)
    lan.start_server()
    state = tmp_path / "state"
    (state / "dhcp").mkdir(parents=True)
    old = {"ip_address": "203.0.113.9", "prefixlen": 24, "server": "203.0.113.1",
           "start": time.time() - 10, "lease_time": 3600, "t1": 1800, "t2": 3150,
           "gateway": "203.0.113.1", "dns": []}
    (state / "dhcp" / "plc-m@eth0.json").write_text(json.dumps(
        {"mac_address": rt.mac, "lease": old, "previous_ip": "203.0.113.9"}))
    seen: list[str | None] = []
    keeper = keepers(state, on_change=lambda _d, _v, s: seen.append(s["ip_address"]))
    keeper.attach(target(rt, "plc-m"))
    leased = keeper.wait("plc-m", "eth0", state_is("bound"), 20)
    assert in_range(leased["ip_address"])
    assert "203.0.113.9" not in seen
    assert rt.addresses() == [f"{leased['ip_address']}/24"]


def test_twenty_runtimes_at_once(lans: Lans, keepers: Keepers) -> None:
    # Without dnsmasq's serial ping probe, which alone takes 3 s per new address.
    lan = lans(ping=False)
    rts = [lan.runtime(ipam_address=None) for _ in range(20)]
    lan.start_server()
    keeper = keepers()
    t0 = time.monotonic()
    for k, rt in enumerate(rts):
        keeper.attach(target(rt, f"plc-{k}"))
    done = []
    for k in range(20):
        keeper.wait(f"plc-{k}", "eth0", state_is("bound"), 30)
        done.append(time.monotonic() - t0)
    ips = {keeper.status(f"plc-{k}", "eth0")["ip_address"] for k in range(20)}  # type: ignore[index]
    assert len(ips) == 20 and all(in_range(ip) for ip in ips)
    assert set(lan.leases()) == {rt.mac for rt in rts}
    print(f"20 leased: first {min(done):.2f} s, last {max(done):.2f} s")
    assert max(done) - min(done) < 5
