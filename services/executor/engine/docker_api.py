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

import contextlib
import logging
import threading
from typing import Any, TypeVar

import docker
import docker.errors
import requests
import urllib3.exceptions

from common.enginepool import EnginePool
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


class DockerApi(EnginePool[Any]):
    def __init__(self, base_url: str, timeout: float, workers: int) -> None:
        super().__init__(base_url, timeout, workers)
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
        self.lost.clear()
        self._install(api, api.api_version)

    def mark_unavailable(self, detail: str) -> None:
        super().mark_unavailable(detail)
        self.lost.set()

    def is_transport(self, exc: BaseException) -> bool:
        return is_transport_error(exc)

    def describe(self, exc: BaseException) -> str:
        return _describe(exc)

    def close_client(self, client: Any) -> None:
        with contextlib.suppress(Exception):
            client.close()

    def supports(self, version: str) -> bool:
        return version_tuple(self.api_version) >= version_tuple(version)

    def new_client(self, timeout: float) -> Any:
        """A separate client (own connection pool and timeout) for long calls: pulls."""
        self.client()  # fail fast when the engine is known to be gone
        return docker.APIClient(base_url=self.base_url, version=self.api_version,
                                timeout=int(max(1, timeout)))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    # requests nests the real cause deep inside; the innermost words are the useful ones.
    if ("Connection aborted" in text or "FileNotFoundError" in text) and "No such file" in text:
        return f"socket not found ({text[:200]})"
    return text[:300]
