"""A list read again and again from the file system, reported when it changes.

The serial adapters (`serial.py`) and the up Ethernet links (`links.py`) are both small
lists that are cheap to read whole, so each is read once per interval in a worker thread
(the reads are blocking file system calls) and handed on only when it differs from the
last one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

Item = dict[str, Any]


class PollWatch:
    """Call `scan()` every `interval` seconds and `on_change(items)` whenever the list
    differs from the last one; `items` is the last list read (the first one at
    construction).  A subclass says in `changed` how it logs a new list."""

    def __init__(self, scan: Callable[[], list[Item]],
                 on_change: Callable[[list[Item]], None], *, interval: float,
                 task_name: str) -> None:
        self._scan = scan
        self._on_change = on_change
        self._interval = interval
        self._task_name = task_name
        self.items: list[Item] = scan()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def changed(self, items: list[Item]) -> None:
        """Called with a new list before `on_change`."""

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            items = await asyncio.to_thread(self._scan)
            if items != self.items:
                self.changed(items)
                self.items = items
                self._on_change(items)
