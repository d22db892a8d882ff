"""vNICs on a wireless parent: a veth pair and proxy ARP instead of MACVLAN.

An access point drops frames whose source MAC did not associate with it, so a MACVLAN
sub-interface (its own MAC) cannot talk over WiFi.  IPvlan L2 would share the parent's MAC
but is not built into every kernel (it is optional, `CONFIG_IPVLAN`).  So, like the
original agent, such a vNIC is a veth pair, and the host routes for it:

* the runtime's end (`wf<hash>c`, carrying the vNIC's stable MAC) holds the vNIC's address
  and its default route; its own subnet is routed through the gateway, so it asks ARP for
  the gateway only;
* the host's end (`wf<hash>`) answers ARP for the gateway (one proxy neighbour entry: no
  `proxy_arp` setting, which needs a writable /proc/sys) and carries a /32 route to the
  vNIC's address;
* the parent answers ARP for the vNIC's address on the LAN (one proxy neighbour entry,
  `ip neigh add proxy <ip> dev <parent>`: only that address, the parent's own settings
  stay as they are), so the LAN sees the parent's MAC for it;
* the engine's `DOCKER-USER` chain accepts what is forwarded through the host's end (the
  engine sets the forward policy to drop).

Everything on the host's side (the host's end, the parent's proxy entries, the /32
routes, the rules, the sysfs look-up) happens in the host's network namespace, through
`host: HostNetns` (`net/hostns.py`): the executor's own on the host, the engine's from the
agent container.  The runtime's side is entered through `/proc/<pid>/ns/net`.

Everything here is blocking (netlink, `iptables`): run it in a worker thread.  Nothing but
the pair, the routes and proxy entries for it and the two rules made here is ever
changed; removal takes exactly those.  Nothing here writes /proc/sys.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from services.executor.dhcp import netns
from services.executor.net.hostns import OWN, SYSFS, HostNetns

log = logging.getLogger(__name__)

NTF_PROXY = 0x08
RULE_CHAIN = "DOCKER-USER"
IPTABLES_TIMEOUT = 10.0


def network_name(parent: str, vnic: str) -> str:
    """How status names the vNIC's link, as the original does: `wifi_<parent>_<vnic>`."""
    return f"wifi_{parent}_{vnic}"


def is_wifi_network(name: str | None) -> bool:
    return bool(name) and str(name).startswith("wifi_")


def is_wireless(name: str, forced: Iterable[str] = (), sysfs: Path = SYSFS) -> bool:
    """True for an interface the kernel reports as wireless (cfg80211 puts `phy80211`,
    the older wireless extensions `wireless`, in its sysfs directory), or one the
    configuration lists (`ORCH_WIRELESS_INTERFACES`)."""
    if name in set(forced):
        return True
    base = sysfs / name
    return (base / "phy80211").exists() or (base / "wireless").exists()


def forced_list(text: str) -> frozenset[str]:
    """`ORCH_WIRELESS_INTERFACES`: names separated by commas or spaces."""
    return frozenset(p for p in text.replace(",", " ").split() if p)


def host_end(device: str, vnic: str) -> str:
    """The host end's name: stable per (runtime, vNIC), short enough for IFNAMSIZ, and not
    `veth*` (the network monitor leaves those out, and so should its reader)."""
    digest = hashlib.sha1(f"{device}/{vnic}".encode()).hexdigest()[:10]
    return f"wf{digest}"


@dataclass(frozen=True)
class WifiLink:
    """What one wireless vNIC needs on the host and in its runtime."""

    device: str
    vnic: str
    parent: str
    mac: str
    ip: str | None  # None: a dhcp vNIC whose lease is not known yet
    prefixlen: int
    gateway: str | None
    # The host's own address on the parent: the runtime's next hop to its subnet when the
    # vNIC has no gateway (the host answers ARP for its own addresses on every link).
    station: str | None = None

    @property
    def host(self) -> str:
        return host_end(self.device, self.vnic)

    @property
    def peer(self) -> str:
        return self.host + "c"


class WifiError(Exception):
    """The link could not be made or changed."""


# --- the runtime's side -----------------------------------------------------------------------


def _ns_path(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


def has_peer(pid: int, mac: str) -> bool:
    """Whether the runtime's namespace already holds an interface with the vNIC's MAC."""
    try:
        netns.current(_ns_path(pid), mac)
        return True
    except netns.NetnsError:
        return False


def _make_pair(link: WifiLink, pid: int) -> None:
    """In the host's namespace: the pair, its runtime end moved into the runtime's (by
    pid: the executor shares the host's PID namespace)."""
    ipr_class = netns._iproute()
    with ipr_class() as ipr:
        for stale in ipr.link_lookup(ifname=link.host):
            ipr.link("del", index=stale)  # a pair of an earlier process of this runtime
        ipr.link("add", ifname=link.host, kind="veth", peer=link.peer)
        (peer,) = ipr.link_lookup(ifname=link.peer)
        ipr.link("set", index=peer, address=link.mac)
        ipr.link("set", index=peer, net_ns_pid=pid)
        (index,) = ipr.link_lookup(ifname=link.host)
        ipr.link("set", index=index, state="up")


def plumb(link: WifiLink, pid: int, internal_ip: str | None = None,
          stale_gateways: Iterable[str] = (), hostns: HostNetns = OWN) -> bool:
    """Make the pair for the runtime's current process (unless it is there) and put the
    host's side in place.  True when a new pair was made."""
    made = False
    if not has_peer(pid, link.mac) or not exists(link.host, hostns):
        hostns.run(lambda: _make_pair(link, pid))
        made = True
    if link.gateway:
        gateway_proxy(link, link.gateway, stale_gateways, hostns)
    if link.ip is not None:
        address(link, pid, link.ip, link.prefixlen, link.gateway, internal_ip)
        host_side(link, link.ip, hostns=hostns)
    else:
        up(link, pid)  # no address until the lease
        take_default(link, pid, "the lease's router", internal_ip)
    allow_forwarding(link.host, hostns)
    return made


def up(link: WifiLink, pid: int) -> None:
    def work() -> None:
        with netns._iproute()() as ipr:
            index, _name = netns._link(ipr, link.mac)
            ipr.link("set", index=index, state="up")

    netns.run_in_netns(_ns_path(pid), work)


def address(link: WifiLink, pid: int, ip: str, prefixlen: int, gateway: str | None,
            internal_ip: str | None = None) -> None:
    """The vNIC's address and default route in the runtime, as a lease would be applied."""
    up(link, pid)
    if gateway:
        take_default(link, pid, gateway, internal_ip)
    netns.apply(_ns_path(pid), link.mac, netns.Addressing(ip, prefixlen, gateway))
    hop = gateway or link.station
    if hop and hop != ip:
        via_gateway(_ns_path(pid), link.mac, ip, prefixlen, hop)


def via_gateway(ns: str, mac: str, ip: str, prefixlen: int, gateway: str) -> None:
    """In the runtime: the vNIC's own subnet is reached through the gateway, not on the
    link (the kernel's prefix route is replaced; the gateway itself is on the link).  So
    the runtime asks ARP for the gateway only, which the host's end answers from one
    proxy entry: no `proxy_arp` setting, which would need a writable /proc/sys."""
    subnet = ipaddress.IPv4Network(f"{ip}/{prefixlen}", strict=False)

    def work() -> None:
        with netns._iproute()() as ipr:
            index = netns._link(ipr, mac)[0]
            ipr.route("replace", dst=f"{gateway}/32", oif=index, scope=253)
            if subnet.prefixlen < 32:
                ipr.route("replace", dst=str(subnet), oif=index, gateway=gateway,
                          prefsrc=ip)

    netns.run_in_netns(ns, work)


def gateway_proxy(link: WifiLink, gateway: str, stale: Iterable[str] = (),
                  hostns: HostNetns = OWN) -> None:
    """The host's end answers ARP for the gateway (one proxy neighbour entry; the kernel
    answers for it while forwarding is on): every packet of the runtime goes to the host,
    which routes it to the LAN.  The entries for `stale` gateways (a LAN that moved, a
    lease with another router) go."""
    stale = list(stale)

    def work() -> None:
        with netns._iproute()() as ipr:
            host = ipr.link_lookup(ifname=link.host)
            if not host:
                raise WifiError(f"interface {link.host} is missing")
            for old in stale:
                if old != gateway:
                    _unproxy(ipr, host[0], old)
            _proxy(ipr, gateway, host[0])

    hostns.run(work)


def _proxy(ipr: object, ip: str, index: int) -> None:
    try:
        ipr.neigh("add", dst=ip, ifindex=index, flags=NTF_PROXY)  # type: ignore[attr-defined]
    except Exception as exc:  # already there
        if "exists" not in str(exc).lower():
            raise


def take_default(link: WifiLink, pid: int, gateway: str, internal_ip: str | None) -> None:
    """Drop a default route through the runtime's internal bridge: the engine gives one
    when that bridge is the container's first network (as it is when the only LAN vNIC is
    a wireless one), and it leads nowhere (the bridge is internal).  A default route
    through another LAN vNIC is left alone."""
    if not internal_ip:
        return

    def work() -> None:
        with netns._iproute()() as ipr:
            own = netns._link(ipr, link.mac)[0]
            internal = {int(a["index"]) for a in ipr.get_addr(family=2)
                        if a.get_attr("IFA_ADDRESS") == internal_ip}
            for route in ipr.get_routes(family=2, table=254):
                oif = route.get_attr("RTA_OIF")
                if route["dst_len"] == 0 and oif in internal and oif != own:
                    ipr.route("del", dst="0.0.0.0/0", oif=oif,
                              gateway=route.get_attr("RTA_GATEWAY"),
                              priority=route.get_attr("RTA_PRIORITY") or 0)
                    log.info("default route of %s moved from the internal bridge to %s",
                             link.device, gateway)

    netns.run_in_netns(_ns_path(pid), work)


# --- the host's side --------------------------------------------------------------------------


def host_side(link: WifiLink, ip: str, old_ip: str | None = None,
              hostns: HostNetns = OWN) -> None:
    """The /32 route to the vNIC and the parent's proxy entry for it (and, for a changed
    address, without the old one's)."""

    def work() -> None:
        with netns._iproute()() as ipr:
            host = ipr.link_lookup(ifname=link.host)
            parent = ipr.link_lookup(ifname=link.parent)
            if not host or not parent:
                raise WifiError(
                    f"interface {link.host if not host else link.parent} is missing")
            if old_ip and old_ip != ip:
                _unproxy(ipr, parent[0], old_ip)
            ipr.route("replace", dst=f"{ip}/32", oif=host[0], scope=253)
            _proxy(ipr, ip, parent[0])

    hostns.run(work)


def _unproxy(ipr: object, parent_index: int, ip: str) -> None:
    with contextlib.suppress(Exception):
        ipr.neigh("del", dst=ip, ifindex=parent_index, flags=NTF_PROXY)  # type: ignore[attr-defined]


def drop_addresses(link: WifiLink, ips: Iterable[str], hostns: HostNetns = OWN) -> None:
    """Drop the parent's proxy entries and the host's /32 routes for `ips` (addresses the
    vNIC no longer has: a lease that moved on, re-homing)."""
    ips = list(ips)

    def work() -> None:
        with netns._iproute()() as ipr:
            parents = ipr.link_lookup(ifname=link.parent)
            hosts = ipr.link_lookup(ifname=link.host)
            for ip in ips:
                for parent in parents:
                    _unproxy(ipr, parent, ip)
                for index in hosts:
                    with contextlib.suppress(Exception):  # gone with an earlier pair
                        ipr.route("del", dst=f"{ip}/32", oif=index, scope=253)  # as added

    if ips:
        hostns.run(work)


def clear(link: WifiLink, pid: int) -> None:
    """No address (and no default route) on the runtime's end."""
    netns.apply(_ns_path(pid), link.mac, None)


def unplumb(link: WifiLink, ips: Iterable[str], hostns: HostNetns = OWN) -> None:
    """Remove the pair (its route goes with it), the parent's proxy entries for `ips`, and
    the forwarding rules.  Missing pieces are fine."""
    ips = list(ips)

    def work() -> None:
        with netns._iproute()() as ipr:
            for index in ipr.link_lookup(ifname=link.host):
                with contextlib.suppress(Exception):
                    ipr.link("del", index=index)
            for parent in ipr.link_lookup(ifname=link.parent):
                for ip in ips:
                    _unproxy(ipr, parent, ip)

    hostns.run(work)
    forbid_forwarding(link.host, hostns)


def valid_ip(ip: object) -> str | None:
    try:
        return str(ipaddress.IPv4Address(str(ip)))
    except ValueError:
        return None


# --- the engine's forward policy --------------------------------------------------------------


IPTABLES = ("iptables", "iptables-nft", "iptables-legacy")
# All the iptables calls of one allow or forbid, run together in the host's namespace.
RULES_TIMEOUT = 8 * IPTABLES_TIMEOUT


class ForwardingError(WifiError):
    """The link is in place, but its forwarding rules could not be added."""


def _binary() -> str | None:
    """The iptables program that sees the engine's user chain: `iptables`, or the other
    backend's when the engine uses that one (an image's default may differ from the
    host's); the first installed one when none sees it.  Call it in the host's namespace:
    that is where the chain is."""
    installed = [b for b in (shutil.which(n) for n in IPTABLES) if b]
    for binary in installed:
        if _run(binary, "-S", RULE_CHAIN) == 0:
            return binary
    return installed[0] if installed else None


def _run(binary: str, *args: str) -> int:
    """One iptables call; the child is born in the calling thread's network namespace
    (the host's, inside `HostNetns.run`)."""
    try:
        done = subprocess.run([binary, "-w", "5", *args], capture_output=True, text=True,
                              timeout=IPTABLES_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("%s %s failed: %s", binary, " ".join(args), exc)
        return -1
    if done.returncode != 0 and args[0] in ("-I", "-A"):
        log.warning("%s %s: %s", binary, " ".join(args), done.stderr.strip())
    return done.returncode


def _rules(name: str) -> list[list[str]]:
    return [["-i", name, "-j", "ACCEPT"], ["-o", name, "-j", "ACCEPT"]]


def allow_forwarding(name: str, hostns: HostNetns = OWN) -> None:
    """Accept traffic through `name` in the engine's user chain (when there is one: an
    engine without iptables management leaves the forward policy alone).  Without any
    iptables program nothing can be added: ForwardingError says so (the status shows it)."""

    def work() -> bool:
        binary = _binary()
        if binary is None:
            return False
        if _run(binary, "-S", RULE_CHAIN) != 0:
            return True
        for rule in _rules(name):
            if _run(binary, "-C", RULE_CHAIN, *rule) != 0:
                _run(binary, "-I", RULE_CHAIN, "1", *rule)
        return True

    if not hostns.run(work, RULES_TIMEOUT):
        raise ForwardingError(
            f"no iptables program here: the rules accepting forwarding through {name} "
            f"were not added, so the engine's forward policy (drop) may keep the LAN from "
            f"this vNIC; install iptables where the executor runs (the agent image: the "
            f"Debian package iptables), or let the host accept forwarding through wf+")


def forbid_forwarding(name: str, hostns: HostNetns = OWN) -> None:
    def work() -> None:
        binary = _binary()
        if binary is None:
            return
        for rule in _rules(name):
            for _attempt in range(4):  # bounded: a rule is only ever inserted once
                if _run(binary, "-D", RULE_CHAIN, *rule) != 0:
                    break

    hostns.run(work, RULES_TIMEOUT)


def forwarding_enabled(hostns: HostNetns = OWN) -> bool:
    """IPv4 forwarding in the host's namespace (/proc/sys/net shows the reading thread's
    namespace)."""

    def work() -> bool:
        with contextlib.suppress(OSError):
            return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
        return False

    return hostns.run(work)


def exists(name: str, hostns: HostNetns = OWN) -> bool:
    """Whether the host's namespace has an interface called `name`: in the host's sysfs,
    or by netlink there when its sysfs could not be opened."""
    if hostns.own or hostns.sysfs_fd is not None:
        return (hostns.sysfs / name).exists()

    def work() -> bool:
        with netns._iproute()() as ipr:
            return bool(ipr.link_lookup(ifname=name))

    return hostns.run(work)
