"""A ZeroMQ context for tests that knows the sockets made from it, so a test that leaves
one open fails instead of leaking it into the next test."""

from __future__ import annotations

import threading
from typing import Any

import zmq
import zmq.asyncio

TERM_TIMEOUT = 5.0


class LeakedSockets(AssertionError):
    """A test left sockets open, or the context did not terminate in time."""


class _Tracking:
    """Records every socket a context makes (through the public `socket()` call), so
    the fixture can tell which ones were never closed."""

    # Declared on the class: pyzmq takes an unknown attribute set on a context for a
    # context option.
    made: list[tuple[str, zmq.Socket[Any]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.made = []

    def socket(self, socket_type: int, *args: Any, **kwargs: Any) -> Any:
        sock = super().socket(socket_type, *args, **kwargs)  # type: ignore[misc]
        self.made.append((zmq.SocketType(socket_type).name, sock))
        return sock

    def open_sockets(self) -> list[tuple[str, zmq.Socket[Any]]]:
        """(kind, socket) of every socket made here and not closed."""
        return [(kind, sock) for kind, sock in self.made if not sock.closed]


class TrackingContext(_Tracking, zmq.asyncio.Context):
    """An asyncio context that knows its sockets."""


class SyncTrackingContext(_Tracking, zmq.Context):  # type: ignore[type-arg]
    """A blocking context that knows its sockets."""


def finish(ctx: TrackingContext | SyncTrackingContext, timeout: float = TERM_TIMEOUT) -> None:
    """Close what was left open (and report it), then terminate the context within
    `timeout`; raises LeakedSockets when a socket was left open or term() hung."""
    left = ctx.open_sockets()
    for _, sock in left:
        sock.close(linger=0)
    # term() blocks while any socket lives; run it where a hang cannot block the test run.
    done = threading.Event()

    def term() -> None:
        ctx.term()
        done.set()

    threading.Thread(target=term, daemon=True, name="zmq-term").start()
    terminated = done.wait(timeout)
    if left:
        kinds = ", ".join(sorted(kind for kind, _ in left))
        raise LeakedSockets(f"{len(left)} ZeroMQ socket(s) left open by the test: {kinds}")
    if not terminated:
        raise LeakedSockets(f"ZeroMQ context did not terminate within {timeout} s")
