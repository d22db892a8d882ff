"""The Socket.IO side of the development cloud: who is connected, what they sent.

Concurrency: one asyncio loop (python-socketio ``AsyncServer`` on aiohttp).
Agents are identified by the CN of the TLS client certificate of the HTTP
request that opened their Engine.IO session; there is no login event. Every
state change notifies one condition, so tests wait for conditions with a
deadline instead of sleeping.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiohttp import web
from cryptography import x509

from devcloud.checks import ack_problems, heartbeat_problems
from devcloud.errors import AckTimeout, AgentNotConnected
from devcloud.registry import Registry

log = logging.getLogger(__name__)

PEER_CERT_KEY: web.RequestKey[bytes] = web.RequestKey("devcloud.peer_cert_der", bytes)
HEARTBEAT_HISTORY = 1000
INTERVAL_HISTORY = 50
RECORD_HISTORY = 10000


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


@dataclass(frozen=True)
class Heartbeat:
    agent_id: str
    seq: int  # 1-based count of heartbeats from this agent since the cloud started
    received_at: float  # Unix seconds
    payload: Any
    problems: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "seq": self.seq,
            "received_at": _iso(self.received_at),
            "payload": self.payload,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class AckRecord:
    agent_id: str
    topic: str
    correlation_id: Any
    sent: Any
    ack: Any  # None on timeout
    sent_at: float
    elapsed: float  # seconds until the ack, or until the timeout
    error: str | None  # "timeout" or None
    problems: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "topic": self.topic,
            "correlation_id": self.correlation_id,
            "sent": self.sent,
            "ack": self.ack,
            "sent_at": _iso(self.sent_at),
            "elapsed": round(self.elapsed, 6),
            "error": self.error,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class Refusal:
    at: float
    remote: str | None
    agent_id: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": _iso(self.at),
            "remote": self.remote,
            "agent_id": self.agent_id,
            "reason": self.reason,
        }


@dataclass
class AgentState:
    agent_id: str
    sid: str | None = None
    remote: str | None = None
    connected_at: float | None = None
    disconnected_at: float | None = None
    connections: int = 0
    heartbeat_count: int = 0
    last_heartbeat: Heartbeat | None = None
    heartbeats: deque[Heartbeat] = field(default_factory=lambda: deque(maxlen=HEARTBEAT_HISTORY))
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=INTERVAL_HISTORY))
    last_heartbeat_mono: float | None = None
    events: deque[tuple[float, str, Any]] = field(default_factory=lambda: deque(maxlen=100))

    @property
    def connected(self) -> bool:
        return self.sid is not None

    def as_dict(self) -> dict[str, Any]:
        last = self.last_heartbeat
        return {
            "id": self.agent_id,
            "connected": self.connected,
            "sid": self.sid,
            "remote": self.remote,
            "connected_at": _iso(self.connected_at) if self.connected_at else None,
            "disconnected_at": _iso(self.disconnected_at) if self.disconnected_at else None,
            "connections": self.connections,
            "heartbeat_count": self.heartbeat_count,
            "last_heartbeat_at": _iso(last.received_at) if last else None,
            "last_heartbeat": last.payload if last else None,
            "heartbeat_intervals": [round(i, 4) for i in self.intervals],
            "heartbeat_problems": list(last.problems) if last else [],
        }


@web.middleware
async def capture_peer_cert(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Keep the TLS client certificate on the request object.

    The Socket.IO ``connect`` handler runs later than the request that opened
    the session, when that request's transport may already be gone; the
    request object itself (kept in the environ) survives.
    """
    der = _peer_der_from_transport(request)
    if der is not None:
        request[PEER_CERT_KEY] = der
    return await handler(request)


def _peer_der_from_transport(request: web.Request) -> bytes | None:
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return bytes(der) if der else None


class AgentHub:
    """Socket.IO server state: agents, heartbeats, acks, refusals."""

    def __init__(
        self,
        registry: Registry,
        *,
        ping_interval: float = 25,
        ping_timeout: float = 20,
        default_timeout: float = 15,
    ) -> None:
        self.registry = registry
        self.default_timeout = default_timeout
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            logger=False,
            engineio_logger=False,
        )
        self._agents: dict[str, AgentState] = {}
        self._sid_agent: dict[str, str] = {}
        self.acks: deque[AckRecord] = deque(maxlen=RECORD_HISTORY)
        self.refusals: deque[Refusal] = deque(maxlen=RECORD_HISTORY)
        self._changed = asyncio.Condition()
        # Start far from 0 so an agent that drops the id and acks null is noticed.
        self._correlation = itertools.count(int(time.time()) % 100000 * 10 + 1000)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("heartbeat", self._on_heartbeat)
        self.sio.on("*", self._on_other)

    def attach(self, app: web.Application) -> None:
        app.middlewares.append(capture_peer_cert)
        self.sio.attach(app)

    # ------------------------------------------------------------ events

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _refuse(self, remote: str | None, agent_id: str | None, reason: str) -> None:
        log.warning("refused Socket.IO connection from %s: %s", remote, reason)
        self.refusals.append(Refusal(time.time(), remote, agent_id, reason))

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        request: web.Request | None = environ.get("aiohttp.request")
        remote = request.remote if request is not None else None
        der = None
        if request is not None:
            der = request.get(PEER_CERT_KEY) or _peer_der_from_transport(request)
        if der is None:
            # CERT_REQUIRED makes this unreachable over TLS; it guards a
            # misconfigured plain listener.
            self._refuse(remote, None, "no client certificate")
            await self._notify()
            raise ConnectionRefusedError("client certificate required")
        cert = x509.load_der_x509_certificate(der)
        agent_id, why = self.registry.accepts(cert)
        if agent_id is None:
            self._refuse(remote, None, why)
            await self._notify()
            raise ConnectionRefusedError(why)
        state = self._agents.setdefault(agent_id, AgentState(agent_id))
        if state.sid is not None:
            log.warning("agent %s connected again (sid %s replaces %s)", agent_id, sid, state.sid)
        state.sid = sid
        state.remote = remote
        state.connected_at = time.time()
        state.disconnected_at = None
        state.connections += 1
        self._sid_agent[sid] = agent_id
        log.info("agent %s connected from %s (sid %s)", agent_id, remote, sid)
        await self._notify()

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        agent_id = self._sid_agent.pop(sid, None)
        if agent_id is None:
            return
        state = self._agents[agent_id]
        if state.sid == sid:
            state.sid = None
            state.disconnected_at = time.time()
        log.info("agent %s disconnected (sid %s, %s)", agent_id, sid, reason)
        await self._notify()

    async def _on_heartbeat(self, sid: str, data: Any = None) -> None:
        agent_id = self._sid_agent.get(sid)
        if agent_id is None:
            return
        state = self._agents[agent_id]
        now_mono = time.monotonic()
        if state.last_heartbeat_mono is not None:
            state.intervals.append(now_mono - state.last_heartbeat_mono)
        state.last_heartbeat_mono = now_mono
        state.heartbeat_count += 1
        problems = tuple(heartbeat_problems(data, agent_id))
        if problems:
            log.warning(
                "heartbeat from %s departs from the protocol: %s", agent_id, "; ".join(problems)
            )
        beat = Heartbeat(agent_id, state.heartbeat_count, time.time(), data, problems)
        state.last_heartbeat = beat
        state.heartbeats.append(beat)
        await self._notify()
        # The product cloud answers each heartbeat with this event.
        await self.sio.emit("heartbeat_ack", {"timestamp": dt.datetime.now().isoformat()}, to=sid)

    async def _on_other(self, event: str, sid: str, *args: Any) -> None:
        agent_id = self._sid_agent.get(sid)
        if agent_id is None:
            return
        log.info("agent %s emitted unexpected event %r", agent_id, event)
        self._agents[agent_id].events.append(
            (time.time(), event, args[0] if len(args) == 1 else list(args))
        )
        await self._notify()

    # ----------------------------------------------------------- commands

    def next_correlation_id(self) -> int:
        return next(self._correlation)

    async def send(
        self,
        agent_id: str,
        topic: str,
        payload: Any,
        *,
        timeout: float | None = None,
        stamp: bool = True,
    ) -> AckRecord:
        """Emit ``topic`` with an ack callback, as the cloud does, and await the ack.

        With ``stamp`` a ``correlation_id`` is added to an object payload that
        lacks one. Raises ``AgentNotConnected`` or ``AckTimeout`` (the timeout
        is recorded in ``acks`` too).
        """
        state = self._agents.get(agent_id)
        if state is None or state.sid is None:
            raise AgentNotConnected(f"agent {agent_id} is not connected")
        data = payload
        if stamp and isinstance(payload, dict) and "correlation_id" not in payload:
            data = {**payload, "correlation_id": self.next_correlation_id()}
        correlation = data.get("correlation_id") if isinstance(data, dict) else None
        wait = self.default_timeout if timeout is None else timeout
        sent_at, start = time.time(), time.monotonic()
        try:
            result = await self.sio.call(topic, data, to=state.sid, timeout=wait)
        except socketio.exceptions.TimeoutError:
            record = AckRecord(
                agent_id,
                topic,
                correlation,
                data,
                None,
                sent_at,
                time.monotonic() - start,
                "timeout",
                ("no ack within the timeout",),
            )
            self.acks.append(record)
            await self._notify()
            raise AckTimeout(f"no ack for {topic} from {agent_id} within {wait} s") from None
        except socketio.exceptions.DisconnectedError as exc:
            raise AgentNotConnected(f"agent {agent_id} disconnected: {exc}") from exc
        elapsed = time.monotonic() - start
        # python-socketio returns one value as is and several as a tuple.
        args = result if isinstance(result, tuple) else (result,)
        problems = tuple(ack_problems(topic, data, args))
        if problems:
            log.warning(
                "ack for %s from %s departs from the protocol: %s",
                topic,
                agent_id,
                "; ".join(problems),
            )
        record = AckRecord(
            agent_id, topic, correlation, data, result, sent_at, elapsed, None, problems
        )
        self.acks.append(record)
        await self._notify()
        return record

    async def disconnect_agent(self, agent_id: str) -> bool:
        state = self._agents.get(agent_id)
        if state is None or state.sid is None:
            return False
        await self.sio.disconnect(state.sid)
        return True

    # ------------------------------------------------------------ queries

    def agent(self, agent_id: str) -> AgentState | None:
        return self._agents.get(agent_id)

    def agents(self) -> list[dict[str, Any]]:
        """Every enrolled agent and every agent seen, connected or not."""
        ids = sorted(set(self.registry.agent_ids()) | set(self._agents))
        return [self._agents.get(i, AgentState(i)).as_dict() for i in ids]

    def heartbeats(
        self, agent_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Heartbeat]:
        state = self._agents.get(agent_id)
        if state is None:
            return []
        beats = [b for b in state.heartbeats if b.seq > after_seq]
        return beats[-limit:] if limit else beats

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds; False when the deadline passes first."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                return predicate()
        return True

    async def wait_connected(self, agent_id: str, timeout: float) -> bool:
        return await self.wait_for(lambda: self.is_connected(agent_id), timeout)

    def is_connected(self, agent_id: str) -> bool:
        state = self._agents.get(agent_id)
        return state is not None and state.connected

    async def wait_heartbeats(
        self, agent_id: str, count: int = 1, *, after_seq: int = 0, timeout: float = 15
    ) -> list[Heartbeat]:
        """Heartbeats with ``seq > after_seq``, once ``count`` of them arrived or time is up."""
        await self.wait_for(lambda: len(self.heartbeats(agent_id, after_seq)) >= count, timeout)
        return self.heartbeats(agent_id, after_seq)
