"""Metrics' handle on the engine: one `Engine` client, a bounded thread pool, and the
engine's availability.

Concurrency: every blocking engine call runs in a small `ThreadPoolExecutor`, so the bus
loop never waits on the engine.  A call that fails at the transport level (socket missing,
connection refused or reset, timeout) marks the engine unavailable and raises
`DockerUnavailable`; from then on calls fail at once with that error until the next
collection cycle reconnects.  Engine refusals (`EngineError`, `NotFound`) pass through as
they are: they are the engine speaking, not the engine gone.

The API version is negotiated at each (re)connection, so the same code reads an old engine
(API 1.41) and a current one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from services.executor.errors import DockerUnavailable
from services.metrics.engine import Engine, EngineAddressError, EngineError, EngineUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class EngineAccess:
    def __init__(self, base_url: str, timeout: float, workers: int) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docker")
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self.available = False
        self.last_error = "not connected yet"
        self.api_version = "0"

    def connect(self) -> None:
        """Build a fresh client and negotiate its version; DockerUnavailable on failure
        (a refusal counts too: an engine that cannot tell its version is of no use)."""
        try:
            engine = Engine(self.base_url, max(1.0, self.timeout))
            engine.negotiate()
        except (EngineAddressError, EngineUnavailable, EngineError) as exc:
            self.mark_unavailable(str(exc)[:300])
            raise DockerUnavailable(self.last_error) from None
        with self._lock:
            self._engine = engine
            self.api_version = engine.api_version
            self.available = True
            self.last_error = ""
        log.info("connected to the Docker engine at %s (API %s)", self.base_url,
                 self.api_version)

    def mark_unavailable(self, detail: str) -> None:
        with self._lock:
            was = self.available
            self.available = False
            self.last_error = detail
        if was:
            log.warning("Docker engine unavailable: %s", detail)

    def client(self) -> Engine:
        """The current client, or DockerUnavailable."""
        with self._lock:
            engine = self._engine
            if not self.available or engine is None:
                raise DockerUnavailable(self.last_error or "not connected")
            return engine

    def call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(engine, *args)` in the calling thread, mapping transport failures."""
        engine = self.client()
        try:
            return fn(engine, *args, **kwargs)
        except EngineUnavailable as exc:
            self.mark_unavailable(str(exc)[:300])
            raise DockerUnavailable(self.last_error) from None

    async def call(self, fn: Callable[..., T], *args: Any, budget: float | None = None,
                   **kwargs: Any) -> T:
        """Run `fn(engine, *args)` in the pool; `budget` bounds the wait (the thread may
        outlive it, bounded by the client timeout)."""
        self.client()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.pool, lambda: self.call_sync(fn, *args, **kwargs))
        if budget is None:
            return await future
        try:
            return await asyncio.wait_for(future, budget)
        except TimeoutError:
            self.mark_unavailable(f"no answer within {budget:g} s")
            raise DockerUnavailable(f"the engine did not answer within {budget:g} s") from None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run any blocking function (no engine client) in the pool."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._engine = None
            self.available = False
