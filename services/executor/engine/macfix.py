"""Requested MACs on engines whose API cannot set a MAC per network (before API 1.44).

Such an engine takes a MAC only for the container's primary network (the one named at
creation).  `create.py` therefore makes the first MACVLAN vNIC the primary network there,
which gives it its MAC natively and across reboots.  Any further vNIC gets its MAC here,
set live on the interface inside the container's network namespace (a MACVLAN link
accepts a new address while up, and its routes stay), found by its IPv4 address.  The
engine re-creates interfaces on every start, so the live view calls this again whenever
a runtime (re)starts.

It needs the container's namespace: available when the agent runs on the host or shares
the host's PID namespace.  Otherwise the vNIC keeps the engine's MAC and a warning says so.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from typing import Any

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
JOIN_TIMEOUT = 10.0


class MacFixUnavailable(Exception):
    pass


def _iproute() -> Any:
    """pyroute2, imported on first use: it costs ~20 MB of memory, and most hosts never
    need this path.  Its import resets its logger's level, so the configured one is put
    back."""
    logger = logging.getLogger("pyroute2")
    level = logger.level
    from pyroute2 import IPRoute

    logger.setLevel(level)
    return IPRoute


def _set_macs(wanted: list[tuple[str, str]], pid: int) -> list[tuple[str, str]]:
    changed = []
    with _iproute()() as ipr:
        for ip, mac in wanted:
            addrs = ipr.get_addr(family=2, address=ip)
            if not addrs:
                log.warning("no interface holds %s in the container (pid %d)", ip, pid)
                continue
            index = addrs[0]["index"]
            link = ipr.get_links(index)[0]
            if link.get_attr("IFLA_ADDRESS") == mac:
                continue
            ipr.link("set", index=index, address=mac)
            changed.append((ip, mac))
    return changed


def apply(pid: int, wanted: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Set each (ip, mac) on the interface holding `ip` in the netns of `pid`.

    Blocking.  Returns the pairs that were changed.  The work runs in a thread of its own
    that enters the container's namespace (`setns` moves only the calling thread) and
    ends with it, so no other thread ever runs in a foreign namespace; nothing forks.
    """
    path = f"/proc/{pid}/ns/net"
    if pid <= 0 or not os.path.exists(path):
        raise MacFixUnavailable(f"network namespace of pid {pid} is not visible here")
    outcome: dict[str, Any] = {}

    def worker() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise MacFixUnavailable(f"cannot enter {path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            outcome["changed"] = _set_macs(wanted, pid)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=worker, name=f"macfix-{pid}", daemon=True)
    thread.start()
    thread.join(JOIN_TIMEOUT)
    if thread.is_alive():
        raise MacFixUnavailable(f"setting MACs in {path} did not finish in {JOIN_TIMEOUT:g} s")
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, MacFixUnavailable):
            raise error
        raise MacFixUnavailable(f"setting MACs in {path} failed: {error}") from error
    changed: list[tuple[str, str]] = outcome["changed"]
    return changed
