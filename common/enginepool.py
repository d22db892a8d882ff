"""The shape both engine handles share: a client of the Docker engine, a bounded thread
pool for its blocking calls, and the engine's availability.

Every blocking engine call runs in the pool, so a bus loop never waits on the engine.  A
call that fails at the transport level marks the engine unavailable and raises
`DockerUnavailable`; from then on calls fail at once with that error until the owner
reconnects.  Engine refusals pass through as they are: the engine speaking, not gone.

Subclasses say how to connect (`connect()` ending in `_install()`), which failures are
transport failures (`is_transport()`, `describe()`), and how to close a client
(`close_client()`): the
executor's `DockerApi` drives the docker SDK, metrics' `EngineAccess` a small read-only
client of its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from common.errors import DockerUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
C = TypeVar("C")


class EnginePool(Generic[C]):
    def __init__(self, base_url: str, timeout: float, workers: int) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docker")
        self._client: C | None = None
        self._lock = threading.Lock()
        self.available = False
        self.last_error = "not connected yet"
        self.api_version = "0"

    # --- what a subclass says --------------------------------------------------------------

    def is_transport(self, exc: BaseException) -> bool:
        """True for failures that mean "the engine did not answer"."""
        raise NotImplementedError

    def close_client(self, client: C) -> None:
        """Release a client that is replaced or no longer used."""

    def describe(self, exc: BaseException) -> str:
        """The words that say why the engine is unavailable."""
        return str(exc)[:300]

    # --- connection --------------------------------------------------------------------------

    def _install(self, client: C, api_version: str) -> None:
        """Make a freshly connected client the current one."""
        with self._lock:
            old, self._client = self._client, client
            self.api_version = api_version
            self.available = True
            self.last_error = ""
        if old is not None:
            self.close_client(old)
        log.info("connected to the Docker engine at %s (API %s)", self.base_url,
                 self.api_version)

    def mark_unavailable(self, detail: str) -> None:
        with self._lock:
            was = self.available
            self.available = False
            self.last_error = detail
        if was:
            log.warning("Docker engine unavailable: %s", detail)

    def client(self) -> C:
        """The current client, or DockerUnavailable."""
        with self._lock:
            client = self._client
            if not self.available or client is None:
                raise DockerUnavailable(self.last_error or "not connected")
            return client

    # --- calls -------------------------------------------------------------------------------

    def call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(client, *args)` in the calling thread, mapping transport failures."""
        client = self.client()
        try:
            return fn(client, *args, **kwargs)
        except DockerUnavailable:
            raise
        except Exception as exc:
            if self.is_transport(exc):
                self.mark_unavailable(self.describe(exc))
                raise DockerUnavailable(self.last_error) from None
            raise

    async def call(self, fn: Callable[..., T], *args: Any, budget: float | None = None,
                   **kwargs: Any) -> T:
        """Run `fn(client, *args)` in the pool; `budget` bounds the wait (the thread may
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
            client, self._client = self._client, None
            self.available = False
        if client is not None:
            self.close_client(client)

