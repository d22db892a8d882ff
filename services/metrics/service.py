"""The metrics service object.

Concurrency: asyncio for the bus; psutil and SQLite run in one dedicated worker thread, so
a slow disk never stalls the loop and SQLite is only ever touched from one thread.

Request methods (params → result):

* `consumption_orchestrator` `{cpuPeriod, memoryPeriod, max_points?}` →
  `{memory, cpu, os, kernel, disk, cpu_usage: [{timestamp, cpu}], memory_usage:
  [{timestamp, memory}]}` — the fields of `get_consumption_orchestrator` this process owns;
* `host_sample` `{}` → the latest `metrics.host` body (error `not_ready` before the first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common.bus import RemoteError
from common.messages import HostMetrics
from common.service import Runtime
from services.metrics.history import History
from services.metrics.host import HostSampler, static_facts
from services.metrics.periods import parse_period

log = logging.getLogger(__name__)

HISTORY_FILE = "consumption.sqlite3"
DEFAULT_MAX_POINTS = 2880
TRIM_EVERY = 60  # samples between trims


class MetricsService:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.interval = runtime.config.metrics_interval
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-io")
        self.history = History(runtime.config.state_dir / HISTORY_FILE)
        self.sampler = HostSampler()
        self.latest: HostMetrics | None = None
        self._facts: dict[str, Any] | None = None
        runtime.rpc.register("consumption_orchestrator", self.consumption_orchestrator)
        runtime.rpc.register("host_sample", self.host_sample)

    async def _io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def run(self) -> None:
        stop = self.rt.stop
        start = time.monotonic()
        tick = 0
        while not stop.is_set():
            try:
                await self._cycle(tick)
            except Exception:
                log.exception("metrics cycle failed")
                self.rt.counters["cycle_failed"] += 1
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

    async def host_sample(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.latest is None:
            raise RemoteError("not_ready", "no host sample taken yet")
        return self.latest.to_body()

    async def consumption_orchestrator(self, params: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        cpu_start, cpu_end = parse_period(params.get("cpuPeriod"), now)
        mem_start, mem_end = parse_period(params.get("memoryPeriod"), now)
        max_points = params.get("max_points", DEFAULT_MAX_POINTS)
        if not isinstance(max_points, int) or isinstance(max_points, bool) or max_points < 1:
            max_points = DEFAULT_MAX_POINTS
        if self._facts is None:
            self._facts = await self._io(static_facts)
        cpu = await self._io(self.history.series, "cpu", cpu_start, cpu_end, max_points)
        mem = await self._io(self.history.series, "memory_mb", mem_start, mem_end, max_points)
        return {
            **self._facts,
            "cpu_usage": [{"timestamp": ts, "cpu": round(v, 1)} for ts, v in cpu],
            "memory_usage": [{"timestamp": ts, "memory": round(v)} for ts, v in mem],
        }

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.history.close()



