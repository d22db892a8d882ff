"""The agent's ZeroMQ bus: endpoints, socket options, PUB/SUB and request/reply.

Concurrency model: asyncio with `zmq.asyncio`; one context per process, created in
`main()` and handed in.

* Endpoints are `ipc://` files in one private run directory (mode 0700).  Each process
  binds `<name>.pub` (PUB) and `<name>.rpc` (ROUTER); clients connect.  Nothing is TCP.
* Request/reply is DEALER → ROUTER with request ids, so any number of calls may be in
  flight on one client socket and a slow handler never delays a fast one.  Every call has
  a deadline.  A DEALER never enters a lockstep state, so a server that dies mid-request
  cannot wedge the client: the call times out, the socket reconnects by itself when the
  server is back, and a late reply to a forgotten id is dropped.  Clients set
  `ZMQ_IMMEDIATE`, so a request is never parked in a queue for a server that is not
  there (it would otherwise run long after its caller gave up); servers also refuse to
  start work past the deadline carried in the request.
* The server replies exactly once: a handler's return value, or an error reply for any
  exception, an unknown method, an expired deadline, or too many calls in flight.  Each
  call is published as an `rpc.<server>.<method>` trace for the tap.
* PUB/SUB is lossy: publishers never block (a message past the high-water mark is dropped
  and counted), subscribers count sequence gaps per source and topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from common import wire
from common.messages import Message, Reply, Request, RpcTrace

log = logging.getLogger(__name__)

SERVICES = ("gateway", "executor", "metrics", "netbridge")
PUB_HWM = 1000
RPC_HWM = 1000
MAX_IN_FLIGHT = 64

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class BusError(Exception):
    """Base of the bus's typed errors."""


class RpcTimeout(BusError):
    """No reply before the deadline: the server is down, slow, or unreachable.

    `delivered` is False when the request never left the socket (no server connected),
    so the caller knows for sure that nothing ran."""

    def __init__(self, message: str, delivered: bool = True) -> None:
        super().__init__(message)
        self.delivered = delivered


class RpcError(BusError):
    """The server answered with an error reply."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class RemoteError(Exception):
    """Raise in a handler to send an error reply with a chosen type and message; any
    other exception becomes an `internal` error reply and is logged as a bug."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# --- endpoints and options ---------------------------------------------------------------


class Endpoints:
    """The endpoint table: every bus address derives from the run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def pub(self, name: str) -> str:
        return f"ipc://{self.run_dir}/{name}.pub"

    def rpc(self, name: str) -> str:
        return f"ipc://{self.run_dir}/{name}.rpc"

    def all_pubs(self, names: Iterable[str] = SERVICES) -> list[str]:
        return [self.pub(name) for name in names]


def prepare_run_dir(path: Path) -> None:
    """Create the private run directory (0700) that holds the ipc files."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def tune(sock: zmq.Socket[Any], hwm: int) -> None:
    """The one place where bus socket options are set."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE_BYTES + 4096)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)


class Counters(Counter[str]):
    """Named event counts of one process, reported in its liveness beat."""


# --- publish / subscribe ---------------------------------------------------------------------


class Publisher:
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

    Messages are pulled from the socket by the event loop's reader callback into a short
    local queue; when the queue is full the callback stops reading, so ZeroMQ's
    high-water mark still decides what a slow subscriber loses.
    """

    QUEUE_MAX = 1000

    def __init__(self, ctx: zmq.Context[Any], endpoints: Iterable[str],
                 prefixes: Iterable[str] = ("",), counters: Counters | None = None) -> None:
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.SUB, socket_class=zmq.Socket)
        tune(self.sock, PUB_HWM * 10)
        for prefix in prefixes:
            self.sock.setsockopt(zmq.SUBSCRIBE, prefix.encode("utf-8"))
        for endpoint in endpoints:
            self.sock.connect(endpoint)
        self.counters = counters if counters is not None else Counters()
        self._last: dict[tuple[str, str], int] = {}
        self.last_gap: tuple[str, str, int] | None = None
        self._queue: deque[list[bytes]] = deque()
        self._arrived: asyncio.Event | None = None
        self._fd: int | None = None

    def _pull(self) -> None:
        while len(self._queue) < self.QUEUE_MAX and \
                int(self.sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                self._queue.append(self.sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        if self._queue and self._arrived is not None:
            self._arrived.set()

    async def recv(self, timeout: float) -> wire.Envelope | None:
        """The next valid message, or None when nothing valid arrived in time."""
        if self._arrived is None:
            self._arrived = asyncio.Event()
            self._fd = int(self.sock.getsockopt(zmq.FD))
            asyncio.get_running_loop().add_reader(self._fd, self._pull)
        deadline = time.monotonic() + timeout
        while True:
            if not self._queue:
                self._pull()
            while self._queue:
                frames = self._queue.popleft()
                try:
                    envelope = wire.decode(frames)
                except wire.WireError as exc:
                    self.counters[f"sub_dropped_{exc.reason}"] += 1
                    continue
                self.counters["sub_received"] += 1
                self._track(envelope)
                return envelope
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return None

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
        if self._fd is not None:
            with contextlib.suppress(RuntimeError):  # no loop any more: nothing to remove
                asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None
        self.sock.close(linger=0)


# --- request / reply ---------------------------------------------------------------------------


class _Drain:
    """Feeds every message readable on a socket to `on_frames`, from the event loop's reader
    callback on the socket's file descriptor.

    ZeroMQ's descriptor is edge-triggered and also fires for sends, so the callback always
    reads until the socket reports no input, and `kick()` must follow every send on the
    same socket (a send can consume the edge that announced a pending message).  This
    costs one loop wake-up per burst instead of a future per message, which halves the
    round trip of a call.
    """

    def __init__(self, sock: zmq.Socket[bytes], on_frames: Callable[[list[bytes]], None]) -> None:
        self.sock = sock
        self.on_frames = on_frames
        self.loop = asyncio.get_running_loop()
        self.fd = int(sock.getsockopt(zmq.FD))
        self.loop.add_reader(self.fd, self.drain)
        self._kicked = False
        self.kick()

    def drain(self) -> None:
        self._kicked = False
        while int(self.sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self.on_frames(frames)

    def kick(self) -> None:
        if not self._kicked:
            self._kicked = True
            self.loop.call_soon(self.drain)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)


class RpcServer:
    """Serves calls on a ROUTER socket, each in its own task, replying exactly once."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, stamper: wire.Stamper,
                 publisher: Publisher | None, counters: Counters) -> None:
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER, socket_class=zmq.Socket)
        tune(self.sock, RPC_HWM)
        self.sock.bind(endpoint)
        self.stamper = stamper
        self.publisher = publisher
        self.counters = counters
        self.handlers: dict[str, Handler] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._drain: _Drain | None = None

    def register(self, method: str, handler: Handler) -> None:
        self.handlers[method] = handler

    async def serve(self, stop: asyncio.Event) -> None:
        self._drain = _Drain(self.sock, self._on_frames)
        try:
            await stop.wait()
        finally:
            self._drain.close()
            self._drain = None

    def _on_frames(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            self.counters["rpc_dropped_frame_count"] += 1
            return
        identity, rest = frames[0], frames[1:]
        try:
            envelope = wire.decode(rest)
            request = Request.from_body(envelope.body)
        except (wire.WireError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, wire.WireError) else "bad_request"
            self.counters[f"rpc_dropped_{reason}"] += 1
            return
        if len(self._tasks) >= MAX_IN_FLIGHT:
            self._reply(identity, envelope, request, "busy",
                        error=("busy", "too many requests in flight"))
            return
        task = asyncio.create_task(self._handle(identity, envelope, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, budget: float) -> None:
        """Let calls in progress finish (and reply) within `budget` seconds."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=budget)
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, identity: bytes, envelope: wire.Envelope, request: Request) -> None:
        started = time.monotonic()
        if request.deadline < time.time():
            self._reply(identity, envelope, request, "expired", started,
                        error=("expired", "request deadline passed before it was served"))
            return
        handler = self.handlers.get(request.method)
        if handler is None:
            self._reply(identity, envelope, request, "unknown_method", started,
                        error=("unknown_method", f"no method {request.method!r}"))
            return
        try:
            result = await handler(request.params)
        except RemoteError as exc:
            self._reply(identity, envelope, request, "error", started,
                        error=(exc.kind, exc.message))
        except asyncio.CancelledError:
            self._reply(identity, envelope, request, "error", started,
                        error=("stopping", "the process is shutting down"))
            raise
        except Exception as exc:
            log.exception("handler %s failed", request.method)
            self._reply(identity, envelope, request, "error", started,
                        error=("internal", f"{type(exc).__name__}: {exc}"))
        else:
            self._reply(identity, envelope, request, "ok", started, result=result)

    def _reply(self, identity: bytes, envelope: wire.Envelope, request: Request,
               outcome: str, started: float | None = None, result: Any = None,
               error: tuple[str, str] | None = None) -> None:
        err = {"type": error[0], "message": error[1]} if error else None
        reply = Reply(request.method, error is None, result, err)
        topic = reply.topic()
        try:
            frames = wire.encode(topic, self.stamper.header(topic, envelope.header.msg_id),
                                 reply.to_body())
        except wire.WireError as exc:
            err = {"type": "internal", "message": f"reply not encodable: {exc}"}
            reply = Reply(request.method, False, None, err)
            frames = wire.encode(topic, self.stamper.header(topic, envelope.header.msg_id),
                                 reply.to_body())
            outcome = "error"
        try:
            # ROUTER never blocks: a reply to a vanished or saturated peer is dropped.
            self.sock.send_multipart([identity, *frames], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self.counters["rpc_reply_failed"] += 1
            log.debug("reply to %s not sent: %s", request.method, exc)
        if self._drain is not None:
            self._drain.kick()
        self.counters[f"rpc_{outcome}"] += 1
        if self.publisher is not None:
            duration = (time.monotonic() - started) * 1000 if started is not None else 0.0
            self.publisher.publish(RpcTrace(
                self.stamper.source, request.method, envelope.header.msg_id,
                envelope.header.source, round(duration, 3), outcome,
                err["message"] if err else None))

    def close(self) -> None:
        self.sock.close(linger=0)


class RpcClient:
    """Calls one server; any number of calls may be in flight at once."""

    SEND_RETRY = 0.005  # while no server is connected, retry the send this often

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, stamper: wire.Stamper,
                 default_timeout: float = 8.0, counters: Counters | None = None) -> None:
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER, socket_class=zmq.Socket)
        tune(self.sock, RPC_HWM)
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        self.sock.connect(endpoint)
        self.endpoint = endpoint
        self.stamper = stamper
        self.default_timeout = default_timeout
        self.counters = counters if counters is not None else Counters()
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._drain: _Drain | None = None

    async def call(self, method: str, params: dict[str, Any] | None = None,
                   timeout: float | None = None) -> Any:
        """Return the handler's result, or raise RpcTimeout / RpcError."""
        timeout = self.default_timeout if timeout is None else timeout
        if self._drain is None:
            self._drain = _Drain(self.sock, self._on_frames)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        request = Request(method, params or {}, time.time() + timeout)
        topic = request.topic()
        header = self.stamper.header(topic)
        frames = wire.encode(topic, header, request.to_body())
        future: asyncio.Future[Reply] = loop.create_future()
        self._pending[header.msg_id] = future
        timer = loop.call_at(deadline, _expire, future)
        sent = False
        try:
            while True:
                try:
                    self.sock.send_multipart(frames, flags=zmq.NOBLOCK)
                    sent = True
                    break
                except zmq.Again:
                    # No server connected (IMMEDIATE): nothing is queued; try again soon.
                    if loop.time() + self.SEND_RETRY >= deadline:
                        raise _Expired() from None
                    await asyncio.sleep(self.SEND_RETRY)
            self._drain.kick()
            reply = await future
        except _Expired:
            self.counters["rpc_call_timeout"] += 1
            raise RpcTimeout(f"{method}: no reply from {self.endpoint} within {timeout:g} s",
                             delivered=sent) from None
        finally:
            timer.cancel()
            self._pending.pop(header.msg_id, None)
        if not reply.ok:
            error = reply.error or {}
            raise RpcError(str(error.get("type", "error")), str(error.get("message", "")))
        return reply.result

    def _on_frames(self, frames: list[bytes]) -> None:
        try:
            envelope = wire.decode(frames)
            reply = Reply.from_body(envelope.body)
        except (wire.WireError, ValueError):
            self.counters["rpc_reply_dropped"] += 1
            return
        future = self._pending.get(envelope.header.reply_to or "")
        if future is None or future.done():
            self.counters["rpc_reply_late"] += 1
            return
        future.set_result(reply)

    def close(self) -> None:
        if self._drain is not None:
            self._drain.close()
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        self.sock.close(linger=0)


class _Expired(Exception):
    """A call's deadline passed (internal; callers see RpcTimeout)."""


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(_Expired())
