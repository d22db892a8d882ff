"""The watcher: one dedicated thread that keeps the engine connection and its event stream.

* While the engine is unavailable it reconnects with a capped backoff (0.5 s doubling to
  5 s, woken at once when a call notices the engine gone) and reports each successful
  (re)connection to the loop, which then resyncs the live view and reconciles.
* While it is available it reads the engine's event stream in bounded windows
  (`since` … `until` a few seconds ahead): every read ends on its own, so a silent or
  hung engine is noticed within the client timeout, and consecutive windows overlap by a
  second so nothing falls between them (a duplicate event only costs a re-inspect).

Events reach the loop through `call_soon_threadsafe`; this thread never touches loop state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from common import labels
from services.executor.engine.docker_api import DockerApi, is_transport_error
from services.executor.errors import DockerUnavailable

log = logging.getLogger(__name__)

# The actions the live view acts on, filtered at the engine: a runtime's health probe is an
# exec every 30 s, which the engine reports as exec_create, exec_start and exec_die — with
# a hundred runtimes ten events a second that the view would only drop (and the engine,
# this thread and the loop would carry for nothing).  `health_status` comes only when the
# health changes; listing it makes the engine match this list by prefix, which none of the
# exec_* actions share.
WATCHED_ACTIONS = (
    # containers
    "create", "start", "restart", "stop", "die", "kill", "oom", "pause", "unpause",
    "rename", "update", "destroy", "health_status",
    # networks (a container's endpoint coming or going)
    "connect", "disconnect", "remove",
)
WINDOW = 5.0
BACKOFF_MIN, BACKOFF_MAX = 0.5, 5.0


def event_filters(instance: str, adopted: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """What the watcher asks the engine for: our containers' and networks' events, only
    the actions the live view acts on.  The engine ANDs filters of different keys, so with
    adopted runtimes (no labels) the stream is not filtered by label and `concerns` makes
    the choice here."""
    filters: dict[str, list[str]] = {} if adopted else labels.filters(instance)
    filters["type"] = ["container", "network"]
    filters["event"] = list(WATCHED_ACTIONS)
    return filters


def concerns(event: dict[str, Any], instance: str, adopted: frozenset[str]) -> bool:
    """An event about one of our objects (labels on the actor) or an adopted container."""
    actor = event.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    if labels.owned(attributes, instance):
        return True
    return actor.get("ID") in adopted or attributes.get("container") in adopted


class Watcher(threading.Thread):
    def __init__(self, docker_api: DockerApi, instance: str, loop: asyncio.AbstractEventLoop,
                 on_event: Callable[[dict[str, Any]], None],
                 on_connected: Callable[[], None], window: float = WINDOW) -> None:
        super().__init__(name="docker-watcher", daemon=True)
        self.docker = docker_api
        self.instance = instance
        self.loop = loop
        self.on_event = on_event
        self.on_connected = on_connected
        self.window = window
        self.stopping = threading.Event()
        # The ids of adopted runtimes; read at each window (a set swapped whole on the loop).
        self.adopted: Callable[[], frozenset[str]] = frozenset

    def stop(self) -> None:
        self.stopping.set()
        self.docker.lost.set()  # wake a backoff wait

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: we are shutting down
            self.stopping.set()

    def run(self) -> None:
        backoff = BACKOFF_MIN
        since = 0
        while not self.stopping.is_set():
            if not self.docker.available:
                try:
                    self.docker.connect()
                except DockerUnavailable as exc:
                    log.debug("engine still unavailable: %s", exc)
                    self.docker.lost.clear()
                    self.docker.lost.wait(backoff)
                    backoff = min(BACKOFF_MAX, backoff * 2)
                    continue
                except Exception:
                    log.exception("unexpected failure connecting to the engine")
                    self.stopping.wait(backoff)
                    continue
                backoff = BACKOFF_MIN
                since = int(time.time()) - 1
                self._post(self.on_connected)
            since = self._window(since)

    def _window(self, since: int) -> int:
        until = int(time.time() + self.window)
        adopted = self.adopted()
        filters = event_filters(self.instance, adopted)
        try:
            api = self.docker.client()
            for event in api.events(since=since, until=until, filters=filters, decode=True):
                if self.stopping.is_set():
                    break
                if adopted and not concerns(event, self.instance, adopted):
                    continue
                self._post(self.on_event, event)
        except DockerUnavailable:
            return since
        except Exception as exc:
            if is_transport_error(exc):
                self.docker.mark_unavailable(str(exc)[:300] or type(exc).__name__)
                return since
            log.exception("event stream failed")
            self.stopping.wait(1.0)
            return since
        return until - 1
