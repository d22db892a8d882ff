"""The metrics service object.

Concurrency: asyncio for the bus.  psutil and SQLite run in one dedicated worker thread,
so a slow disk never stalls the loop and SQLite is only ever touched from one thread.
Engine calls (listing, inspect, cgroup reads) run in a separate pool of two threads
(`EngineAccess`), so a query is never queued behind a collection cycle; stats streams, when
used, have a daemon thread each (`streams.py`).  The host sample and the device cycle are
two independent loops: a slow or absent engine never delays the heartbeat sample.

Request methods (params → result):

* `consumption_orchestrator` `{cpuPeriod, memoryPeriod, max_points?}` →
  `{memory, cpu, os, kernel, disk, cpu_usage: [{timestamp, cpu}], memory_usage:
  [{timestamp, memory}]}` — the fields of `get_consumption_orchestrator` this process owns;
* `consumption_device` `{device_id, cpuPeriod, memoryPeriod, max_points?}` →
  `{device_id, memory: "512 MB"|"unlimited", cpu: "1.0 vCPU"|"unlimited", cpu_usage,
  memory_usage}` (plus `stale: true` when answered from history while the engine is away);
  `{status: "error", error: "Device x not found", device_id}` for a device that is neither
  a managed runtime nor in the history; RemoteError `docker_unavailable` when the engine is
  away and the device has no history;
* `host_sample` `{}` → the latest `metrics.host` body (error `not_ready` before the first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common import adopted, labels
from common.bus import RemoteError
from common.errors import DockerUnavailable
from common.hostsample import HostSampler, static_facts
from common.messages import HostMetrics
from common.service import Runtime
from services.metrics import containers
from services.metrics.access import EngineAccess
from services.metrics.devices import Collected, DeviceCollector
from services.metrics.engine import Engine
from services.metrics.history import MAX_POINTS, History
from services.metrics.periods import parse_period
from services.metrics.streams import StreamSource

log = logging.getLogger(__name__)

HISTORY_FILE = "consumption.sqlite3"
# Points per series the cloud receives unless it asks for fewer (or, up to MAX_POINTS_LIMIT,
# for more): see history.resolution and docs/metrics.md.
DEFAULT_MAX_POINTS = MAX_POINTS
MAX_POINTS_LIMIT = 2880
TRIM_EVERY = 60  # samples between trims
DOCKER_WORKERS = 2  # one for the collection cycle, one for queries
QUERY_BUDGET = 5.0  # seconds of engine time a consumption query may spend
# A device whose container is missing from this many successful listings in a row is gone
# for good: the engine keeps stopped containers, so only a removal makes it vanish.  More
# than one, so that a listing taken in the middle of a re-create does not wipe a history.
FORGET_AFTER = 3


class MetricsService:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        cfg = runtime.config
        self.interval = cfg.metrics_interval
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-io")
        self.history = History(cfg.state_dir / HISTORY_FILE, interval=self.interval)
        self.sampler = HostSampler()
        self.latest: HostMetrics | None = None
        self._facts: dict[str, Any] | None = None
        self.docker = EngineAccess(cfg.docker_host, cfg.docker_timeout, DOCKER_WORKERS)
        self.collector = DeviceCollector(
            self.docker, lambda: labels.read_instance(cfg.instance_id, cfg.state_dir),
            cfg.container_stats, cfg.cgroup_root, self.interval, StreamSource(cfg.docker_host),
            adopted=lambda: adopted.read(cfg.state_dir))
        self._known: set[str] | None = None  # devices with history, loaded on first cycle
        self._absent: dict[str, int] = {}
        self._limits: dict[str, tuple[int, int]] = {}  # as last written to the history
        runtime.rpc.register("consumption_orchestrator", self.consumption_orchestrator)
        runtime.rpc.register("consumption_device", self.consumption_device)
        runtime.rpc.register("host_sample", self.host_sample)

    async def _io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # --- loops ------------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(self._every("host", self._cycle),
                             self._every("device", self._device_cycle))

    async def _every(self, name: str, cycle: Callable[[int], Awaitable[None]]) -> None:
        stop = self.rt.stop
        start = time.monotonic()
        tick = 0
        while not stop.is_set():
            try:
                await cycle(tick)
            except Exception:
                log.exception("metrics %s cycle failed", name)
                self.rt.counters[f"{name}_cycle_failed"] += 1
            # Drift-free: the n-th sample is due at start + n * interval; ticks missed by a
            # stall are skipped rather than fired in a burst.
            tick = max(tick + 1, int((time.monotonic() - start) / self.interval))
            delay = start + tick * self.interval - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, delay))

    async def _cycle(self, tick: int) -> None:
        sample: HostMetrics = await self._io(self.sampler.sample)
        self.latest = sample
        self.rt.publisher.publish(sample)
        self.rt.counters["samples"] += 1
        memory_mb = sample.memory_usage * 1024
        await self._io(self.history.add, sample.sampled_at, sample.cpu_usage, memory_mb)
        if tick % TRIM_EVERY == 0:
            removed = await self._io(self.history.trim, time.time())
            if removed:
                log.debug("trimmed %d history rows", removed)

    async def _device_cycle(self, tick: int) -> None:
        if self._known is None:
            self._known = await self._io(self.history.known_devices)
        collected: Collected = await self.docker.run(self.collector.collect)
        self.rt.counters["device_cycles"] += 1
        self.rt.counters["device_listings"] += collected.fresh
        if collected.present is None:
            self.rt.counters["device_cycle_no_engine"] += 1
            return
        for device, limits in collected.limits.items():
            await self._remember_limits(device, limits)
        if collected.rows:
            await self._io(self.history.add_devices, collected.rows)
            self._known.update(row[0] for row in collected.rows)
            self.rt.counters["device_samples"] += len(collected.rows)
            for source, count in collected.by_source.items():
                self.rt.counters[f"device_samples_{source}"] += count
        if collected.fresh:  # an absence from a listing of earlier cycles counts once
            await self._forget_missing(collected.present)
        if self._absent:
            # A device is missing: list every cycle until it is back or forgotten, so a
            # removal is forgotten after FORGET_AFTER cycles, as when every cycle listed.
            self.collector.want_listing()

    async def _remember_limits(self, device: str, limits: tuple[int, int]) -> None:
        if self._limits.get(device) == limits:
            return
        await self._io(self.history.set_limits, device, limits[0], limits[1], time.time())
        self._limits[device] = limits
        if self._known is not None:
            self._known.add(device)

    async def _forget_missing(self, present: set[str]) -> None:
        assert self._known is not None
        for device in present:
            self._absent.pop(device, None)
        for device in sorted(self._known - present):
            misses = self._absent.get(device, 0) + 1
            if misses < FORGET_AFTER:
                self._absent[device] = misses
                continue
            removed = await self._io(self.history.forget_device, device)
            log.info("device %s is gone: forgot its history (%d samples)", device, removed)
            self._known.discard(device)
            self._absent.pop(device, None)
            self._limits.pop(device, None)
            self.rt.counters["devices_forgotten"] += 1

    # --- requests -----------------------------------------------------------------------

    async def host_sample(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.latest is None:
            raise RemoteError("not_ready", "no host sample taken yet")
        return self.latest.to_body()

    async def consumption_orchestrator(self, params: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        cpu_start, cpu_end = parse_period(params.get("cpuPeriod"), now)
        mem_start, mem_end = parse_period(params.get("memoryPeriod"), now)
        max_points = _max_points(params)
        if self._facts is None:
            self._facts = await self._io(static_facts)
        cpu, mem = await self._io(self.history.usage, (cpu_start, cpu_end),
                                  (mem_start, mem_end), max_points)
        return {**self._facts, **_usage(cpu, mem)}

    async def consumption_device(self, params: dict[str, Any]) -> dict[str, Any]:
        device = params.get("device_id")
        if not isinstance(device, str) or not device:
            raise RemoteError("invalid", "device_id must be a non-empty string")
        now = time.time()
        cpu_start, cpu_end = parse_period(params.get("cpuPeriod"), now)
        mem_start, mem_end = parse_period(params.get("memoryPeriod"), now)
        max_points = _max_points(params)
        reply: dict[str, Any] = {"device_id": device}
        # The history is read while the engine is asked about the container: the two waits
        # overlap (under load the engine's answer is the longer).  When the device turns
        # out unknown the read is dropped unused.
        usage = asyncio.ensure_future(self._io(self.history.device_usage, device,
                                               (cpu_start, cpu_end), (mem_start, mem_end),
                                               max_points))
        usage.add_done_callback(_retrieved)
        try:
            facts = await self._inspect(device)
        except DockerUnavailable as exc:
            # Decision: history beats an error.  With samples on record the graph is still
            # right up to the moment the engine went away; the limits are the last seen.
            if not await self._io(self.history.has_device, device):
                raise RemoteError(exc.kind, exc.text) from None
            facts = None
            reply["stale"] = True
        if facts is not None:
            limits: tuple[int, int] | None = (facts.memory_bytes, facts.nano_cpus)
            await self._remember_limits(device, (facts.memory_bytes, facts.nano_cpus))
        elif reply.get("stale") or await self._io(self.history.has_device, device):
            # Removed and not forgotten yet, or the engine is away: answer from history.
            limits = await self._io(self.history.limits, device)
        else:
            return {"status": "error", "error": f"Device {device} not found",
                    "device_id": device}
        cpu, mem = await usage
        reply["memory"] = containers.format_memory(limits[0] if limits else None)
        reply["cpu"] = containers.format_cpu(limits[1] if limits else None)
        reply.update(_usage(cpu, mem))
        return reply

    async def _inspect(self, device: str) -> containers.Facts | None:
        """The device's container facts if it is one of our runtimes; DockerUnavailable
        when the engine cannot be asked."""
        instance = self.collector.instance or await self._io(self.collector.resolve_instance)
        if not self.docker.available:
            try:
                await asyncio.wait_for(self.docker.run(self.collector.ensure_connected),
                                       QUERY_BUDGET)
            except TimeoutError:
                raise DockerUnavailable(
                    f"the engine did not answer within {QUERY_BUDGET:g} s") from None
        if instance is None:
            return None
        facts: containers.Facts | None = await self.docker.call(
            self._lookup, device, instance, budget=QUERY_BUDGET)
        return facts

    def _lookup(self, api: Engine, device: str, instance: str) -> containers.Facts | None:
        # The adopted list is read in the engine's thread, beside the inspect: a query
        # hands work to another thread as few times as it can (each is a wake-up of both).
        return containers.inspect_runtime(api, device, instance, self.collector.adopted())

    def close(self) -> None:
        self.collector.close()
        self.docker.close()
        self.pool.shutdown(wait=True)
        self.history.close()


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Marks a dropped future's outcome as seen, so an error in it is not reported as
    never retrieved (it is the caller's when the caller awaits it)."""
    if not future.cancelled():
        future.exception()


def _max_points(params: dict[str, Any]) -> int:
    value = params.get("max_points", DEFAULT_MAX_POINTS)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return DEFAULT_MAX_POINTS
    return min(value, MAX_POINTS_LIMIT)


def _usage(cpu: list[tuple[int, float]], mem: list[tuple[int, float]]) -> dict[str, Any]:
    return {
        "cpu_usage": [{"timestamp": ts, "cpu": round(v, 1)} for ts, v in cpu],
        "memory_usage": [{"timestamp": ts, "memory": round(v)} for ts, v in mem],
    }
