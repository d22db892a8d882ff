"""Setting a vNIC's MAC inside a runtime's network namespace (engines before API 1.44).

Real namespaces: a LAN namespace holding one end of a veth pair, the other end the
MACVLAN parent in the host namespace, and a runtime stand-in — a namespace with a
MACVLAN link on that parent and a process living in it, as the engine makes them.  The
LAN side's neighbour table shows which MAC the runtime answers with.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from services.executor.engine import macfix

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

SUBNET = "198.51.100.192/27"
LAN_HOST = "198.51.100.193"
ENGINE_MAC = "02:42:c6:33:64:c2"  # what the engine would give 198.51.100.194
OWN_MAC = "02:0d:00:00:13:01"


def sh(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True,
                          timeout=20).stdout


@dataclass
class Stand:
    tag: str
    pid: int

    @property
    def lan(self) -> str:
        return f"oatml{self.tag}"

    @property
    def runtime(self) -> str:
        return f"oatmr{self.tag}"

    def link(self, name: str) -> tuple[str, str]:
        """(MAC, IPv4 addresses) of `name` in the runtime's namespace."""
        out = sh("ip", "-n", self.runtime, "-o", "link", "show", name).split()
        mac = out[out.index("link/ether") + 1]
        addrs = sh("ip", "-n", self.runtime, "-o", "-4", "addr", "show", name)
        return mac, addrs

    def seen_from_lan(self, ip: str) -> str:
        """The MAC the LAN host learns for `ip` (asked afresh)."""
        sh("ip", "-n", self.lan, "neigh", "flush", "all")
        sh("ip", "netns", "exec", self.lan, "ping", "-c", "1", "-W", "2", ip)
        return sh("ip", "-n", self.lan, "neigh", "show", ip).split()[-2]


@pytest.fixture
def stand() -> Iterator[Stand]:
    tag = f"{os.getpid() % 10000}"
    lan, runtime, parent = f"oatml{tag}", f"oatmr{tag}", f"oatmp{tag}"
    sleeper: subprocess.Popen[bytes] | None = None
    try:
        for ns in (lan, runtime):
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", parent, "type", "veth", "peer", "name", f"{parent}l")
        sh("ip", "link", "set", f"{parent}l", "netns", lan)
        sh("ip", "-n", lan, "addr", "add", f"{LAN_HOST}/27", "dev", f"{parent}l")
        sh("ip", "-n", lan, "link", "set", f"{parent}l", "up")
        sh("ip", "link", "set", parent, "up")
        sh("ip", "link", "add", "oatmv0", "link", parent, "address", ENGINE_MAC,
           "type", "macvlan", "mode", "bridge")
        sh("ip", "link", "set", "oatmv0", "netns", runtime)
        sh("ip", "-n", runtime, "link", "set", "oatmv0", "name", "eth1")
        sh("ip", "-n", runtime, "addr", "add", "198.51.100.194/27", "dev", "eth1")
        sh("ip", "-n", runtime, "link", "set", "eth1", "up")
        sh("ip", "-n", runtime, "link", "set", "lo", "up")
        sleeper = subprocess.Popen(["ip", "netns", "exec", runtime, "sleep", "60"])
        yield Stand(tag, sleeper.pid)
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait(5)
        subprocess.run(["ip", "link", "del", parent], capture_output=True, check=False)
        for ns in (lan, runtime):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def test_found_by_the_new_subnet_right_after_the_connect(stand: Stand) -> None:
    assert stand.seen_from_lan("198.51.100.194") == ENGINE_MAC
    assert macfix.apply_in(stand.pid, SUBNET, OWN_MAC) == ("198.51.100.194", ENGINE_MAC)
    mac, addrs = stand.link("eth1")
    assert mac == OWN_MAC and "198.51.100.194/27" in addrs  # the address stays
    assert stand.seen_from_lan("198.51.100.194") == OWN_MAC
    # Again: nothing to change, and it says what the interface has.
    assert macfix.apply_in(stand.pid, SUBNET, OWN_MAC.upper()) == ("198.51.100.194", OWN_MAC)
    # By the address it was connected with (a static IP, a lease).
    assert macfix.apply_in(stand.pid, "198.51.100.194", ENGINE_MAC) == \
        ("198.51.100.194", OWN_MAC)
    assert stand.link("eth1")[0] == ENGINE_MAC


def test_two_interfaces_on_the_subnet_are_not_guessed_between(stand: Stand) -> None:
    sh("ip", "link", "add", "oatmv1", "link", f"oatmp{stand.tag}", "type", "macvlan",
       "mode", "bridge")
    sh("ip", "link", "set", "oatmv1", "netns", stand.runtime)
    sh("ip", "-n", stand.runtime, "addr", "add", "198.51.100.195/27", "dev", "oatmv1")
    sh("ip", "-n", stand.runtime, "link", "set", "oatmv1", "up")
    assert macfix.apply_in(stand.pid, SUBNET, OWN_MAC) is None
    assert stand.link("eth1")[0] == ENGINE_MAC
    # By address it is exact.
    assert macfix.apply(stand.pid, [("198.51.100.194", OWN_MAC),
                                    ("198.51.100.9", "02:0d:00:00:13:02")]) == \
        [("198.51.100.194", OWN_MAC)]
    assert stand.link("eth1")[0] == OWN_MAC
    assert macfix.apply(stand.pid, [("198.51.100.194", OWN_MAC)]) == []


def test_a_namespace_that_is_gone_says_so(stand: Stand) -> None:
    with pytest.raises(macfix.MacFixUnavailable, match="not visible"):
        macfix.apply_in(0, SUBNET, OWN_MAC)
    with pytest.raises(macfix.MacFixUnavailable, match="Cannot assign"):
        macfix.apply_in(stand.pid, SUBNET, "ff:ff:ff:ff:ff:ff")  # not a unicast MAC
    assert stand.link("eth1")[0] == ENGINE_MAC
