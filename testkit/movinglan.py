"""A plant LAN whose subnet the test can move: a veth pair `oat…`/`oat…p`, the `p` end
in a namespace the test creates (the LAN's gateway and a LAN host), the other end in the
host namespace (the MACVLAN parent: the engine must see it).

Network safety: only the veth pair and the namespace made here are changed.  Subnets are
/27 blocks of 198.51.100.0/24 and 203.0.113.0/24 (not 192.0.2.0/24: it may be the
machine's own uplink), skipping any block that overlaps an engine network (other tests'
LANs and bridges) or a route of the host.  The parent's
default route (netmon reports a gateway only from one) gets the highest metric there is,
so it never carries the host's own traffic; it goes away with the veth.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

import docker

from testkit.executor import https_ok_from, taken_subnets

BLOCKS = [f"198.51.100.{32 * i}/27" for i in range(8)] + \
    [f"203.0.113.{32 * i}/27" for i in range(8)]
LOWEST_PRIORITY = 4294967295  # the largest route metric: used only when nothing else is
_counter = itertools.count()


def sh(*args: str, timeout: float = 20, stdin: str | None = None) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True,
                          timeout=timeout, input=stdin).stdout


def free_blocks(dc: docker.DockerClient, count: int, exclude: set[str]) -> list[str]:
    used = taken_subnets(dc)
    found = []
    for block in BLOCKS:
        net = ipaddress.IPv4Network(block)
        if block in exclude or any(net.overlaps(u) for u in used):
            continue
        found.append(block)
        if len(found) == count:
            return found
    raise RuntimeError("not enough free documentation blocks for a test LAN")


def host(subnet: str, n: int) -> str:
    return str(ipaddress.IPv4Network(subnet)[n])


def prefix(subnet: str) -> int:
    return ipaddress.IPv4Network(subnet).prefixlen


@dataclass
class MovingLan:
    parent: str
    ns: str
    subnet: str = ""  # the parent's current subnet ("" while it has none)
    history: list[str] = field(default_factory=list)

    @property
    def peer(self) -> str:
        return f"{self.parent}p"

    # The layout on every subnet: .1 the gateway (LAN side), .2 the host (parent), the
    # last address a LAN host — clear of the engine, which hands out addresses from .3 up.
    def gateway(self, subnet: str | None = None) -> str:
        return host(subnet or self.subnet, 1)

    def host_address(self, subnet: str | None = None) -> str:
        return host(subnet or self.subnet, 2)

    def lan_host(self, subnet: str | None = None) -> str:
        return host(subnet or self.subnet, -2)

    def iface(self, subnet: str | None = None, active: bool = True) -> dict[str, Any]:
        """The IFACE record netmon would send for the parent on `subnet`."""
        subnet = subnet or self.subnet
        net = ipaddress.IPv4Network(subnet)
        if not active:
            return {"interface": self.parent, "index": 0, "operstate": "LOWERLAYERDOWN",
                    "ipv4_addresses": [], "gateway": None, "active": False,
                    "timestamp": "2026-01-01T00:00:00+00:00"}
        return {"interface": self.parent, "index": 0, "operstate": "UP",
                "ipv4_addresses": [{"address": self.host_address(subnet),
                                    "prefixlen": net.prefixlen, "subnet": subnet,
                                    "network_address": str(net.network_address)}],
                "gateway": self.gateway(subnet), "active": True,
                "timestamp": "2026-01-01T00:00:00+00:00"}

    def lan_side(self, *subnets: str) -> None:
        """Give the LAN namespace its gateway and LAN-host addresses on each of `subnets`."""
        for subnet in subnets:
            for address in (self.gateway(subnet), self.lan_host(subnet)):
                sh("ip", "-n", self.ns, "addr", "replace", f"{address}/{prefix(subnet)}",
                   "dev", self.peer)

    def move_host(self, subnet: str) -> None:
        """The parent leaves its subnet for `subnet` (old address out, new one in, default
        route via the new gateway), in one `ip -batch` so it lands within milliseconds."""
        commands = []
        if self.subnet:
            commands.append(f"addr del {self.host_address()}/{prefix(self.subnet)} "
                            f"dev {self.parent}")
        commands.append(f"addr add {self.host_address(subnet)}/{prefix(subnet)} "
                        f"dev {self.parent}")
        commands.append(f"route replace default via {self.gateway(subnet)} dev {self.parent} "
                        f"metric {LOWEST_PRIORITY}")
        sh("ip", "-batch", "-", stdin="\n".join(commands) + "\n")
        self.subnet = subnet
        self.history.append(subnet)

    def carrier(self, up: bool) -> None:
        """Pull or replug the cable: the LAN end goes down or up; the parent keeps its
        address and loses or regains its carrier."""
        sh("ip", "-n", self.ns, "link", "set", self.peer, "up" if up else "down")

    def reach_https(self, ip: str, timeout: float = 3.0) -> bool:
        """GET https://ip:8443/api/version from the LAN namespace."""
        return https_ok_from(self.ns, ip, timeout)

    def neighbour_mac(self, ip: str) -> str | None:
        """The MAC the LAN has learnt for `ip` (after talking to it)."""
        rows = json.loads(sh("ip", "-n", self.ns, "-j", "neigh", "show", ip))
        for row in rows:
            if row.get("lladdr"):
                return str(row["lladdr"]).lower()
        return None


def make_moving_lan() -> MovingLan:
    tag = f"{os.getpid() % 10000}r{next(_counter)}"
    lan = MovingLan(f"oat{tag}", f"oatns{tag}")
    try:
        sh("ip", "netns", "add", lan.ns)
        sh("ip", "link", "add", lan.parent, "type", "veth", "peer", "name", lan.peer)
        sh("ip", "link", "set", lan.peer, "netns", lan.ns)
        sh("ip", "-n", lan.ns, "link", "set", "lo", "up")
        sh("ip", "-n", lan.ns, "link", "set", lan.peer, "up")
        sh("ip", "link", "set", lan.parent, "up")
    except subprocess.CalledProcessError:
        remove_moving_lan(lan)
        raise
    return lan


def remove_moving_lan(lan: MovingLan) -> None:
    # Deleting the veth takes its addresses and its default route with it.
    subprocess.run(["ip", "link", "del", lan.parent], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", lan.ns], capture_output=True, check=False)
