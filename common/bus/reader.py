"""The one place that reads a ZeroMQ socket from the asyncio event loop.

A `Reader` registers the socket's file descriptor (`ZMQ_FD`) with the running loop and
feeds every message readable on the socket to a callback.  ZeroMQ's descriptor is
edge-triggered and also fires for sends, so:

* a wake-up always reads until the socket reports no input (`ZMQ_EVENTS`);
* `kick()` must follow every send on the same socket, because a send can consume the edge
  that announced a pending message;
* a reader that stops early (its consumer's queue is full, see `accepting`) is resumed by
  its consumer calling `drain()` once there is room: no new edge would come for messages
  already waiting in the socket.

One loop wake-up per burst instead of a future per message halves the round trip of a call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq


def _always() -> bool:
    return True


class Reader:
    """Feeds each message readable on `sock` to `on_frames` while `accepting()` is true."""

    def __init__(self, sock: zmq.Socket[bytes], on_frames: Callable[[list[bytes]], None],
                 accepting: Callable[[], bool] = _always) -> None:
        self.sock = sock
        self.on_frames = on_frames
        self.accepting = accepting
        self.loop = asyncio.get_running_loop()
        self.fd = int(sock.getsockopt(zmq.FD))
        self.loop.add_reader(self.fd, self.drain)
        self._kicked = False
        self.kick()

    def drain(self) -> None:
        """Read until the socket has no input or the consumer has no room."""
        self._kicked = False
        while self.accepting() and int(self.sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self.on_frames(frames)

    def kick(self) -> None:
        """Drain soon (once, however often it is kicked before that)."""
        if not self._kicked:
            self._kicked = True
            self.loop.call_soon(self.drain)

    def close(self) -> None:
        """Stop watching the descriptor (the socket itself is its owner's to close)."""
        if not self.loop.is_closed():
            self.loop.remove_reader(self.fd)
