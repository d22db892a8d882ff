"""The service runner: what every agent process does around its own work.

`run_service()` is called from a process's `main()`.  It builds the config, sets up
logging, creates the one ZeroMQ context, binds the process's PUB and request sockets, hands
them to the service object, and then:

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
from common.bus import Counters, Endpoints, Publisher, RpcClient, RpcServer, prepare_run_dir
from common.config import Config, ConfigError
from common.logs import setup_logging
from common.messages import Alive, Stopping
from common.version import __version__

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET = 5.0
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_STARTUP = 0, 1, 2, 3


@dataclass
class Runtime:
    """What a service object receives: everything `main()` created for it."""

    name: str
    config: Config
    ctx: zmq.asyncio.Context
    endpoints: Endpoints
    publisher: Publisher
    rpc: RpcServer
    stamper: wire.Stamper
    counters: Counters
    stop: asyncio.Event
    started: float = field(default_factory=time.monotonic)

    def client(self, server: str, timeout: float | None = None) -> RpcClient:
        """A request client to another process (closed by the caller)."""
        return RpcClient(self.ctx, self.endpoints.rpc(server), self.stamper,
                         timeout or self.config.rpc_timeout, self.counters)


class Service(Protocol):
    async def run(self) -> None:
        """The service's own work; returns when `runtime.stop` is set."""

    def close(self) -> None:
        """Release what the service opened (its own sockets, files)."""


ServiceFactory = Callable[[Runtime], Service]


def run_service(name: str, factory: ServiceFactory, argv: Sequence[str] | None = None,
                description: str | None = None) -> int:
    try:
        config, _ = Config.load(argv, prog=f"orchestrator-{name}", description=description)
    except ConfigError as exc:
        print(f"orchestrator-{name}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        dirs.prepare(config.run_dir, config.state_dir)
    except dirs.UnsafeDirectory as exc:
        print(f"orchestrator-{name}: refusing to start: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    setup_logging(config, name)
    return asyncio.run(serve(name, config, factory))


async def serve(name: str, config: Config, factory: ServiceFactory) -> int:
    try:
        prepare_run_dir(config.run_dir)
    except OSError as exc:
        log.error("cannot prepare run directory %s: %s", config.run_dir, exc)
        return EXIT_STARTUP
    endpoints = Endpoints(config.run_dir)
    ctx = zmq.asyncio.Context()
    stamper = wire.Stamper(name)
    counters = Counters()
    stop = asyncio.Event()
    publisher: Publisher | None = None
    rpc: RpcServer | None = None
    service: Service | None = None
    try:
        try:
            publisher = Publisher(ctx, endpoints.pub(name), stamper, counters)
            rpc = RpcServer(ctx, endpoints.rpc(name), stamper, publisher, counters)
        except zmq.ZMQError as exc:
            log.error("cannot bind the bus endpoints in %s: %s", config.run_dir, exc)
            return EXIT_STARTUP
        runtime = Runtime(name, config, ctx, endpoints, publisher, rpc, stamper, counters, stop)
        rpc.register("ping", _ping(runtime))
        try:
            service = factory(runtime)
        except Exception:
            log.exception("%s could not start", name)
            return EXIT_STARTUP
        _install_signals(stop)
        _release_startup_memory()
        log.info("%s %s started (pid %d), bus in %s", name, __version__, os.getpid(),
                 config.run_dir)
        return await _run(runtime, service)
    finally:
        if service is not None:
            service.close()
        if rpc is not None:
            rpc.close()
        if publisher is not None:
            publisher.close()
        ctx.term()


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


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

