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

from services.executor.dhcp import netns

log = logging.getLogger(__name__)


class MacFixUnavailable(Exception):
    pass


def _set_macs(wanted: list[tuple[str, str]], pid: int) -> list[tuple[str, str]]:
    changed = []
    with netns._iproute()() as ipr:
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
    if pid <= 0:
        raise MacFixUnavailable(f"network namespace of pid {pid} is not visible here")
    try:
        return netns.run_in_netns(path, lambda: _set_macs(wanted, pid))
    except netns.NetnsError as exc:
        raise MacFixUnavailable(f"setting MACs in {path} failed: {exc}") from exc
