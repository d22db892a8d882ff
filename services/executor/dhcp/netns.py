"""Work inside a runtime's network namespace, from the host, with nothing in its image.

`setns(2)` moves only the calling thread, so each piece of work runs in a short thread of
its own that enters the namespace and ends with it: no other thread ever runs in a
foreign namespace, nothing forks.  A socket keeps the namespace it was created in, so the
DHCP socket made here is then used from the keeper's loop like any other socket.

The interface is found by its MAC (the vNIC's stable MAC), never by name or index: the
engine re-creates it at every start and may name it differently after a re-homing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from services.executor.dhcp import packet

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
AF_INET = 2
JOIN_TIMEOUT = 10.0
RESOLV_HEADER = "# Written by the orchestrator agent from the vNIC's DHCP lease.\n"
T = TypeVar("T")


class NetnsError(Exception):
    """The namespace or the interface could not be reached or changed."""


def _iproute() -> Any:
    # pyroute2 resets its logger's level on import; keep the configured one.
    logger = logging.getLogger("pyroute2")
    level = logger.level
    from pyroute2 import IPRoute

    logger.setLevel(level)
    return IPRoute


def run_in_netns(netns: str | None, work: Callable[[], T], timeout: float = JOIN_TIMEOUT) -> T:
    """Run `work()` in a thread that has entered the namespace at path `netns` (or in
    the process's own namespace when None)."""
    if netns is not None and not os.path.exists(netns):
        raise NetnsError(f"network namespace {netns} is not visible here")
    outcome: dict[str, Any] = {}

    def worker() -> None:
        try:
            if netns is not None:
                _enter(netns)
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=worker, name="dhcp-netns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise NetnsError(f"work in {netns} did not finish in {timeout:g} s")
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, NetnsError):
            raise error
        raise NetnsError(f"in {netns}: {error}") from error
    value: T = outcome["value"]
    return value


def _enter(netns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"cannot enter {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


class PrivateLink:
    """A MACVLAN link on a LAN's parent interface, alone in a network namespace of its
    own that nothing else uses: a DHCP client can lease through it with the vNIC's MAC
    before the runtime's own interface exists.  The namespace lives as long as `fd`."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name

    @property
    def path(self) -> str:
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def close(self) -> None:
        """Delete the link now (so its MAC is free on the parent at once; the kernel
        removes a dropped namespace's links only later), then drop the namespace."""
        if self.fd < 0:
            return

        def work() -> None:
            with _iproute()() as ipr:
                for index in ipr.link_lookup(ifname=self.name):
                    ipr.link("del", index=index)

        try:
            run_in_netns(self.path, work)
        except NetnsError as exc:
            log.warning("temporary DHCP link %s not deleted: %s", self.name, exc)
        finally:
            os.close(self.fd)
            self.fd = -1


def private_macvlan(parent: str, mac: str, host_netns: str | None) -> PrivateLink:
    """Make a MACVLAN (bridge mode, like the engine's) with `mac` on `parent` in
    `host_netns` (None: ours) and move it into a fresh namespace; no address on it."""
    name = f"oatdh{os.urandom(4).hex()}"

    def work() -> PrivateLink:
        libc = ctypes.CDLL(None, use_errno=True)
        with _iproute()() as ipr:
            found = ipr.link_lookup(ifname=parent)
            if not found:
                raise NetnsError(f"parent interface {parent} not found")
            ipr.link("add", ifname=name, kind="macvlan", link=found[0],
                     macvlan_mode="bridge", address=mac)
            try:
                # Only this thread moves to the new namespace; `ipr` stays in the old one.
                if libc.unshare(CLONE_NEWNET) != 0:
                    raise NetnsError(f"unshare: {os.strerror(ctypes.get_errno())}")
                fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
                try:
                    ipr.link("set", index=ipr.link_lookup(ifname=name)[0], net_ns_fd=fd)
                except BaseException:
                    os.close(fd)
                    raise
            except BaseException:
                with contextlib.suppress(Exception):
                    ipr.link("del", ifname=name)
                raise
        return PrivateLink(fd, name)

    return run_in_netns(host_netns, work)


def _link(ipr: Any, mac: str) -> tuple[int, str]:
    for link in ipr.get_links():
        if str(link.get_attr("IFLA_ADDRESS") or "").lower() == mac.lower():
            return int(link["index"]), str(link.get_attr("IFLA_IFNAME"))
    raise NetnsError(f"no interface with MAC {mac}")


def open_socket(netns: str, mac: str) -> tuple[socket.socket, str]:
    """A non-blocking UDP socket on port 68 bound to the interface with `mac` inside
    `netns` (with SO_BINDTODEVICE, so several vNICs of one namespace never see each
    other's replies), and the interface's name."""

    def work() -> tuple[socket.socket, str]:
        with _iproute()() as ipr:
            _index, name = _link(ipr, mac)
            ipr.link("set", index=_index, state="up")
        return _client_socket(name), name

    return run_in_netns(netns, work)


def _client_socket(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, name.encode() + b"\0")
        sock.bind(("0.0.0.0", packet.CLIENT_PORT))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def relay_socket(interface: str, netns: str | None = None) -> socket.socket:
    """The client socket on `interface` of the host's namespace (`netns`; None: this
    process's own): for a vNIC behind a wireless parent, whose broadcasts the host does
    not forward.  Every such socket on one parent gets every broadcast reply; each client
    keeps its own (xid and MAC)."""
    if netns is None:
        return _client_socket(interface)
    return run_in_netns(netns, lambda: _client_socket(interface))


@dataclass(frozen=True)
class Addressing:
    """What a lease puts on an interface."""

    ip: str
    prefixlen: int
    router: str | None
    metric: int = 0


def _v4_addrs(ipr: Any, index: int) -> list[tuple[str, int]]:
    return [(str(a.get_attr("IFA_ADDRESS")), int(a["prefixlen"]))
            for a in ipr.get_addr(family=AF_INET, index=index)]


def _default_routes(ipr: Any, index: int) -> list[Any]:
    return [r for r in ipr.get_routes(family=AF_INET, table=254)
            if r["dst_len"] == 0 and r.get_attr("RTA_OIF") == index]


def current(netns: str, mac: str) -> list[tuple[str, int]]:
    """The IPv4 addresses (ip, prefixlen) the interface with `mac` carries now."""

    def work() -> list[tuple[str, int]]:
        with _iproute()() as ipr:
            index, _name = _link(ipr, mac)
            return _v4_addrs(ipr, index)

    return run_in_netns(netns, work)


def apply(netns: str, mac: str, want: Addressing | None) -> list[str]:
    """Make the interface carry exactly `want` (or no IPv4 address at all when None).

    Every other IPv4 address on it goes — the engine's IPAM address first of all — and
    with it every default route through it; then the leased address is added and the
    default route set via the leased router.  Returns what was changed, for the log.
    """

    def work() -> list[str]:
        changed: list[str] = []
        with _iproute()() as ipr:
            index, name = _link(ipr, mac)
            keep = (want.ip, want.prefixlen) if want else None
            for route in _default_routes(ipr, index):
                gateway = route.get_attr("RTA_GATEWAY")
                if want is None or gateway != want.router:
                    with contextlib.suppress(Exception):
                        ipr.route("del", dst="0.0.0.0/0", gateway=gateway, oif=index,
                                  priority=route.get_attr("RTA_PRIORITY") or 0)
                        changed.append(f"route default via {gateway} removed")
            for ip, plen in _v4_addrs(ipr, index):
                if (ip, plen) != keep:
                    ipr.addr("del", index=index, address=ip, prefixlen=plen)
                    changed.append(f"{ip}/{plen} removed from {name}")
            if want is None:
                return changed
            if keep not in _v4_addrs(ipr, index):
                net = ipaddress.IPv4Network(f"{want.ip}/{want.prefixlen}", strict=False)
                ipr.addr("add", index=index, address=want.ip, prefixlen=want.prefixlen,
                         broadcast=str(net.broadcast_address))
                changed.append(f"{want.ip}/{want.prefixlen} added to {name}")
            if want.router and not any(r.get_attr("RTA_GATEWAY") == want.router
                                       for r in _default_routes(ipr, index)):
                try:
                    ipr.route("add", dst="0.0.0.0/0", gateway=want.router, oif=index,
                              priority=want.metric)
                    changed.append(f"route default via {want.router} dev {name}")
                except Exception as exc:  # another interface holds the default route
                    log.warning("no default route via %s on %s: %s", want.router, name, exc)
        return changed

    return run_in_netns(netns, work)


def write_resolv(path: str, servers: list[str], search: str | None = None) -> bool:
    """Rewrite the runtime's resolv.conf with `servers`; False when there is nothing to
    write or the file is not there.

    Written in place (truncate and write), not by rename: the engine bind-mounts the
    file into the container, and a rename would only replace the host's directory entry.
    """
    if not servers or not os.path.isfile(path):
        return False
    lines = [RESOLV_HEADER]
    if search:
        lines.append(f"search {search}\n")
    lines.extend(f"nameserver {s}\n" for s in servers[:3])  # the resolver reads three
    text = "".join(lines)
    with open(path, "r+", encoding="utf-8") as handle:
        if handle.read() == text:
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return True
