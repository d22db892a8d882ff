"""Netlink event watching and per-interface debouncing.

Events are only triggers. An event marks the interface it names as dirty; once that
interface has been quiet for ``debounce`` seconds (or ``max_delay`` after its first
pending event, so a flapping link still gets reported), a fresh full discovery is taken
and compared with what was last published for it. Only real differences are announced,
so a burst of changes becomes one event carrying the final state, and a change undone
within the window produces nothing.

Why a fresh discovery instead of applying event payloads: the kernel does not announce
every consequence (routes flushed with a downed link produce no RTM_DELROUTE), and after
a receive-buffer overrun (ENOBUFS) events are lost anyway. Re-reading the state is the
one mechanism that is right in all those cases; on an overrun every interface is marked
dirty and the event socket is reopened.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from socket import AF_INET
from typing import Any

from pyroute2 import AsyncIPRSocket
from pyroute2.netlink import rtnl
from pyroute2.netlink.exceptions import NetlinkError

from common.netmon_proto import is_virtual
from services.netmon.discovery import (
    Discovery,
    DiscoveryError,
    is_main_default_route,
    route_records,
)
from services.netmon.model import Iface, diff_state, utc_now_iso

log = logging.getLogger(__name__)

DEFAULT_DEBOUNCE = 3.0
EVENT_GROUPS = rtnl.RTMGRP_LINK | rtnl.RTMGRP_IPV4_IFADDR | rtnl.RTMGRP_IPV4_ROUTE
DEFAULT_RCVBUF = 1 << 20
_REOPEN_DELAY = 0.5
_DISCOVERY_RETRY = 1.0

# Pending key meaning "every interface": no real interface has index 0.
_ALL = 0

_LINK_EVENTS = {rtnl.RTM_NEWLINK, rtnl.RTM_DELLINK}
_ADDR_EVENTS = {rtnl.RTM_NEWADDR, rtnl.RTM_DELADDR}
_ROUTE_EVENTS = {rtnl.RTM_NEWROUTE, rtnl.RTM_DELROUTE}

ChangeSink = Callable[[Iface], None]


@dataclass
class _Pending:
    first: float
    last: float


class Monitor:
    """Keeps ``published`` (active interfaces by index, as last announced) in step
    with the kernel and calls ``on_change`` for every announced interface."""

    def __init__(
        self,
        on_change: ChangeSink,
        *,
        debounce: float = DEFAULT_DEBOUNCE,
        max_delay: float | None = None,
        netns: str | None = None,
        rcvbuf: int = DEFAULT_RCVBUF,
        discovery: Discovery | None = None,
    ) -> None:
        """``discovery``: the netlink queries to use (default: one for ``netns``)."""
        self._on_change = on_change
        self._debounce = debounce
        self._max_delay = max_delay if max_delay is not None else 4 * debounce
        self._netns = netns
        self._rcvbuf = rcvbuf
        self._discovery = discovery if discovery is not None else Discovery(netns)
        self.published: dict[int, Iface] = {}
        self._pending: dict[int, _Pending] = {}
        self._wake = asyncio.Event()
        self._events: AsyncIPRSocket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.counters: dict[str, int] = {
            "events": 0,
            "overruns": 0,
            "resyncs": 0,
            "changes": 0,
        }

    def interfaces(self) -> list[Iface]:
        return sorted(self.published.values(), key=lambda i: i.name)

    async def start(self) -> None:
        """Subscribe first, then take the initial discovery, so no change can fall
        between the two."""
        self._events = await self._open_events()
        try:
            state = await self._discovery.snapshot()
        except DiscoveryError:
            await self.stop()
            raise
        self.published = {i: s for i, s in state.items() if s.active}
        log.info(
            "initial discovery: %s",
            ", ".join(i.name for i in self.interfaces()) or "no active interfaces",
        )
        self._tasks = [
            asyncio.create_task(self._watch(), name="netmon-watch"),
            asyncio.create_task(self._flush_loop(), name="netmon-flush"),
        ]

    async def wait(self) -> None:
        """Raise once a monitoring task has ended, which only a bug can cause; the
        caller should then exit so that the container is restarted."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise RuntimeError("netlink monitoring stopped")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        # A task that already failed has been reported through wait().
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._events is not None:
            self._events.close()
            self._events = None
        self._discovery.close()

    async def _open_events(self) -> AsyncIPRSocket:
        kwargs: dict[str, Any] = {"rcvbuf": self._rcvbuf}
        if self._netns:
            kwargs["netns"] = self._netns
        sock = AsyncIPRSocket(**kwargs)
        try:
            await sock.bind(groups=EVENT_GROUPS)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _watch(self) -> None:
        while True:
            try:
                await self._read_events()
            except asyncio.CancelledError:
                raise
            except (OSError, NetlinkError) as exc:
                code = getattr(exc, "errno", None) or getattr(exc, "code", None)
                if code == errno.ENOBUFS:
                    self.counters["overruns"] += 1
                    log.warning(
                        "netlink receive buffer overrun; re-reading all interfaces"
                    )
                else:
                    log.error("netlink event socket failed (%s); reopening", exc)
                    await asyncio.sleep(_REOPEN_DELAY)
            if self._events is not None:
                self._events.close()
                self._events = None
            self._events = await self._reopen_events()
            # Events may have been lost while no socket was listening.
            self.counters["resyncs"] += 1
            self._mark_all()

    async def _reopen_events(self) -> AsyncIPRSocket:
        while True:
            try:
                return await self._open_events()
            except (OSError, NetlinkError) as exc:
                log.error("cannot open netlink event socket (%s); retrying", exc)
                await asyncio.sleep(_REOPEN_DELAY)

    async def _read_events(self) -> None:
        sock = self._events
        assert sock is not None
        while True:
            got = False
            async for msg in sock.get():
                got = True
                self._on_message(msg)
            if not got:
                raise OSError(errno.ECONNRESET, "netlink event socket closed")

    def _on_message(self, msg: Any) -> None:
        kind = msg.get(("header", "type"))
        self.counters["events"] += 1
        if kind in _LINK_EVENTS:
            name = msg.get("ifname")
            if name and is_virtual(name) and msg["index"] not in self.published:
                return
            self._mark(int(msg["index"]))
        elif kind in _ADDR_EVENTS:
            if msg["family"] == AF_INET:
                self._mark(int(msg["index"]))
        elif kind in _ROUTE_EVENTS:
            records = route_records(msg)
            for record in records:
                self._mark(record.oif)
            # A main-table default route with no usable oif (blackhole, nexthop
            # object): cheaper to recheck everything than to guess.
            if not records and is_main_default_route(msg):
                self._mark_all()

    def _mark(self, index: int) -> None:
        now = time.monotonic()
        pending = self._pending.get(index)
        if pending is None:
            self._pending[index] = _Pending(first=now, last=now)
        else:
            pending.last = now
        self._wake.set()

    def _mark_all(self) -> None:
        self._mark(_ALL)

    def _due_at(self, pending: _Pending) -> float:
        return min(pending.last + self._debounce, pending.first + self._max_delay)

    async def _flush_loop(self) -> None:
        while True:
            if not self._pending:
                await self._wake.wait()
                self._wake.clear()
                continue
            now = time.monotonic()
            due_at = min(self._due_at(p) for p in self._pending.values())
            if due_at > now:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due_at - now)
                self._wake.clear()
                continue
            due = [i for i, p in self._pending.items() if self._due_at(p) <= now]
            for index in due:
                del self._pending[index]
            await self._flush(due)

    async def _flush(self, due: list[int]) -> None:
        try:
            state = await self._discovery.snapshot()
        except DiscoveryError as exc:
            log.error("%s; retrying in %.1f s", exc, _DISCOVERY_RETRY)
            await asyncio.sleep(_DISCOVERY_RETRY)
            for index in due:
                self._mark(index)
            return
        indexes = set(due)
        if _ALL in indexes:
            indexes.discard(_ALL)
            indexes |= set(self.published) | {i for i, s in state.items() if s.active}
        observed_at = utc_now_iso()
        for index in sorted(indexes):
            for iface in diff_state(self.published, state, index, observed_at):
                self._publish(iface)

    def _publish(self, iface: Iface) -> None:
        if iface.active:
            self.published[iface.index] = iface
        else:
            before = self.published.get(iface.index)
            if before is not None and before.name == iface.name:
                del self.published[iface.index]
        self.counters["changes"] += 1
        log.info(
            "change: %s %s %s gw=%s",
            iface.name,
            iface.operstate,
            ",".join(f"{a.address}/{a.prefixlen}" for a in iface.addresses) or "-",
            iface.gateway,
        )
        try:
            self._on_change(iface)
        except Exception:
            # A faulty sink must not stop monitoring; the sink is ours (the server),
            # so this is a bug worth a traceback.
            log.exception("change sink failed for %s", iface.name)
