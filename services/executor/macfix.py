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

import logging
import os

log = logging.getLogger(__name__)


class MacFixUnavailable(Exception):
    pass


def apply(pid: int, wanted: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Set each (ip, mac) on the interface holding `ip` in the netns of `pid`.

    Blocking.  Returns the pairs that were changed.
    """
    from pyroute2 import NetNS

    path = f"/proc/{pid}/ns/net"
    if pid <= 0 or not os.path.exists(path):
        raise MacFixUnavailable(f"network namespace of pid {pid} is not visible here")
    changed = []
    ns = NetNS(path)
    try:
        for ip, mac in wanted:
            addrs = ns.get_addr(family=2, address=ip)
            if not addrs:
                log.warning("no interface holds %s in the container (pid %d)", ip, pid)
                continue
            index = addrs[0]["index"]
            link = ns.get_links(index)[0]
            if link.get_attr("IFLA_ADDRESS") == mac:
                continue
            ns.link("set", index=index, address=mac)
            changed.append((ip, mac))
    finally:
        ns.close()
    return changed
