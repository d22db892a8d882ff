"""When the set of runtime containers may have changed: the engine's events, so the
collection cycle lists the containers only then and not every cycle.

Listing every runtime container every cycle (an HTTP request and a JSON list of a
hundred rows, five seconds apart) was a third of the metrics process's idle time at 100
runtimes, while the set changes only when the cloud creates, deletes, starts or stops a
runtime or one dies.  The engine tells exactly that: one event stream, filtered on the
engine's side to our runtime containers and to the actions that change the set, read in
one daemon thread that only raises a flag.  The cycle takes the flag and lists.

Never trusted alone: the flag is raised when the stream (re)connects (events may have
been missed meanwhile), `alive` is False while it is not connected (the cycle then lists
every time, as without it), and the collector lists anyway every `RESYNC_CYCLES` cycles
and whenever a container's cgroup vanished.  Runtimes adopted from the original agent
carry no labels and are not in the stream: the resync and their cgroups cover them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from services.metrics.engine import Engine, StatsReader

log = logging.getLogger(__name__)

# The actions after which a listing may differ (running or not, present or not).
ACTIONS = ("create", "start", "die", "stop", "destroy", "rename")
RETRY_DELAY = 2.0
# Without an event for this long the stream is opened again (a silent engine, a lost
# connection nobody noticed); quiet streams are normal, so this is long.
READ_TIMEOUT = 300.0


class ChangeWatch:
    def __init__(self, client: Callable[[], Engine], filters: dict[str, list[str]]) -> None:
        self._client = client
        self._filters = {**filters, "type": ["container"], "event": list(ACTIONS)}
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._reader: StatsReader | None = None
        self.alive = False  # the stream is open: no event means no change
        self.events = 0
        self._thread = threading.Thread(target=self._run, name="metrics-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def take(self) -> bool:
        """Whether anything may have changed since the last call; clears the flag."""
        if not self._changed.is_set():
            return False
        self._changed.clear()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._reader = self._client().events(self._filters, timeout=READ_TIMEOUT)
                self.alive = True
                self._changed.set()  # whatever happened while not connected
                for _event in self._reader:
                    self.events += 1
                    self._changed.set()
                    if self._stop.is_set():
                        return
            except Exception as exc:  # transport errors, timeouts: reopen after a pause
                if self._stop.is_set():
                    return
                log.debug("engine event stream failed: %s", exc)
            finally:
                self.alive = False
                reader, self._reader = self._reader, None
                if reader is not None:
                    reader.close()
            self._changed.set()
            self._stop.wait(RETRY_DELAY)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        reader = self._reader
        if reader is not None:
            reader.interrupt()  # wakes the thread now
        if self._thread.is_alive():
            self._thread.join(timeout)
