"""Setting a vNIC's MAC inside a runtime's network namespace (engines before API 1.44).

Real namespaces: a LAN namespace holding one end of a veth pair, the other end the
MACVLAN parent in the host namespace, and a runtime stand-in — a namespace with a
MACVLAN link on that parent and a process living in it, as the engine makes them.  The
LAN side's neighbour table shows which MAC the runtime answers with.  The block is one
that neither the engine nor another test's LAN uses (a host address on it would answer
the LAN's ARP itself).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest

from services.executor.engine import macfix
from testkit.helpers import wait_for
from testkit.movinglan import free_blocks

pytestmark = [pytest.mark.netns, pytest.mark.docker, pytest.mark.timeout(60)]

ENGINE_MAC = "02:42:c6:33:64:c2"  # how the engine makes one (from the address)
OWN_MAC = "02:0d:00:00:13:01"


def sh(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True,
                          timeout=20).stdout


@dataclass
class Stand:
    tag: str
    pid: int
    subnet: str

    def host(self, n: int) -> str:
        return str(ipaddress.IPv4Network(self.subnet)[n])

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
        """The MAC the LAN host learns for `ip` (asked afresh: a datagram sent there
        makes it resolve the address)."""
        sh("ip", "-n", self.lan, "neigh", "flush", "all")
        sh("ip", "netns", "exec", self.lan, sys.executable, "-c",
           "import socket\n"
           f"socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'?', ('{ip}', 9))\n")
        learnt: list[str] = []

        def resolved() -> bool:
            words = sh("ip", "-n", self.lan, "neigh", "show", ip).split()
            learnt[:] = words[words.index("lladdr") + 1:][:1] if "lladdr" in words else []
            return bool(learnt)

        wait_for(resolved, 5, f"the LAN resolving {ip}")
        return learnt[0]


@pytest.fixture
def stand(docker_client: docker.DockerClient) -> Iterator[Stand]:
    (subnet,) = free_blocks(docker_client, 1, set())
    net = ipaddress.IPv4Network(subnet)
    tag = f"{os.getpid() % 10000}"
    lan, runtime, parent = f"oatml{tag}", f"oatmr{tag}", f"oatmp{tag}"
    sleeper: subprocess.Popen[bytes] | None = None
    try:
        for ns in (lan, runtime):
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", parent, "type", "veth", "peer", "name", f"{parent}l")
        sh("ip", "link", "set", f"{parent}l", "netns", lan)
        sh("ip", "-n", lan, "addr", "add", f"{net[1]}/{net.prefixlen}", "dev", f"{parent}l")
        sh("ip", "-n", lan, "link", "set", f"{parent}l", "up")
        sh("ip", "link", "set", parent, "up")
        sh("ip", "link", "add", f"oatmv{tag}", "link", parent, "address", ENGINE_MAC,
           "type", "macvlan", "mode", "bridge")
        sh("ip", "link", "set", f"oatmv{tag}", "netns", runtime)
        sh("ip", "-n", runtime, "link", "set", f"oatmv{tag}", "name", "eth1")
        sh("ip", "-n", runtime, "addr", "add", f"{net[2]}/{net.prefixlen}", "dev", "eth1")
        sh("ip", "-n", runtime, "link", "set", "eth1", "up")
        sh("ip", "-n", runtime, "link", "set", "lo", "up")
        sleeper = subprocess.Popen(["ip", "netns", "exec", runtime, "sleep", "60"])
        inside = os.stat(f"/var/run/netns/{runtime}").st_ino
        pid = sleeper.pid
        wait_for(lambda: os.stat(f"/proc/{pid}/ns/net").st_ino == inside, 5,
                 "the stand-in's process in its namespace")
        yield Stand(tag, sleeper.pid, subnet)
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait(5)
        subprocess.run(["ip", "link", "del", parent], capture_output=True, check=False)
        for ns in (lan, runtime):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def test_found_by_the_new_subnet_right_after_the_connect(stand: Stand) -> None:
    ip = stand.host(2)
    assert stand.seen_from_lan(ip) == ENGINE_MAC
    assert macfix.apply_in(stand.pid, stand.subnet, OWN_MAC) == (ip, ENGINE_MAC)
    mac, addrs = stand.link("eth1")
    assert mac == OWN_MAC and f"{ip}/" in addrs  # the address stays
    assert stand.seen_from_lan(ip) == OWN_MAC
    # Again: nothing to change, and it says what the interface has.
    assert macfix.apply_in(stand.pid, stand.subnet, OWN_MAC.upper()) == (ip, OWN_MAC)
    # By the address it was connected with (a static IP, a lease).
    assert macfix.apply_in(stand.pid, ip, ENGINE_MAC) == (ip, OWN_MAC)
    assert stand.link("eth1")[0] == ENGINE_MAC


def test_two_interfaces_on_the_subnet_are_not_guessed_between(stand: Stand) -> None:
    second, prefix = f"oatmw{stand.tag}", stand.subnet.split("/")[1]
    sh("ip", "link", "add", second, "link", f"oatmp{stand.tag}", "type", "macvlan",
       "mode", "bridge")
    sh("ip", "link", "set", second, "netns", stand.runtime)
    sh("ip", "-n", stand.runtime, "addr", "add", f"{stand.host(3)}/{prefix}", "dev", second)
    sh("ip", "-n", stand.runtime, "link", "set", second, "up")
    assert macfix.apply_in(stand.pid, stand.subnet, OWN_MAC) is None
    assert stand.link("eth1")[0] == ENGINE_MAC
    # By address it is exact.
    elsewhere = "203.0.113.9"  # held by nothing in the namespace
    assert macfix.apply(stand.pid, [(stand.host(2), OWN_MAC),
                                    (elsewhere, "02:0d:00:00:13:02")]) == \
        [(stand.host(2), OWN_MAC)]
    assert stand.link("eth1")[0] == OWN_MAC
    assert macfix.apply(stand.pid, [(stand.host(2), OWN_MAC)]) == []


def test_a_namespace_that_is_gone_says_so(stand: Stand) -> None:
    with pytest.raises(macfix.MacFixUnavailable, match="not visible"):
        macfix.apply_in(0, stand.subnet, OWN_MAC)
    with pytest.raises(macfix.MacFixUnavailable, match="Cannot assign"):
        macfix.apply_in(stand.pid, stand.subnet, "ff:ff:ff:ff:ff:ff")  # not a unicast MAC
    assert stand.link("eth1")[0] == ENGINE_MAC
