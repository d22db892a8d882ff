"""Request/reply: DEALER clients calling ROUTER servers, with request ids and deadlines.

* Any number of calls may be in flight on one client socket, and a slow handler never
  delays a fast one.  Every call has a deadline.  A DEALER never enters a lockstep state,
  so a server that dies mid-request cannot wedge the client: the call times out, the
  socket reconnects by itself when the server is back, and a late reply to a forgotten id
  is dropped.  Clients are `immediate` (`options.tune`), so a request is never queued for
  a server that is not there; servers also refuse to start work past the deadline carried
  in the request.
* The server replies exactly once: a handler's return value, or an error reply for any
  exception, an unknown method, an expired deadline, or too many calls in flight.  Each
  call is published as an `rpc.<server>.<method>` trace for the tap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import zmq

from common import wire
from common.bus.errors import Counters, RemoteError, RpcError, RpcTimeout
from common.bus.options import RPC_HWM, tune
from common.bus.pubsub import Publisher
from common.bus.reader import Reader
from common.messages import Reply, Request, RpcTrace

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


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
        self._reader: Reader | None = None

    def register(self, method: str, handler: Handler) -> None:
        self.handlers[method] = handler

    async def serve(self, stop: asyncio.Event) -> None:
        self._reader = Reader(self.sock, self._on_frames)
        try:
            await stop.wait()
        finally:
            self._reader.close()
            self._reader = None

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
        if self._reader is not None:
            self._reader.kick()
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
        tune(self.sock, RPC_HWM, immediate=True)
        self.sock.connect(endpoint)
        self.endpoint = endpoint
        self.stamper = stamper
        self.default_timeout = default_timeout
        self.counters = counters if counters is not None else Counters()
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._reader: Reader | None = None

    async def call(self, method: str, params: dict[str, Any] | None = None,
                   timeout: float | None = None) -> Any:
        """Return the handler's result, or raise RpcTimeout / RpcError."""
        timeout = self.default_timeout if timeout is None else timeout
        if self._reader is None:
            self._reader = Reader(self.sock, self._on_frames)
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
            self._reader.kick()
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
        if self._reader is not None:
            self._reader.close()
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        self.sock.close(linger=0)


class _Expired(Exception):
    """A call's deadline passed (internal; callers see RpcTimeout)."""


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(_Expired())
