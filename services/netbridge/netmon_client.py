"""Client of the netmon socket: reconnection, the interface cache, event callbacks.

Concurrency model: one asyncio task (``run``). The stream is read in chunks into a
bounded buffer; a line longer than ``max_line`` is dropped by discarding bytes up to the
next newline, so a runaway peer can never make the client hold megabytes.

Cache rules: a discovery replaces the cache; a change stores the interface when it is
active (``active`` not false and at least one IPv4 address) and removes it otherwise.
While disconnected the cache keeps its last contents and ``stale`` is true.

Every malformed line is dropped and counted in ``counters`` under a ``dropped_*`` key;
nothing a peer sends can end the task.  The cache is bounded: past ``max_interfaces``
entries a discovery keeps the first ones and a change naming a new interface is refused,
both counted under ``refused_cache_full`` (so a flood of names costs a counter, not memory).
Callbacks may be plain functions or coroutines.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from common.netmon_proto import (
    DISCOVERY,
    LINKS,
    SERIAL,
    BadLine,
    Interface,
    is_listed_virtual,
    parse_line,
)

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20
# The cache holds at most this many interfaces (a host has a few dozen at most); one entry
# is bounded by the protocol's per-field limits (common/netmon_proto.py).
MAX_INTERFACES = 1024
_CHUNK = 65536
_CONNECT_TIMEOUT = 2.0

DiscoveryCallback = Callable[[list[Interface]], Awaitable[None] | None]
ChangeCallback = Callable[[Interface], Awaitable[None] | None]

COUNTER_NAMES = (
    "connects",
    "disconnects",
    "discoveries",
    "changes",
    "serial_updates",
    "links_updates",
    "dropped_invalid_utf8",
    "dropped_not_json",
    "dropped_not_object",
    "dropped_unknown_type",
    "dropped_bad_shape",
    "dropped_too_long",
    "dropped_too_deep",
    "dropped_too_many_addresses",
    "dropped_error",
    "refused_cache_full",
    "callback_errors",
)


def is_active(iface: Mapping[str, Any]) -> bool:
    return iface.get("active", True) is not False and bool(iface.get("ipv4_addresses"))


class LineSplitter:
    """Split a byte stream into lines of at most ``max_line`` bytes.

    An over-long line is reported once (as ``None``) and its remaining bytes are
    skipped up to the next newline without being kept."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max = max_line
        self._buf = bytearray()
        self._skipping = False

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished line (never more than ``max_line``)."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes | None]:
        out: list[bytes | None] = []
        start = 0
        while start < len(chunk):
            end = chunk.find(b"\n", start)
            if end < 0:
                if not self._skipping:
                    self._buf += chunk[start:]
                    if len(self._buf) > self._max:
                        self._buf.clear()
                        self._skipping = True
                        out.append(None)
                break
            if self._skipping:
                self._skipping = False
            elif len(self._buf) + (end - start) > self._max:
                self._buf.clear()
                out.append(None)
            else:
                self._buf += chunk[start:end]
                out.append(bytes(self._buf))
                self._buf.clear()
            start = end + 1
        return out


class NetmonClient:
    """Keep a cache of the host's active interfaces from the netmon socket.

    ``run()`` loops until cancelled: connect (with capped exponential backoff while
    the socket is absent or refuses), read lines, reconnect when dropped."""

    def __init__(
        self,
        path: Path | str,
        on_discovery: DiscoveryCallback | None = None,
        on_change: ChangeCallback | None = None,
        *,
        max_line: int = MAX_LINE,
        max_interfaces: int = MAX_INTERFACES,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
    ) -> None:
        self.path = str(path)
        self._on_discovery = on_discovery
        self._on_change = on_change
        self._max_line = max_line
        self._max_interfaces = max_interfaces
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self.interfaces: dict[str, Interface] = {}
        # USB serial adapters (netmon's `serial_devices`); a discovery empties the list.
        self.serial_devices: list[dict[str, Any]] = []
        # Up ethernet links with or without IPv4 (netmon's `ethernet_links`); likewise.
        self.ethernet_links: list[dict[str, Any]] = []
        self.stale = True
        self.connected = asyncio.Event()
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)

    async def run(self) -> None:
        delay = self._backoff_initial
        announced_missing = False
        while True:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(self.path), _CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError) as exc:
                if not announced_missing:
                    log.warning(
                        "netmon socket %s unavailable (%s); retrying quietly",
                        self.path,
                        exc,
                    )
                    announced_missing = True
                else:
                    log.debug("netmon socket %s still unavailable: %s", self.path, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)
                continue
            log.info("connected to netmon at %s", self.path)
            self.counters["connects"] += 1
            self.connected.set()
            try:
                got_discovery = await self._serve(reader)
            finally:
                writer.close()
                self.connected.clear()
                self.stale = True
            self.counters["disconnects"] += 1
            log.warning("netmon connection lost; interface cache marked stale")
            announced_missing = False
            # A connection that delivered a discovery was healthy: start over quickly.
            # One that did not (a peer that accepts and hangs up) keeps backing off.
            if got_discovery:
                delay = self._backoff_initial
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    async def _serve(self, reader: asyncio.StreamReader) -> bool:
        """Read until EOF. No read deadline: the stream is legitimately silent for
        hours, and a Unix socket whose peer exits always reports EOF, so the wait ends
        with the peer. Returns whether a discovery arrived."""
        splitter = LineSplitter(self._max_line)
        got_discovery = False
        while True:
            try:
                chunk = await reader.read(_CHUNK)
            except (ConnectionError, OSError) as exc:
                log.debug("netmon read failed: %s", exc)
                return got_discovery
            if not chunk:
                return got_discovery
            for line in splitter.feed(chunk):
                try:
                    if await self._handle(line):
                        got_discovery = True
                except Exception:
                    # A parser gap must cost one line, never the process.
                    self.counters["dropped_error"] += 1
                    log.exception("netmon line could not be handled: %r",
                                  line[:120] if line else line)

    async def _handle(self, line: bytes | None) -> bool:
        if line is None:
            self._drop("dropped_too_long", f"line longer than {self._max_line} bytes")
            return False
        if not line.strip():
            return False
        try:
            kind, data = parse_line(line)
        except BadLine as bad:
            self._drop(bad.reason, line[:120])
            return False
        if kind == SERIAL:
            self.serial_devices = data
            self.counters["serial_updates"] += 1
            return False
        if kind == LINKS:
            self.ethernet_links = data
            self.counters["links_updates"] += 1
            return False
        if kind == DISCOVERY:
            self.serial_devices = []
            self.ethernet_links = []
            self.interfaces = self._bounded({i["interface"]: i for i in data if is_active(i)})
            self.stale = False
            self.counters["discoveries"] += 1
            await self._call(self._on_discovery, list(self.interfaces.values()))
            return True
        if is_active(data):
            name = data["interface"]
            if name not in self.interfaces and len(self.interfaces) >= self._max_interfaces:
                self._refuse(f"change for new interface {name!r}")
                return False
            self.interfaces[name] = data
        else:
            self.interfaces.pop(data["interface"], None)
        self.counters["changes"] += 1
        await self._call(self._on_change, data)
        return False

    def _bounded(self, cache: dict[str, Interface]) -> dict[str, Interface]:
        if len(cache) <= self._max_interfaces:
            return cache
        self._refuse(f"discovery of {len(cache)} interfaces")
        return dict(list(cache.items())[: self._max_interfaces])

    def _refuse(self, what: str) -> None:
        self.counters["refused_cache_full"] += 1
        # A flood must not become a flood of log lines: the first refusal and every
        # thousandth are logged; the counter has the rest.
        if self.counters["refused_cache_full"] % 1000 != 1:
            return
        log.warning("netmon %s refused: the interface cache holds its maximum of %d "
                    "(%d refusal(s) so far)", what, self._max_interfaces,
                    self.counters["refused_cache_full"])

    def _drop(self, reason: str, sample: object) -> None:
        self.counters[reason] += 1
        log.warning("dropped netmon line (%s): %r", reason, sample)

    async def _call(self, callback: Callable[[Any], Any] | None, arg: Any) -> None:
        if callback is None:
            return
        try:
            result = callback(arg)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # The consumer's bug must not stop the cache from following netmon.
            self.counters["callback_errors"] += 1
            log.exception("netmon client callback failed")


def host_interfaces(
    cache: Mapping[str, Mapping[str, Any]], include_virtual: bool = False
) -> list[dict[str, Any]]:
    """The ``interfaces`` list of a ``get_host_interfaces`` reply, sorted by name: the
    original's virtual names (case-insensitive prefixes) left out unless asked for."""
    rows: list[dict[str, Any]] = []
    for name in sorted(cache):
        iface = cache[name]
        if not include_virtual and is_listed_virtual(name):
            continue
        addrs = [a for a in iface.get("ipv4_addresses") or [] if isinstance(a, dict)]
        first = addrs[0] if addrs else {}
        rows.append(
            {
                "name": name,
                "ip_address": first.get("address"),
                "ipv4_addresses": [a.get("address") for a in addrs],
                "mac_address": iface.get("mac_address"),
                "subnet": first.get("subnet"),
                "gateway": iface.get("gateway"),
            }
        )
    return rows
