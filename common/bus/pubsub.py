"""Publish/subscribe: the lossy half of the bus.

Publishers never block: a message past the high-water mark is dropped and counted.
Subscribers count sequence gaps per source and topic, so a loss is visible even though it
cannot be prevented.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import zmq
import zmq.asyncio

from common import wire
from common.bus.errors import Counters
from common.bus.options import PUB_HWM, SUB_HWM, tune
from common.bus.reader import Reader
from common.messages import Message


class Publisher:
    """Binds one PUB socket and sends stamped messages on it."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, stamper: wire.Stamper,
                 counters: Counters) -> None:
        sock = ctx.socket(zmq.PUB)
        tune(sock, PUB_HWM)
        sock.bind(endpoint)
        # Publishing is synchronous: PUB never blocks, it drops at the high-water mark.
        self._sock: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        self._owner = sock
        self.stamper = stamper
        self.counters = counters

    def publish(self, message: Message) -> None:
        self.send(message.topic(), message.to_body())

    def send(self, topic: str, body: dict[str, Any]) -> None:
        frames = wire.encode(topic, self.stamper.header(topic), body)
        try:
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
            self.counters["pub_sent"] += 1
        except zmq.Again:
            self.counters["pub_dropped"] += 1

    def close(self) -> None:
        self._owner.close(linger=0)


class Subscriber:
    """Connects one SUB socket to many publishers and yields decoded envelopes.

    Messages are pulled from the socket by a `Reader` into a short local queue; when the
    queue is full the reader stops, so ZeroMQ's high-water mark still decides what a slow
    subscriber loses.
    """

    QUEUE_MAX = 1000

    def __init__(self, ctx: zmq.Context[Any], endpoints: Iterable[str],
                 prefixes: Iterable[str] = ("",), counters: Counters | None = None) -> None:
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.SUB, socket_class=zmq.Socket)
        tune(self.sock, SUB_HWM)
        for prefix in prefixes:
            self.sock.setsockopt(zmq.SUBSCRIBE, prefix.encode("utf-8"))
        for endpoint in endpoints:
            self.sock.connect(endpoint)
        self.counters = counters if counters is not None else Counters()
        self._last: dict[tuple[str, str], int] = {}
        self.last_gap: tuple[str, str, int] | None = None
        self._queue: deque[list[bytes]] = deque()
        self._arrived: asyncio.Event | None = None
        self._reader: Reader | None = None

    def _room(self) -> bool:
        return len(self._queue) < self.QUEUE_MAX

    def _queued(self, frames: list[bytes]) -> None:
        self._queue.append(frames)
        if self._arrived is not None:
            self._arrived.set()

    async def recv(self, timeout: float) -> wire.Envelope | None:
        """The next valid message, or None when nothing valid arrived in time."""
        if self._reader is None:
            self._arrived = asyncio.Event()
            self._reader = Reader(self.sock, self._queued, self._room)
        assert self._arrived is not None
        deadline = time.monotonic() + timeout
        while True:
            if not self._queue:
                self._reader.drain()  # resume a reader that stopped on a full queue
            while self._queue:
                envelope = self._decode(self._queue.popleft())
                if envelope is not None:
                    return envelope
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return None

    def _decode(self, frames: list[bytes]) -> wire.Envelope | None:
        try:
            envelope = wire.decode(frames)
        except wire.WireError as exc:
            self.counters[f"sub_dropped_{exc.reason}"] += 1
            return None
        self.counters["sub_received"] += 1
        self._track(envelope)
        return envelope

    def _track(self, envelope: wire.Envelope) -> None:
        key = (envelope.header.source, envelope.topic)
        seq = envelope.header.seq
        last = self._last.get(key)
        self._last[key] = seq
        # A lower number means the source restarted; only a jump forward is a loss.
        if last is not None and seq > last + 1:
            missed = seq - last - 1
            self.counters["sub_gap_messages"] += missed
            self.last_gap = (envelope.header.source, envelope.topic, missed)
        else:
            self.last_gap = None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self.sock.close(linger=0)
