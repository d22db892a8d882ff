"""Netlink work for dedicated NICs: pin a runtime's namespace, move a NIC in and out.

The pin: `/proc/<pid>/ns/net` of the runtime bind-mounted on a file of the executor's
run directory (one per interface).  It keeps the namespace alive after the container's
last process ends, which matters because when a namespace is destroyed a physical NIC
falls back to the initial namespace but a veth end, a VLAN or a MACVLAN is destroyed
with it, and nothing would restore the host's addresses or up state either.  With the
pin the executor moves the NIC back itself, then unmounts.  A bind mount outlives the
executor process (an open descriptor would not), so a `kill -9` leaves the pin and the
NIC where they were, and the restarted executor finds both (`locate`).

Every function is blocking and meant for a worker thread; work inside a namespace goes
through `dhcp.netns.run_in_netns` (a thread of its own that enters the namespace).  The
host's namespace is given by the caller as a path (`net/hostns.py`, `ns_file`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Any

from services.executor.dhcp.netns import AF_INET, NetnsError, _iproute, run_in_netns

log = logging.getLogger(__name__)

MS_BIND = 0x1000
MNT_DETACH = 0x2
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_PROMISC = 0x100


class DedicatedError(Exception):
    """The NIC could not be moved or configured."""


# --- the pin ---------------------------------------------------------------------------------


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def pinned_ino(ref: str) -> int | None:
    """The namespace inode the pin at `ref` holds, None when nothing is mounted there."""
    try:
        if not os.path.ismount(ref):
            return None
        return os.stat(ref).st_ino
    except OSError:
        return None


def ns_ino(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def pin(pid: int, ref: str) -> int:
    """Bind-mount the network namespace of `pid` at `ref`; its inode."""
    unpin(ref)
    os.makedirs(os.path.dirname(ref), mode=0o700, exist_ok=True)
    if not os.path.exists(ref):
        with open(ref, "w"):
            pass
    source = f"/proc/{pid}/ns/net"
    if _libc().mount(source.encode(), ref.encode(), None, MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise DedicatedError(f"cannot pin the namespace of process {pid}: {os.strerror(err)}")
    ino = pinned_ino(ref)
    if ino is None or ino != ns_ino(pid):
        unpin(ref)
        raise DedicatedError(f"the namespace of process {pid} went away while pinning it")
    return ino


def unpin(ref: str) -> None:
    """Release the pin at `ref` (idempotent); the namespace ends with its last user."""
    for _ in range(4):  # stacked mounts after a crash between pin steps
        if pinned_ino(ref) is None:
            break
        if _libc().umount2(ref.encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            raise DedicatedError(f"cannot release {ref}: {os.strerror(err)}")
    with contextlib.suppress(OSError):
        os.unlink(ref)


# --- where the NIC is --------------------------------------------------------------------


@dataclass
class HostFacts:
    """What the host's side knew of the NIC before it moved in (restored on return)."""

    was_up: bool
    mac_address: str | None
    addresses: list[tuple[str, int]]


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def in_netns(netns: str, name: str) -> bool:
    """True when the namespace at `netns` has an interface called `name`."""

    def work() -> bool:
        with _iproute()() as ipr:
            return _index(ipr, name) is not None

    try:
        return run_in_netns(netns, work)
    except NetnsError:
        return False


def host_facts(host: str, name: str) -> HostFacts:
    def work() -> HostFacts:
        with _iproute()() as ipr:
            index = _index(ipr, name)
            if index is None:
                raise DedicatedError(f"interface {name} does not exist on the host")
            link = ipr.get_links(index)[0]
            addrs = [(str(a.get_attr("IFA_ADDRESS")), int(a["prefixlen"]))
                     for a in ipr.get_addr(family=AF_INET, index=index)]
            return HostFacts(bool(link["flags"] & IFF_UP), link.get_attr("IFLA_ADDRESS"),
                             addrs)

    return run_in_netns(host, work)


def link_kind(host: str, name: str) -> tuple[str | None, bool, bool] | None:
    """(link kind, enslaved, loopback) of a host interface; None when it does not exist."""

    def work() -> tuple[str | None, bool, bool] | None:
        with _iproute()() as ipr:
            index = _index(ipr, name)
            if index is None:
                return None
            link = ipr.get_links(index)[0]
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            return kind, bool(link.get_attr("IFLA_MASTER")), bool(link["flags"] & IFF_LOOPBACK)

    return run_in_netns(host, work)


# --- moves -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Addressing:
    """What the executor puts on the NIC inside the runtime (None: up, no IPv4)."""

    ip: str | None
    prefixlen: int | None
    gateway: str | None


def move_in(host: str, name: str, ref: str) -> None:
    """Move the NIC from the host into the pinned namespace at `ref`."""
    fd = os.open(ref, os.O_RDONLY)

    def work() -> None:
        with _iproute()() as ipr:
            index = _index(ipr, name)
            if index is None:
                raise DedicatedError(f"interface {name} is not on the host")
            try:
                ipr.link("set", index=index, net_ns_fd=fd)
            except Exception as exc:  # NetlinkError: e.g. the name is taken in there
                raise DedicatedError(f"cannot move {name} into the runtime: {exc}") from None

    try:
        run_in_netns(host, work)
    finally:
        os.close(fd)


def configure(ref: str, name: str, want: Addressing) -> list[str]:
    """Inside the runtime: the NIC up and promiscuous (raw fieldbus traffic, so the
    runtime needs no NET_ADMIN), carrying `want`; idempotent.  What changed, for the log."""

    def work() -> list[str]:
        changed: list[str] = []
        with _iproute()() as ipr:
            index = _index(ipr, name)
            if index is None:
                raise DedicatedError(f"interface {name} is not in the runtime")
            link = ipr.get_links(index)[0]
            if not link["flags"] & IFF_UP or not link["flags"] & IFF_PROMISC:
                ipr.link("set", index=index, state="up", flags=IFF_UP | IFF_PROMISC,
                         mask=IFF_UP | IFF_PROMISC)
                changed.append(f"{name} up")
            if want.ip is None or want.prefixlen is None:
                return changed
            have = [(str(a.get_attr("IFA_ADDRESS")), int(a["prefixlen"]))
                    for a in ipr.get_addr(family=AF_INET, index=index)]
            if (want.ip, want.prefixlen) not in have:
                net = ipaddress.IPv4Network(f"{want.ip}/{want.prefixlen}", strict=False)
                ipr.addr("add", index=index, address=want.ip, prefixlen=want.prefixlen,
                         broadcast=str(net.broadcast_address))
                changed.append(f"{want.ip}/{want.prefixlen}")
            if want.gateway:
                defaults = [r for r in ipr.get_routes(family=AF_INET, table=254)
                            if r["dst_len"] == 0]
                if not defaults:  # a MACVLAN vNIC's default route is left alone
                    ipr.route("add", dst="0.0.0.0/0", gateway=want.gateway, oif=index)
                    changed.append(f"default via {want.gateway}")
        return changed

    return run_in_netns(ref, work)


def move_out(host_ns: str, ref: str, name: str) -> None:
    """Move the NIC from the pinned namespace at `ref` back to the host, down, not
    promiscuous, without the runtime's addresses."""
    host = os.open(host_ns, os.O_RDONLY)

    def work() -> None:
        with _iproute()() as ipr:
            index = _index(ipr, name)
            if index is None:
                raise DedicatedError(f"interface {name} is not in the pinned namespace")
            for a in ipr.get_addr(family=AF_INET, index=index):
                with contextlib.suppress(Exception):
                    ipr.addr("del", index=index, address=a.get_attr("IFA_ADDRESS"),
                             prefixlen=a["prefixlen"])
            ipr.link("set", index=index, state="down", flags=0, mask=IFF_UP | IFF_PROMISC)
            ipr.link("set", index=index, net_ns_fd=host)

    try:
        run_in_netns(ref, work)
    except NetnsError as exc:
        raise DedicatedError(str(exc)) from None
    finally:
        os.close(host)


def restore_host(host: str, name: str, facts: dict[str, Any]) -> None:
    """On the host again: the addresses it had before and its former up state."""

    def work() -> None:
        with _iproute()() as ipr:
            index = _index(ipr, name)
            if index is None:
                raise DedicatedError(f"interface {name} is not on the host")
            have = {(str(a.get_attr("IFA_ADDRESS")), int(a["prefixlen"]))
                    for a in ipr.get_addr(family=AF_INET, index=index)}
            for ip, plen in facts.get("addresses") or []:
                if (ip, plen) not in have:
                    with contextlib.suppress(Exception):
                        net = ipaddress.IPv4Network(f"{ip}/{plen}", strict=False)
                        ipr.addr("add", index=index, address=ip, prefixlen=plen,
                                 broadcast=str(net.broadcast_address))
            if facts.get("was_up"):
                ipr.link("set", index=index, state="up")

    run_in_netns(host, work)
