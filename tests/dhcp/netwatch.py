"""Every IPv4 address that appears in any network namespace the engine makes, from the
namespace's first moment.

The engine makes a container's namespace at each start and bind-mounts it under
`/var/run/docker/netns/` *before* it moves the MACVLAN interface in and puts its address
on it.  `NetnsWatch` notices each new file within a millisecond, enters the namespace in a
thread of its own, subscribes to its address events (RTM_NEWADDR) and dumps what is there
already, so an address is recorded even when it lived only for a few milliseconds.
Read-only: it changes nothing in the namespaces it watches.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import select
import socket
import struct
import threading
import time

ENGINE_NETNS = "/var/run/docker/netns"
CLONE_NEWNET = 0x40000000
RTMGRP_IPV4_IFADDR = 0x10
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
POLL = 0.0005


def _addresses(data: bytes) -> list[str]:
    """The `addr/prefixlen` of each RTM_NEWADDR (IPv4) message in a netlink datagram."""
    found, offset = [], 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == RTM_NEWADDR:
            family, prefixlen = struct.unpack_from("=BB", data, offset + 16)
            at, end = offset + 24, offset + length
            while family == socket.AF_INET and at + 4 <= end:
                alen, atype = struct.unpack_from("=HH", data, at)
                if alen < 4:
                    break
                if atype in (IFA_ADDRESS, IFA_LOCAL) and alen >= 8:
                    found.append(f"{socket.inet_ntoa(data[at + 4:at + 8])}/{prefixlen}")
                at += (alen + 3) & ~3
        offset += (length + 3) & ~3
    return found


class NetnsWatch:
    def __init__(self, root: str = ENGINE_NETNS) -> None:
        self.root = root
        self.known = set(os.listdir(root)) if os.path.isdir(root) else set()
        self.seen: dict[str, set[str]] = {}  # namespace file -> addresses ever seen
        self.lag: dict[str, float] = {}  # namespace file -> seconds from noticed to watched
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> NetnsWatch:
        thread = threading.Thread(target=self._scan, name="netns-scan", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def addresses_in(self, subnet: str) -> set[str]:
        net = ipaddress.IPv4Network(subnet)
        with self._lock:
            every = set().union(*self.seen.values()) if self.seen else set()
        return {a for a in every if ipaddress.IPv4Interface(a).ip in net}

    def _scan(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                for name in set(os.listdir(self.root)) - self.known:
                    self.known.add(name)
                    thread = threading.Thread(target=self._watch, args=(name, time.monotonic()),
                                              name=f"netns-{name}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
            time.sleep(POLL)

    def _enter(self, path: str, noticed: float) -> bool:
        libc = ctypes.CDLL(None, use_errno=True)
        while time.monotonic() - noticed < 2.0:  # the file exists a moment before its mount
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return False
            try:
                if libc.setns(fd, CLONE_NEWNET) == 0:
                    return True
            finally:
                os.close(fd)
            time.sleep(0.0001)
        return False

    def _watch(self, name: str, noticed: float) -> None:
        path = os.path.join(self.root, name)
        if not self._enter(path, noticed):
            return
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.bind((0, RTMGRP_IPV4_IFADDR))
            # Subscribed first, then the dump: nothing can fall between the two.
            request = struct.pack("=IHHII", 28, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
            sock.send(request + struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0))
            with self._lock:
                self.seen.setdefault(name, set())
                self.lag[name] = time.monotonic() - noticed
            while not self._stop.is_set() and os.path.exists(path):
                ready, _, _ = select.select([sock], [], [], 0.05)
                if ready:
                    found = _addresses(sock.recv(65536))
                    with self._lock:
                        self.seen[name].update(found)
        finally:
            sock.close()
