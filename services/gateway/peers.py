"""What the gateway knows about the other processes, from their PUB sockets.

One SUB socket on every other process's PUB endpoint, filtered to `svc.` (liveness beats
and stopping notices) and `metrics.host` (the heartbeat sample).  The watch only keeps
the latest of each; readers (the heartbeat, the error texts of the router) never wait on
the bus.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from common.bus import Subscriber
from common.messages import Alive, HostMetrics, MessageError, Stopping, parse
from common.wire import Envelope

log = logging.getLogger(__name__)

OTHERS = ("executor", "metrics", "netbridge")
# A process is presumed down after this many missed liveness beats.
MISSED_BEATS = 3
RECV_WAIT = 5.0  # seconds; the loop ends by cancellation, not by noticing `stop`


@dataclass
class PeerState:
    last_beat: float | None = None  # monotonic
    pid: int | None = None
    stopping: bool = False


@dataclass
class PeerWatch:
    beat_interval: float
    started: float = field(default_factory=time.monotonic)
    peers: dict[str, PeerState] = field(default_factory=lambda: {n: PeerState() for n in OTHERS})
    host_sample: HostMetrics | None = None
    host_sample_at: float | None = None  # monotonic receive time

    def grace(self) -> float:
        return max(self.beat_interval * MISSED_BEATS, 1.0)

    def is_up(self, name: str, now: float | None = None) -> bool:
        state = self.peers.get(name)
        if state is None or state.stopping or state.last_beat is None:
            return False
        now = time.monotonic() if now is None else now
        return now - state.last_beat <= self.grace()

    def down(self, now: float | None = None) -> list[str]:
        """Processes that look down; none during the first grace period after start, when
        their first beats may simply not have arrived yet."""
        now = time.monotonic() if now is None else now
        if now - self.started < self.grace():
            return []
        return [name for name in self.peers if not self.is_up(name, now)]

    def silence(self, name: str, now: float | None = None) -> float | None:
        """Seconds since the last liveness beat of `name` (None: never seen)."""
        state = self.peers.get(name)
        if state is None or state.last_beat is None:
            return None
        return (time.monotonic() if now is None else now) - state.last_beat

    def sample_age(self, now: float | None = None) -> float | None:
        if self.host_sample_at is None:
            return None
        return (time.monotonic() if now is None else now) - self.host_sample_at

    def feed(self, envelope: Envelope, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        try:
            message = parse(envelope)
        except MessageError as exc:
            log.debug("ignoring %s from %s: %s", envelope.topic, envelope.header.source, exc)
            return
        if isinstance(message, Alive):
            state = self.peers.setdefault(message.name, PeerState())
            if state.last_beat is None or state.stopping:
                log.info("%s is up (pid %d)", message.name, message.pid)
            state.last_beat, state.pid, state.stopping = now, message.pid, False
        elif isinstance(message, Stopping):
            state = self.peers.setdefault(message.name, PeerState())
            state.stopping = True
            log.info("%s is stopping (%s)", message.name, message.reason)
        elif isinstance(message, HostMetrics):
            self.host_sample, self.host_sample_at = message, now

    async def watch(self, sub: Subscriber, stop: Any) -> None:
        """Feed from `sub` until `stop` (an asyncio.Event) is set or the task is
        cancelled (the service does that when it stops)."""
        while not stop.is_set():
            # A long wait: beats arrive every beat interval anyway, and a short one only
            # woke the idle process five times a second.
            envelope = await sub.recv(RECV_WAIT)
            if envelope is not None:
                self.feed(envelope)
