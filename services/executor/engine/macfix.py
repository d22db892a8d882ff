"""Requested MACs on engines whose API cannot set a MAC per network (before API 1.44).

Such an engine takes a MAC only for the container's primary network (the one named at
creation).  `create.py` therefore makes the first MACVLAN vNIC the primary network there,
which gives it its MAC natively and across reboots.  Any further vNIC gets its MAC here,
set live on the interface inside the container's network namespace (a MACVLAN link
accepts a new address while up, and its routes stay), found by its IPv4 address.  The
engine re-creates interfaces on every start, so the live view calls this again whenever
a runtime (re)starts.

The work is three interface ioctls on one socket made inside the namespace (list the
IPv4 addresses, read a hardware address, set one): well under a millisecond, where a
netlink library session cost several milliseconds of CPU per runtime and, for a move of
twenty, held the engine's thread pool while the connects waited.  The kernel takes the
same path for both (`dev_set_mac_address`).

It needs the container's namespace: available when the agent runs on the host or shares
the host's PID namespace.  Otherwise the vNIC keeps the engine's MAC and a warning says so.
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import logging
import socket
import struct

from services.executor.dhcp import netns

log = logging.getLogger(__name__)

SIOCGIFCONF = 0x8912
SIOCGIFHWADDR = 0x8927
SIOCSIFHWADDR = 0x8924
ARPHRD_ETHER = 1
IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux: 16 bytes of name, a 24-byte union
MAX_ADDRESSES = 64


class MacFixUnavailable(Exception):
    pass


def _ipv4_interfaces(sock: socket.socket) -> dict[str, str]:
    """IPv4 address → interface name, for every address in the socket's namespace."""
    buf = array.array("B", bytes(IFREQ_SIZE * MAX_ADDRESSES))
    address, _ = buf.buffer_info()
    request = struct.pack("iL", len(buf), address)
    length, _ = struct.unpack("iL", fcntl.ioctl(sock.fileno(), SIOCGIFCONF, request))
    raw = buf.tobytes()
    found = {}
    for offset in range(0, length, IFREQ_SIZE):
        name = raw[offset:offset + 16].split(b"\0", 1)[0].decode()
        # An alias label ("eth1:0") names its interface before the colon.
        found[socket.inet_ntoa(raw[offset + 20:offset + 24])] = name.split(":", 1)[0]
    return found


def _hwaddr(sock: socket.socket, name: str) -> str:
    answer = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, struct.pack("16s24x", name.encode()))
    return ":".join(f"{b:02x}" for b in answer[18:24])


def _set_hwaddr(sock: socket.socket, name: str, mac: str) -> None:
    octets = bytes(int(part, 16) for part in mac.split(":"))
    fcntl.ioctl(sock.fileno(), SIOCSIFHWADDR,
                struct.pack("16sH6s16x", name.encode(), ARPHRD_ETHER, octets))


def _set_macs(wanted: list[tuple[str, str]], pid: int) -> list[tuple[str, str]]:
    changed = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        holders = _ipv4_interfaces(sock)
        for ip, mac in wanted:
            name = holders.get(ip)
            if name is None:
                log.warning("no interface holds %s in the container (pid %d)", ip, pid)
                continue
            if _hwaddr(sock, name) == mac.lower():
                continue
            _set_hwaddr(sock, name, mac)
            changed.append((ip, mac))
    return changed


def _set_in(subnet: str, mac: str, pid: int) -> tuple[str, str] | None:
    network = ipaddress.IPv4Network(subnet, strict=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        found = {(ip, name) for ip, name in _ipv4_interfaces(sock).items()
                 if ipaddress.IPv4Address(ip) in network}
        if len({name for _ip, name in found}) != 1:
            log.debug("%d interfaces on %s in the container (pid %d): MAC left to the "
                      "address-based fix", len(found), subnet, pid)
            return None
        ((ip, name),) = sorted(found)[:1]
        before = _hwaddr(sock, name)
        if before != mac.lower():
            _set_hwaddr(sock, name, mac)
        return ip, before


def apply_in(pid: int, subnet: str, mac: str) -> tuple[str, str] | None:
    """Set `mac` on the one interface with an IPv4 address in `subnet` (a network or a
    single address) in the netns of `pid`, right after the engine connected it and
    before anything has told its address: (its address, the MAC it had), or None when
    no interface or more than one is there (then `apply` does it by address).

    Blocking; the same thread-per-namespace way as `apply`."""
    path = f"/proc/{pid}/ns/net"
    if pid <= 0:
        raise MacFixUnavailable(f"network namespace of pid {pid} is not visible here")
    try:
        return netns.run_in_netns(path, lambda: _set_in(subnet, mac, pid))
    except netns.NetnsError as exc:
        raise MacFixUnavailable(f"setting the MAC in {path} failed: {exc}") from exc


def apply(pid: int, wanted: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Set each (ip, mac) on the interface holding `ip` in the netns of `pid`.

    Blocking.  Returns the pairs that were changed.  The work runs in a thread of its own
    that enters the container's namespace (`setns` moves only the calling thread) and
    ends with it, so no other thread ever runs in a foreign namespace; nothing forks.
    """
    path = f"/proc/{pid}/ns/net"
    if pid <= 0:
        raise MacFixUnavailable(f"network namespace of pid {pid} is not visible here")
    try:
        return netns.run_in_netns(path, lambda: _set_macs(wanted, pid))
    except netns.NetnsError as exc:
        raise MacFixUnavailable(f"setting MACs in {path} failed: {exc}") from exc
