"""One operation per device at a time; the background tasks that carry them out.

Every background operation follows one pattern, kept here: claim the device, do the
checks and the first journal write in the request (a failure there releases the claim at
once and is the answer), then carry on in a task that releases the claim when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from services.executor.errors import Busy

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Coroutine[Any, Any, Any]


class OperationRegistry:
    def __init__(self) -> None:
        self._current: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def current(self, device: str) -> str | None:
        return self._current.get(device)

    def busy_devices(self) -> list[str]:
        return list(self._current)

    def begin(self, device: str, kind: str) -> None:
        """Claim `device` for an operation of `kind`, or raise Busy."""
        running = self._current.get(device)
        if running is not None:
            raise Busy(device, running)
        self._current[device] = kind

    def end(self, device: str) -> None:
        self._current.pop(device, None)

    async def launch(self, device: str, kind: str, prepare: Callable[[], Awaitable[T]],
                     work: Callable[[T], Work], name: str) -> T:
        """Claim `device`, run `prepare()` (its failure releases the claim and propagates),
        then `work(prepared)` in a task that releases the claim when it ends."""
        self.begin(device, kind)
        try:
            prepared = await prepare()
        except BaseException:
            self.end(device)
            raise
        self.carry(device, work(prepared), name)
        return prepared

    def carry(self, device: str, work: Work, name: str) -> asyncio.Task[Any]:
        """Run `work` for a device already claimed; the claim ends with it."""
        return self.spawn(self._then_end(device, work), name)

    async def _then_end(self, device: str, work: Work) -> None:
        try:
            await work
        finally:
            self.end(device)

    def spawn(self, coro: Work, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("operation task %s failed", task.get_name(), exc_info=task.exception())

    async def wait_idle(self, timeout: float, ignore: str | None = None) -> bool:
        """Wait until no device is claimed (except `ignore`); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(d != ignore for d in self._current):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def cancel_all(self, timeout: float) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
