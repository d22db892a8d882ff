"""The service runner: what every agent process does around its own work.

`run_service()` is called from a process's `main()`.  It builds the config, sets up
logging, and opens the process's `Runtime`: the one ZeroMQ context and every socket the
service uses — its PUB and request sockets, a request client for each server it declared
in its `Peers`, and one SUB socket for the publishers and topics it declared — so no
service creates or closes a bus socket itself.  It hands the runtime to the service
object, and then:

* answers the built-in `ping` method on the request socket;
* publishes `svc.<name>.alive` every `beat_interval` seconds (pid, uptime, version and the
  process's counters);
* on SIGTERM or SIGINT only sets a flag; the loops notice, `svc.<name>.stopping` goes out,
  calls in progress get a short budget to reply, sockets close, the context terminates.

Exit codes: 0 after a clean stop, 2 for a configuration error, 3 when the process cannot
start (e.g. its endpoint cannot be bound), 1 when the service's own loop fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import zmq
import zmq.asyncio

from common import dirs, wire
from common.bus import (
    Counters,
    Endpoints,
    Publisher,
    RpcClient,
    RpcServer,
    Subscriber,
    prepare_run_dir,
)
from common.config import Config, ConfigError
from common.logs import setup_logging
from common.messages import Alive, Stopping
from common.version import __version__

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET = 5.0
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_STARTUP = 0, 1, 2, 3


@dataclass(frozen=True)
class Peers:
    """The bus sockets a service needs besides its own, declared by the service and
    created (and closed) by the runner."""

    calls: tuple[str, ...] = ()  # servers it calls: one request client each
    hears: tuple[str, ...] = ()  # publishers its one SUB socket connects to
    topics: tuple[str, ...] = ("",)  # the topic prefixes that SUB socket receives


NO_PEERS = Peers()


@dataclass
class Runtime:
    """What a service object receives: everything the runner created for it."""

    name: str
    config: Config
    ctx: zmq.asyncio.Context
    endpoints: Endpoints
    publisher: Publisher
    rpc: RpcServer
    stamper: wire.Stamper
    counters: Counters
    stop: asyncio.Event
    clients: dict[str, RpcClient] = field(default_factory=dict)
    sub: Subscriber | None = None
    started: float = field(default_factory=time.monotonic)
    # Called right before each liveness beat: a service copies figures into `counters`
    # there instead of waking on its own timer to keep them fresh.
    before_beat: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def open(cls, name: str, config: Config, peers: Peers = NO_PEERS) -> Runtime:
        """Create the context and every socket of `name` (raises zmq.ZMQError when an
        endpoint cannot be bound, with nothing left open)."""
        endpoints = Endpoints(config.run_dir)
        ctx = zmq.asyncio.Context()
        stamper, counters = wire.Stamper(name), Counters()
        opened: list[Publisher | RpcServer | RpcClient | Subscriber] = []
        try:
            publisher = Publisher(ctx, endpoints.pub(name), stamper, counters)
            opened.append(publisher)
            rpc = RpcServer(ctx, endpoints.rpc(name), stamper, publisher, counters)
            opened.append(rpc)
            runtime = cls(name, config, ctx, endpoints, publisher, rpc, stamper, counters,
                          asyncio.Event())
            for server in peers.calls:
                runtime.clients[server] = RpcClient(ctx, endpoints.rpc(server), stamper,
                                                    config.rpc_timeout, counters)
                opened.append(runtime.clients[server])
            if peers.hears:
                runtime.sub = Subscriber(ctx, endpoints.all_pubs(peers.hears), peers.topics,
                                         counters)
        except BaseException:
            for sock in reversed(opened):
                sock.close()
            ctx.term()
            raise
        return runtime

    @property
    def subscriber(self) -> Subscriber:
        """The SUB socket the service declared (`Peers.hears`)."""
        if self.sub is None:
            raise RuntimeError(f"{self.name} declared no publishers to hear")
        return self.sub

    def close(self) -> None:
        """Close every socket and terminate the context (after the service closed)."""
        if self.sub is not None:
            self.sub.close()
        for client in self.clients.values():
            client.close()
        self.rpc.close()
        self.publisher.close()
        self.ctx.term()


class Service(Protocol):
    async def run(self) -> None:
        """The service's own work; returns when `runtime.stop` is set."""

    def close(self) -> None:
        """Release what the service opened (files, threads; the runner closes sockets)."""


ServiceFactory = Callable[[Runtime], Service]


def run_service(name: str, factory: ServiceFactory, argv: Sequence[str] | None = None,
                description: str | None = None, peers: Peers = NO_PEERS) -> int:
    try:
        config, _ = Config.load(argv, prog=f"orchestrator-{name}", description=description)
    except ConfigError as exc:
        print(f"orchestrator-{name}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        dirs.prepare(config.run_dir, config.state_dir, config.agent_gid())
    except dirs.UnsafeDirectory as exc:
        print(f"orchestrator-{name}: refusing to start: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    setup_logging(config, name)
    return asyncio.run(serve(name, config, factory, peers))


async def serve(name: str, config: Config, factory: ServiceFactory,
                peers: Peers = NO_PEERS) -> int:
    try:
        prepare_run_dir(config.run_dir, shared=config.agent_gid() is not None)
    except OSError as exc:
        log.error("cannot prepare run directory %s: %s", config.run_dir, exc)
        return EXIT_STARTUP
    try:
        runtime = Runtime.open(name, config, peers)
    except zmq.ZMQError as exc:
        log.error("cannot bind the bus endpoints in %s: %s", config.run_dir, exc)
        return EXIT_STARTUP
    service: Service | None = None
    try:
        runtime.rpc.register("ping", _ping(runtime))
        try:
            service = factory(runtime)
        except Exception:
            log.exception("%s could not start", name)
            return EXIT_STARTUP
        _install_signals(runtime.stop)
        _release_startup_memory()
        _freeze_startup_objects()
        log.info("%s %s started (pid %d), bus in %s", name, __version__, os.getpid(),
                 config.run_dir)
        return await _run(runtime, service)
    finally:
        if service is not None:
            service.close()
        runtime.close()


async def _run(runtime: Runtime, service: Service) -> int:
    tasks = {
        asyncio.create_task(runtime.rpc.serve(runtime.stop), name="rpc"),
        asyncio.create_task(_beat(runtime), name="beat"),
        asyncio.create_task(service.run(), name="service"),
    }
    stopper = asyncio.create_task(runtime.stop.wait(), name="stop")
    done, _ = await asyncio.wait(tasks | {stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = EXIT_OK
    for task in done - {stopper}:
        if task.exception() is not None:
            log.error("%s loop failed", task.get_name(), exc_info=task.exception())
            code = EXIT_FAILED
        elif not runtime.stop.is_set():
            log.error("%s loop ended unexpectedly", task.get_name())
            code = EXIT_FAILED
    runtime.stop.set()
    reason = "signal" if code == EXIT_OK else "failure"
    runtime.publisher.publish(Stopping(runtime.name, reason))
    await runtime.rpc.drain(SHUTDOWN_BUDGET / 2)
    pending = [t for t in tasks | {stopper} if not t.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=SHUTDOWN_BUDGET / 2)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    log.info("%s stopped (%s)", runtime.name, reason)
    return code


async def _beat(runtime: Runtime) -> None:
    interval = runtime.config.beat_interval
    next_at = time.monotonic()
    while not runtime.stop.is_set():
        for hook in runtime.before_beat:
            hook()
        runtime.publisher.publish(Alive(
            runtime.name, os.getpid(), round(time.monotonic() - runtime.started, 3),
            __version__, dict(runtime.counters)))
        next_at += interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.stop.wait(), max(0.0, next_at - time.monotonic()))


def _ping(runtime: Runtime) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    async def ping(params: dict[str, Any]) -> dict[str, Any]:
        return {"name": runtime.name, "pid": os.getpid(), "version": __version__,
                "uptime": round(time.monotonic() - runtime.started, 3)}
    return ping


def _release_startup_memory() -> None:
    """Hand the heap pages freed after imports and set-up back to the system.

    Start-up leaves free but still mapped chunks in malloc's arenas; on a small device
    the idle footprint of four long-lived processes is worth one `malloc_trim`.  Only
    glibc has it; elsewhere this does nothing.
    """
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    gc.collect()
    trim(0)


def _freeze_startup_objects() -> None:
    """Leave what start-up made (modules, classes, settings: 20 to 45 thousand objects)
    out of every later collection.

    A full collection walks every tracked object: 6 to 11 ms for a program's start-up heap
    on a busy two-core machine, stalling every request in flight, which is the tail of
    the answer times.  Called right after a collection, so no garbage is frozen.
    """
    gc.freeze()


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

