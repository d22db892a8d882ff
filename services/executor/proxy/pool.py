"""Kept-alive connections to runtimes, and the watchdog that ends an exchange at its deadline.

Connections are kept per key ``(runtime, address, port, https)``: the runtime part is the
container id the executor gives, so a re-created container never inherits a connection
made to its predecessor, and a runtime that moved to another address gets new ones.
At most :data:`IDLE_PER_KEY` connections wait per key and :data:`MAX_IDLE` in all (the
longest idle is closed first); one unused for :data:`IDLE_SECONDS` is closed.  A
connection is handed out again only when its socket shows nothing to read: an idle
HTTP/1.1 connection has nothing to say, so readable means the runtime closed it (it
restarted, or timed the connection out) or broke protocol.

The watchdog is one daemon thread over a heap of timers.  An exchange registers its
deadline; when that passes first, the watchdog shuts the socket down, which wakes the
worker blocked in connect, the TLS handshake, a send or a receive, whatever the runtime
trickles.  With nothing scheduled the thread sleeps without waking.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http import client as http_client

__all__ = ["IDLE_PER_KEY", "IDLE_SECONDS", "MAX_IDLE", "ConnectionPool", "Key", "Watchdog"]

log = logging.getLogger(__name__)

# Shorter than the keep-alive timeouts of common servers, so an idle connection is
# usually closed by us, not found half-closed by a request.
IDLE_SECONDS = 20.0
IDLE_PER_KEY = 2
MAX_IDLE = 64

# (runtime, address, port, https)
Key = tuple[str, str, int, bool]


class Watchdog:
    """Runs callbacks at monotonic times on one daemon thread; timers can be cancelled."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(self, when: float, callback: Callable[[], None]) -> int:
        with self._cond:
            timer = next(self._seq)
            heapq.heappush(self._heap, (when, timer, callback))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="run-command-watchdog", daemon=True
                )
                self._thread.start()
            if self._heap[0][1] == timer:
                self._cond.notify()
        return timer

    def cancel(self, timer: int) -> None:
        with self._cond:
            self._cancelled.add(timer)
            # Most timers are cancelled long before they are due: keep the heap small.
            if len(self._cancelled) > 64 and len(self._cancelled) * 2 > len(self._heap):
                self._heap = [e for e in self._heap if e[1] not in self._cancelled]
                heapq.heapify(self._heap)
                self._cancelled.clear()

    def pending(self) -> int:
        with self._cond:
            return sum(1 for e in self._heap if e[1] not in self._cancelled)

    def _next_due(self) -> Callable[[], None]:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] in self._cancelled:
                    self._cancelled.discard(heapq.heappop(self._heap)[1])
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait <= 0:
                    return heapq.heappop(self._heap)[2]
                self._cond.wait(wait)

    def _run(self) -> None:
        while True:
            callback = self._next_due()
            try:
                callback()
            except Exception:  # a timer must never stop the thread
                log.exception("watchdog callback failed")


def cut(conn: http_client.HTTPConnection) -> None:
    """Shut the connection's socket down from another thread, waking a blocked worker.

    The plain socket method is used on TLS sockets too: it acts on the descriptor and
    leaves the TLS object to the thread that owns it.
    """
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _reusable(conn: http_client.HTTPConnection) -> bool:
    """True when the idle connection's socket is open and has nothing to read."""
    sock = conn.sock
    if sock is None or sock.fileno() < 0:
        return False
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return False
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


def _close(conn: http_client.HTTPConnection) -> None:
    with contextlib.suppress(OSError):
        conn.close()


class ConnectionPool:
    """Idle connections by key, bounded per key and in all, closed when idle too long."""

    def __init__(
        self,
        watchdog: Watchdog,
        *,
        idle_seconds: float = IDLE_SECONDS,
        per_key: int = IDLE_PER_KEY,
        total: int = MAX_IDLE,
    ) -> None:
        self._watchdog = watchdog
        self.idle_seconds = idle_seconds
        self.per_key = per_key
        self.total = total
        self._lock = threading.Lock()
        # Oldest release first: (released at, key, connection).
        self._idle: list[tuple[float, Key, http_client.HTTPConnection]] = []
        self._sweep_at: float | None = None

    def take(self, key: Key) -> http_client.HTTPConnection | None:
        """The most recently released usable connection for ``key``, or None."""
        stale: list[http_client.HTTPConnection] = []
        found = None
        with self._lock:
            for index in range(len(self._idle) - 1, -1, -1):
                _, idle_key, conn = self._idle[index]
                if idle_key != key:
                    continue
                del self._idle[index]
                if _reusable(conn):
                    found = conn
                    break
                stale.append(conn)
        for conn in stale:
            log.debug("dropping a closed pooled connection to %s:%d", key[1], key[2])
            _close(conn)
        return found

    def put(self, key: Key, conn: http_client.HTTPConnection) -> None:
        """Keep ``conn`` for reuse, closing whatever exceeds the bounds."""
        now = time.monotonic()
        evicted: list[http_client.HTTPConnection] = []
        with self._lock:
            self._idle.append((now, key, conn))
            same = [i for i, entry in enumerate(self._idle) if entry[1] == key]
            for index in reversed(same[: max(0, len(same) - self.per_key)]):
                evicted.append(self._idle.pop(index)[2])
            while len(self._idle) > self.total:
                evicted.append(self._idle.pop(0)[2])
            schedule = self._sweep_at is None
            if schedule:
                self._sweep_at = now + self.idle_seconds
        for old in evicted:
            _close(old)
        if schedule:
            self._watchdog.call_at(now + self.idle_seconds, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for too long; come back when the next one is due."""
        now = time.monotonic()
        expired: list[http_client.HTTPConnection] = []
        with self._lock:
            while self._idle and self._idle[0][0] + self.idle_seconds <= now:
                expired.append(self._idle.pop(0)[2])
            self._sweep_at = self._idle[0][0] + self.idle_seconds if self._idle else None
            again = self._sweep_at
        for conn in expired:
            _close(conn)
        if again is not None:
            self._watchdog.call_at(again, self._sweep)

    def idle_count(self, key: Key | None = None) -> int:
        with self._lock:
            return sum(1 for entry in self._idle if key is None or entry[1] == key)

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, _, conn in idle:
            _close(conn)
