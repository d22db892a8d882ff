"""The cloud link: one mTLS Socket.IO connection at a time, re-established forever.

Concurrency: asyncio.  Each attempt builds everything afresh — credentials read from
disk, SSLContext, aiohttp session, `socketio.AsyncClient` with the library's own
reconnection off — and tears all of it down when the connection ends, so no state of a
dead connection (half-closed transports, stale callbacks, an old session) survives
into the next one.  Between attempts: exponential backoff with jitter from 1 s to
`reconnect_max`, the very first attempt included.

Command events are dispatched to `on_command(topic, args)`, whose return value is the
ack; python-socketio runs each event in its own task, so commands run concurrently.
Unknown events that ask for an ack get one too (the router answers "unknown command").
While a connection is up, `on_session(emit, agent_id, ended)` runs beside it (the
heartbeat) until `ended` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from services.gateway import jsoncodec, packets
from services.gateway.tls import CredentialsError, client_context, load_identity

log = logging.getLogger(__name__)

OnCommand = Callable[[str, tuple[Any, ...]], Awaitable[dict[str, Any]]]
Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
OnSession = Callable[[Emit, str, asyncio.Event], Coroutine[Any, Any, None]]

INITIAL_DELAY = 1.0
JITTER = 0.2
# The server may take a moment to accept the namespace (PROTOCOL.md): wait for it.
NAMESPACE_WAIT = 10.0
# Bound on one whole attempt (TCP, TLS, Engine.IO handshake, namespace).
CONNECT_TIMEOUT = 30.0
# A connection that lasted this long resets the backoff; a flapping one does not.
STABLE_AFTER = 10.0
# The same failure is logged at WARNING once, then every this many seconds.
REPEAT_LOG_EVERY = 60.0
# Within the service runner's shutdown budget, with room for the rest.
TEARDOWN_TIMEOUT = 1.0
# aiohttp closes a websocket on a message above 4 MiB; a command that large (an upload
# through run_command) must get its ack — past the bus limit a "too large" one — rather
# than cost the whole connection.
WS_MAX_MESSAGE = 2 * jsoncodec.MAX_PACKET_CHARS


class Backoff:
    """Delays of 1, 2, 4 … seconds up to `cap`, each shortened by up to `jitter` so that a
    fleet of agents does not reconnect in lockstep after a cloud restart."""

    def __init__(self, cap: float, initial: float = INITIAL_DELAY, jitter: float = JITTER,
                 rng: Callable[[], float] = random.random) -> None:
        self.cap = cap
        self.initial = initial
        self.jitter = jitter
        self.rng = rng
        self.failures = 0

    def next(self) -> float:
        base = min(self.cap, self.initial * 2 ** min(self.failures, 30))
        self.failures += 1
        return base * (1 - self.jitter * self.rng())

    def reset(self) -> None:
        self.failures = 0


@dataclass
class LinkStatus:
    connected: bool = False
    agent_id: str | None = None
    attempts: int = 0
    connections: int = 0
    connected_since: float | None = None  # Unix seconds
    last_error: str | None = None
    transport: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class CloudLink:
    def __init__(self, url: str, mtls_dir: Path, ca_file: Path | None, reconnect_max: float,
                 topics: Iterable[str], on_command: OnCommand, on_session: OnSession) -> None:
        self.url = url
        self.mtls_dir = mtls_dir
        self.ca_file = ca_file
        self.backoff = Backoff(reconnect_max)
        self.topics = tuple(topics)
        self.on_command = on_command
        self.on_session = on_session
        self.status = LinkStatus()
        self._logged_error: str | None = None
        self._logged_at = 0.0
        self._validity_warned: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, serve, reconnect — until `stop` is set."""
        while not stop.is_set():
            self.status.attempts += 1
            uptime = await self._attempt(stop)
            if stop.is_set():
                break
            if uptime >= STABLE_AFTER:
                self.backoff.reset()
            delay = self.backoff.next()
            if uptime == 0:
                self._report_failure(delay)
            else:
                log.info("reconnecting to %s in %.1f s", self.url, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    def _report_failure(self, delay: float) -> None:
        error = self.status.last_error or "unknown error"
        now = time.monotonic()
        repeat = error == self._logged_error and now - self._logged_at < REPEAT_LOG_EVERY
        level = logging.DEBUG if repeat else logging.WARNING
        log.log(level, "cannot connect to %s: %s (attempt %d, next in %.1f s)", self.url, error,
                self.status.attempts, delay)
        if not repeat:
            self._logged_error, self._logged_at = error, now

    # --- one attempt -------------------------------------------------------------------

    async def _attempt(self, stop: asyncio.Event) -> float:
        """One connection from handshake to teardown; returns how long it was up (0 when
        it never came up)."""
        try:
            identity = load_identity(self.mtls_dir)
            ctx = client_context(identity, self.ca_file)
        except CredentialsError as exc:
            self.status.last_error = f"no usable mTLS credentials: {exc}"
            return 0.0
        problem = identity.validity_problem()
        if problem is not None and problem != self._validity_warned:
            # The cloud decides; the attempt still goes out and shows what it says.
            log.warning("%s; the cloud will refuse it until the agent is re-enrolled", problem)
        self._validity_warned = problem
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
        client = socketio.AsyncClient(
            reconnection=False, http_session=session, ssl_verify=True, handle_sigint=False,
            json=jsoncodec, serializer=packets.Packet, logger=False, engineio_logger=False,
            websocket_extra_options={"max_msg_size": WS_MAX_MESSAGE})
        ended = asyncio.Event()
        why: dict[str, Any] = {}
        self._register(client, ended, why)
        try:
            return await self._serve(client, identity.agent_id, stop, ended, why)
        finally:
            await self._teardown(client, session)

    def _register(self, client: socketio.AsyncClient, ended: asyncio.Event,
                  why: dict[str, Any]) -> None:
        async def on_disconnect(reason: Any = None) -> None:
            why.setdefault("reason", str(reason) if reason else "connection lost")
            ended.set()

        async def on_connect_error(data: Any = None) -> None:
            message = data.get("message") if isinstance(data, dict) else data
            why["refused"] = str(message)

        async def on_heartbeat_ack(data: Any = None) -> None:
            log.debug("heartbeat acknowledged: %s", data)

        async def on_other(event: str, *args: Any) -> dict[str, Any]:
            return await self.on_command(event, args)

        client.on("disconnect", on_disconnect)
        client.on("connect_error", on_connect_error)
        client.on("heartbeat_ack", on_heartbeat_ack)
        for topic in self.topics:
            client.on(topic, self._command_handler(topic))
        client.on("*", on_other)

    def _command_handler(self, topic: str) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def handler(*args: Any) -> dict[str, Any]:
            return await self.on_command(topic, args)
        return handler

    async def _serve(self, client: socketio.AsyncClient, agent_id: str, stop: asyncio.Event,
                     ended: asyncio.Event, why: dict[str, Any]) -> float:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await client.connect(self.url, transports=["polling", "websocket"],
                                     wait_timeout=NAMESPACE_WAIT)
        except (socketio.exceptions.ConnectionError, TimeoutError, OSError, ValueError) as exc:
            detail = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                detail = f"no connection within {CONNECT_TIMEOUT:g} s"
            refused = why.get("refused")
            if refused and refused not in detail:
                detail = f"{detail} (the cloud says: {refused})"
            if "Server disconnected" in detail:
                # TLS 1.3 finishes the client's side of the handshake before the server
                # checks the client certificate, so a refusal arrives as a plain close.
                detail += (" — the cloud closed the connection during the handshake, which "
                           "is how a refused client certificate shows under TLS 1.3")
            self.status.last_error = detail
            return 0.0
        up_at = time.monotonic()
        self.status.connected, self.status.agent_id = True, agent_id
        self.status.connections += 1
        self.status.connected_since = time.time()
        self.status.transport = client.transport()
        self.status.last_error = None
        self._logged_error = None
        log.info("connected to %s as agent %s (%s, attempt %d)", self.url, agent_id,
                 self.status.transport, self.status.attempts)

        async def emit(event: str, data: dict[str, Any]) -> None:
            await client.emit(event, data)

        beside = asyncio.create_task(self.on_session(emit, agent_id, ended), name="session")
        waiter = asyncio.create_task(stop.wait(), name="link-stop")
        ender = asyncio.create_task(ended.wait(), name="link-ended")
        try:
            await asyncio.wait({waiter, ender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.set()
            for task in (waiter, ender):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(beside, TEARDOWN_TIMEOUT)
            self.status.connected = False
            self.status.connected_since = None
        uptime = time.monotonic() - up_at
        reason = "agent stopping" if stop.is_set() else why.get("reason", "connection lost")
        self.status.last_error = None if stop.is_set() else f"disconnected: {reason}"
        log.info("disconnected from %s: %s (connected for %.1f s)", self.url, reason, uptime)
        return max(uptime, 1e-3)

    async def _teardown(self, client: socketio.AsyncClient,
                        session: aiohttp.ClientSession) -> None:
        """Close the connection politely if it answers quickly; the session (and with it
        every transport and background read) goes in any case, even when cancelled."""
        try:
            await asyncio.wait_for(client.disconnect(), TEARDOWN_TIMEOUT)
        except Exception as exc:  # a broken or slow transport; closing the session ends it
            log.debug("socket.io teardown: %r", exc)
        finally:
            await session.close()
