"""The executor's ear on the host's networks: netbridge's events in, re-homing passes out.

* Subscribes to netbridge's PUB socket: `net.discovery` replaces the interface table,
  `net.change` updates one interface; `svc.netbridge.alive` beats reveal a (re)started
  netbridge, whose `interfaces` snapshot is then fetched (PUB/SUB is lossy: a discovery
  published before the subscription was joined would otherwise be missed).  A snapshot is
  also asked for once at start.  Stale snapshots (netmon away) are not acted upon.
* Every event marks the interfaces concerned; one task runs re-homing passes
  (`rehome.run_pass`) one at a time, so events arriving during a pass lead to one more
  pass.  Parents whose runtimes are busy with another operation are tried again shortly.
* Passes wait for the executor's first view of the engine; the resync after every
  (re)connection to the engine asks for a pass over every parent.

Counters (in the liveness beat): `net_events_received`, `net_snapshots`,
`rehome_passes`, `rehome_pass_errors`, and `net_events_settled` — the number of events
received before the last completed pass began (all of them have been acted upon).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from common.bus import BusError
from common.messages import Alive, MessageError, NetChange, NetDiscovery, parse
from common.service import Runtime
from services.executor.context import Context
from services.executor.errors import DockerUnavailable
from services.executor.net.hostnets import subnets
from services.executor.rehome import check as rehome

log = logging.getLogger(__name__)

RECV_WAIT = 10.0  # the listener ends by cancellation; messages wake it at once anyway
SNAPSHOT_TIMEOUT = 3.0
BUSY_RETRY = 0.3
ALL = "*"
TOPICS = ("net.", "svc.netbridge.alive")  # what the runner subscribes to on netbridge


class NetWatch:
    def __init__(self, runtime: Runtime, ctx: Context) -> None:
        self.rt = runtime
        self.ctx = ctx
        self._dirty = asyncio.Event()
        self._pending: set[str] = set()
        self._netbridge_pid: int | None = None
        self._client = runtime.clients["netbridge"]
        self._tasks: set[asyncio.Task[Any]] = set()
        self._asked = 0  # pokes so far
        self._served = 0  # pokes made before the last completed pass began

    def poke(self, parents: set[str] | None = None) -> None:
        """Ask for a pass over `parents` (None: every parent)."""
        self._pending |= {ALL} if parents is None else parents
        self._asked += 1
        self._dirty.set()

    async def full_pass(self, timeout: float) -> bool:
        """Ask for a pass over every parent and wait until one that began after the
        request has completed (the boot sync's network check); False on timeout."""
        self.poke()
        wanted = self._asked
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._served < wanted:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="net-listen")
        passes = asyncio.create_task(self._passes(), name="rehome-passes")
        try:
            await self.rt.stop.wait()
        finally:
            for task in (listener, passes, *self._tasks):
                task.cancel()
            await asyncio.gather(listener, passes, *self._tasks, return_exceptions=True)

    # --- events in ----------------------------------------------------------------------

    async def _listen(self) -> None:
        sub = self.rt.subscriber
        self._spawn(self.snapshot())
        while not self.rt.stop.is_set():
            envelope = await sub.recv(RECV_WAIT)
            if envelope is None:
                continue
            try:
                message = parse(envelope)
            except MessageError as exc:
                log.warning("ignoring %s: %s", envelope.topic, exc)
                continue
            self.handle(message)

    def handle(self, message: Any) -> None:
        if isinstance(message, NetChange):
            iface = message.interface
            if not isinstance(iface, dict) or not isinstance(iface.get("interface"), str):
                return
            self.rt.counters["net_events_received"] += 1
            self.ctx.hostnets.update(iface)
            log.debug("net.change %s: active=%s subnets=%s", iface["interface"],
                      iface.get("active", True), subnets(iface))
            self.poke({iface["interface"]})
        elif isinstance(message, NetDiscovery):
            self.rt.counters["net_events_received"] += 1
            self.ctx.hostnets.replace([i for i in message.interfaces if isinstance(i, dict)])
            self.poke()
        elif isinstance(message, Alive) and message.pid != self._netbridge_pid:
            self._netbridge_pid = message.pid
            self._spawn(self.snapshot())

    async def snapshot(self) -> bool:
        """Fill the table from netbridge's `interfaces`; False when it did not answer or
        its data is stale."""
        try:
            result = await self._client.call("interfaces", {}, timeout=SNAPSHOT_TIMEOUT)
        except BusError as exc:
            log.debug("no interface snapshot from netbridge: %s", exc)
            return False
        if not isinstance(result, dict) or result.get("stale") or \
                not isinstance(result.get("interfaces"), list):
            return False
        self.rt.counters["net_snapshots"] += 1
        self.ctx.hostnets.replace([i for i in result["interfaces"] if isinstance(i, dict)])
        self.poke()
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- passes out -----------------------------------------------------------------------

    async def _passes(self) -> None:
        while not self.rt.stop.is_set():
            await self._dirty.wait()
            self._dirty.clear()
            if not self.ctx.ready.is_set() or not self.ctx.docker.available:
                continue  # the resync after (re)connection pokes again
            pending, self._pending = self._pending, set()
            parents = None if ALL in pending else pending
            events = self.rt.counters["net_events_received"]
            asked = self._asked
            try:
                retry = await rehome.run_pass(self.ctx, parents)
                # Every event received before this pass began has now been acted upon.
                self.rt.counters["net_events_settled"] = events
                self._served = asked
            except DockerUnavailable as exc:
                log.info("re-homing pass postponed: %s", exc.text)
                self._pending |= pending
                continue
            except Exception:
                log.exception("re-homing pass failed")
                self.rt.counters["rehome_pass_errors"] += 1
                continue
            finally:
                self.rt.counters["rehome_passes"] += 1
            if retry:
                self._spawn(self._later({ALL} if ALL in retry else retry))

    async def _later(self, parents: set[str]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(BUSY_RETRY)
            self.poke(None if ALL in parents else parents)
