"""The executor's handle on the Docker engine: one client, a bounded thread pool, and the
engine's availability.

Concurrency: every blocking engine call runs in a bounded `ThreadPoolExecutor`, so the bus
loop never waits on the engine.  A call that fails at the transport level (socket missing,
connection refused or reset, read timeout) marks the engine unavailable and raises
`DockerUnavailable`; from then on calls fail at once with that error until the watcher
(`events.py`) reconnects.  Engine answers (`APIError`, `NotFound`) pass through as they
are: they are the engine speaking, not the engine gone.

The API version is negotiated at each (re)connection, so the same code drives an old
engine (API 1.41) and a current one; `supports()` lets callers choose a feature path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.errors
import requests
import urllib3.exceptions

from services.executor.errors import DockerUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
# docker-py ships no type information: the client is `Any` to the type checker.
API = Any


def is_transport_error(exc: BaseException) -> bool:
    """True for failures that mean "the engine did not answer" rather than "it refused"."""
    if isinstance(exc, docker.errors.APIError):
        return False
    return isinstance(exc, (requests.exceptions.RequestException, OSError,
                            docker.errors.DockerException, urllib3.exceptions.HTTPError))


def version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return (0,)


class DockerApi:
    def __init__(self, base_url: str, timeout: float, workers: int) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docker")
        self._api: Any = None
        self._lock = threading.Lock()
        self.available = False
        self.last_error = "not connected yet"
        self.api_version = "0"
        # Set whenever the engine is found unavailable, so the watcher reconnects at once.
        self.lost = threading.Event()

    # --- connection (called from the watcher thread) ----------------------------------

    def connect(self) -> None:
        """Build a fresh client and ping; raises DockerUnavailable when that fails."""
        try:
            api = docker.APIClient(base_url=self.base_url, version="auto",
                                   timeout=int(max(1, self.timeout)))
            api.ping()
        except Exception as exc:
            if is_transport_error(exc) or isinstance(exc, docker.errors.APIError):
                self.mark_unavailable(_describe(exc))
                raise DockerUnavailable(self.last_error) from None
            raise
        with self._lock:
            old, self._api = self._api, api
            self.api_version = api.api_version
            self.available = True
            self.last_error = ""
            self.lost.clear()
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()
        log.info("connected to the Docker engine at %s (API %s)", self.base_url,
                 self.api_version)

    def mark_unavailable(self, detail: str) -> None:
        with self._lock:
            was = self.available
            self.available = False
            self.last_error = detail
        self.lost.set()
        if was:
            log.warning("Docker engine unavailable: %s", detail)

    def supports(self, version: str) -> bool:
        return version_tuple(self.api_version) >= version_tuple(version)

    def client(self) -> Any:
        """The current client, or DockerUnavailable."""
        with self._lock:
            api = self._api
            if not self.available or api is None:
                raise DockerUnavailable(self.last_error or "not connected")
            return api

    def new_client(self, timeout: float) -> Any:
        """A separate client (own connection pool and timeout) for long calls: pulls."""
        self.client()  # fail fast when the engine is known to be gone
        return docker.APIClient(base_url=self.base_url, version=self.api_version,
                                timeout=int(max(1, timeout)))

    # --- calls ------------------------------------------------------------------------------

    def call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(api, *args)` in the calling thread, mapping transport failures."""
        api = self.client()
        try:
            return fn(api, *args, **kwargs)
        except DockerUnavailable:
            raise
        except Exception as exc:
            if is_transport_error(exc):
                self.mark_unavailable(_describe(exc))
                raise DockerUnavailable(self.last_error) from None
            raise

    async def call(self, fn: Callable[..., T], *args: Any, budget: float | None = None,
                   **kwargs: Any) -> T:
        """Run `fn(api, *args)` in the pool; `budget` bounds the wait (the thread may
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
            api, self._api = self._api, None
            self.available = False
        if api is not None:
            with contextlib.suppress(Exception):
                api.close()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    # requests nests the real cause deep inside; the innermost words are the useful ones.
    if ("Connection aborted" in text or "FileNotFoundError" in text) and "No such file" in text:
        return f"socket not found ({text[:200]})"
    return text[:300]
