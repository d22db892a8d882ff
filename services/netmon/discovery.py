"""Full discovery: dump links, IPv4 addresses and IPv4 routes and derive the state.

Dumps rather than per-interface queries: an interface that vanishes between two
requests then costs nothing (its addresses and routes are dropped by ``build_state``),
where a per-index ``get`` would fail with ENODEV half way through.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from socket import AF_INET
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from services.netmon.model import (
    RT_TABLE_MAIN,
    AddrRecord,
    Iface,
    LinkRecord,
    RouteRecord,
    build_state,
    utc_now_iso,
)

log = logging.getLogger(__name__)

# A dump can be interrupted by concurrent changes (NLM_F_DUMP_INTR surfaces as EINTR or
# EBUSY in pyroute2); another attempt usually succeeds at once.
_RETRYABLE = {errno.EINTR, errno.EBUSY, errno.EAGAIN, errno.ENODEV}
_ATTEMPTS = 4


class DiscoveryError(Exception):
    """Netlink could not be queried (after retries)."""


def link_record(msg: Any) -> LinkRecord | None:
    name = msg.get("ifname")
    if not name:
        return None
    return LinkRecord(
        index=int(msg["index"]),
        name=str(name),
        operstate=str(msg.get("operstate") or "UNKNOWN"),
        flags=int(msg["flags"]),
        mac_address=msg.get("address"),
    )


def addr_record(msg: Any) -> AddrRecord | None:
    if msg["family"] != AF_INET:
        return None
    # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
    # point-to-point links and equals IFA_LOCAL elsewhere.
    address = msg.get("local") or msg.get("address")
    if not address:
        return None
    return AddrRecord(
        index=int(msg["index"]), address=str(address), prefixlen=int(msg["prefixlen"])
    )


def is_main_default_route(msg: Any) -> bool:
    # RTA_TABLE carries tables above 255; the header field is the fallback.
    table = msg.get("table") or msg["table"]
    return bool(
        msg["family"] == AF_INET and msg["dst_len"] == 0 and table == RT_TABLE_MAIN
    )


def route_records(msg: Any) -> list[RouteRecord]:
    """Default routes of the main table, one record per nexthop; others give []."""
    if not is_main_default_route(msg):
        return []
    priority = int(msg.get("priority") or 0)
    multipath = msg.get("multipath")
    if multipath:
        return [
            RouteRecord(
                oif=int(nh["oif"]), gateway=nh.get("gateway"), priority=priority
            )
            for nh in multipath
        ]
    oif = msg.get("oif")
    if oif is None:
        return []
    return [RouteRecord(oif=int(oif), gateway=msg.get("gateway"), priority=priority)]


class Discovery:
    """Owns the query socket (separate from the event socket, so dump replies and
    multicast events never share a receive buffer)."""

    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns
        self._ipr: AsyncIPRoute | None = None

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def snapshot(self) -> dict[int, Iface]:
        last: BaseException | None = None
        for attempt in range(_ATTEMPTS):
            try:
                return await self._snapshot_once()
            except (NetlinkError, OSError) as exc:
                last = exc
                code = getattr(exc, "code", None) or getattr(exc, "errno", None)
                log.debug("discovery attempt %d failed: %s", attempt + 1, exc)
                # A socket in an unknown state is not worth keeping.
                self.close()
                if code not in _RETRYABLE:
                    break
                await asyncio.sleep(0.05 * (attempt + 1))
        raise DiscoveryError(f"netlink discovery failed: {last}") from last

    async def _snapshot_once(self) -> dict[int, Iface]:
        if self._ipr is None:
            self._ipr = (
                AsyncIPRoute(netns=self._netns) if self._netns else AsyncIPRoute()
            )
        ipr = self._ipr
        links = [
            r async for m in await ipr.link("dump") if (r := link_record(m)) is not None
        ]
        addrs = [
            a
            async for m in await ipr.addr("dump", family=AF_INET)
            if (a := addr_record(m)) is not None
        ]
        routes = [
            r
            async for m in await ipr.route("dump", family=AF_INET)
            for r in route_records(m)
        ]
        return build_state(links, addrs, routes, utc_now_iso())
