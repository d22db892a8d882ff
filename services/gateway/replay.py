"""Idempotency of cloud commands: one execution per (topic, correlation_id).

The cloud retries a command whose ack it did not see (typically after a reconnection)
with the same `correlation_id`.  Executing it again could create a second runtime, so the
first ack is replayed instead, for `window` seconds.  A repeat that arrives while the
first is still running awaits the same result.

Only outcomes that say something about the command are kept; the producer decides
(`keep=False` for "the owning process never saw it", so a retry gets a real chance).
Commands without a usable correlation id are never deduplicated.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

Ack = dict[str, Any]
Producer = Callable[[], Awaitable[tuple[Ack, bool]]]

DEFAULT_WINDOW = 600.0
DEFAULT_MAX_ENTRIES = 10_000


@dataclass
class _Entry:
    future: asyncio.Future[Ack]
    at: float


class ReplayCache:
    def __init__(self, window: float = DEFAULT_WINDOW, max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _purge(self, now: float) -> None:
        # Entries are kept in arrival order and share one window, so expired ones sit in
        # front; the size bound drops the oldest, finished or not.
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now - entry.at <= self.window and len(self._entries) < self.max_entries:
                break
            del self._entries[key]

    async def run(self, key: Hashable | None, produce: Producer) -> tuple[Ack, bool]:
        """The ack for `key`: produced now, or the earlier one. Returns (ack, replayed)."""
        if key is None:
            ack, _ = await produce()
            return ack, False
        now = self.clock()
        self._purge(now)
        entry = self._entries.get(key)
        if entry is not None:
            # shield: a repeat whose own handler is cancelled must not cancel the first.
            ack = await asyncio.shield(entry.future)
            return copy.deepcopy(ack), True
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        mine = _Entry(future, now)
        self._entries[key] = mine
        try:
            ack, keep = await produce()
        except BaseException as exc:
            self._forget(key, mine)
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else
                                     RuntimeError("command abandoned"))
                future.exception()  # retrieved: waiters may not exist
            raise
        if not keep:
            self._forget(key, mine)
        future.set_result(ack)
        return ack, False

    def _forget(self, key: Hashable, entry: _Entry) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]
