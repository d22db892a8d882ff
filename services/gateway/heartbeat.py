"""The `heartbeat` event: every `heartbeat_interval` seconds while connected, no ack.

Payload (PROTOCOL.md keys first, then ours)::

    {"agent_id", "cpu_usage" %, "memory_usage" GB, "memory_total" GB, "disk_usage" GB,
     "disk_total" GB, "uptime" s, "status": "active", "timestamp": ISO-8601,
     "agent_version", "sample_source": "metrics" | "gateway", "sample_age": s | null,
     "unavailable": [process names]}

As the original computes them: `status` is always "active"; `uptime` is the agent's own
running time in whole seconds (since supervisord started the suite, or since this process
started when it runs alone), not the host's; `memory_usage` and `memory_total` are psutil's
`used` and `total` in GB with one decimal, read here at each beat (one read of
/proc/meminfo, with psutil's arithmetic: `common/procfs.py`).  CPU and disk come from the
latest `metrics.host` sample.

When metrics is down or its sample is stale, the heartbeat still goes out on time with
numbers the gateway samples itself (`sample_source: "gateway"`), and `unavailable` names
what the agent lacks (`"metrics"`, and any process whose liveness beats stopped).

Rhythm: the n-th beat is due at connect time + n * interval (no drift from the time a
beat takes); after a stall one late beat goes out at once and the grid resumes, never a
burst.  The loop runs in its own task and only queues the event on the link, so no
command can delay it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from common import procfs
from common.messages import HostMetrics
from common.version import __version__
from services.gateway.peers import PeerWatch

if TYPE_CHECKING:
    from common.hostsample import HostSampler

log = logging.getLogger(__name__)

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
SAMPLE_KEYS = ("cpu_usage", "memory_usage", "memory_total", "disk_usage", "disk_total",
               "uptime")
GB = 1024**3


def agent_started_at() -> float:
    """When the agent started: its supervisord when that is this process's parent, else
    this process (the gateway run on its own)."""
    parent = os.getppid()
    try:
        if "supervisord" in " ".join(procfs.process_command_line(parent)):
            return procfs.process_started_at(parent)
    except (OSError, ValueError, IndexError):
        pass
    return procfs.process_started_at(os.getpid())


def own_figures(started_at: float) -> dict[str, Any]:
    """The heartbeat figures the original computes itself: used and total memory (GB,
    one decimal) and the agent's uptime in whole seconds."""
    used, total = procfs.memory_used_total()
    return {"memory_usage": round(used / GB, 1), "memory_total": round(total / GB, 1),
            "uptime": max(0, int(time.time() - started_at))}


AskSample = Callable[[], Awaitable[dict[str, Any]]]
PRIME_ATTEMPTS, PRIME_TIMEOUT, PRIME_PAUSE = 40, 1.0, 0.25  # about 10 s at most


class Heartbeat:
    def __init__(self, interval: float, watch: PeerWatch, stale_after: float,
                 ask_metrics: AskSample | None = None) -> None:
        self.interval = interval
        self.watch = watch
        self.stale_after = stale_after
        self.ask_metrics = ask_metrics
        self._sampler: HostSampler | None = None
        self._was_stale = False
        self.sent = 0
        self.started_at = agent_started_at()

    async def prime(self, stop: asyncio.Event, attempts: int = PRIME_ATTEMPTS) -> bool:
        """Ask metrics for its latest sample until one is known.  Run once at start, beside
        the link: a sample published before our subscription joined is never delivered,
        and the next comes an interval later, so the first beats would otherwise sample
        the host here (and load psutil for it).  Never in a beat's path: a slow or absent
        metrics cannot delay a beat.  True when a sample is known."""
        for _ in range(attempts):
            if self.watch.host_sample is not None:
                return True
            if self.ask_metrics is None or stop.is_set():
                return False
            try:
                body = await asyncio.wait_for(self.ask_metrics(), PRIME_TIMEOUT)
                sample = HostMetrics.from_body(body)
            except Exception as exc:  # not up yet, no sample yet, or gone
                log.debug("metrics' latest sample not available yet: %s", exc)
            else:
                age = max(0.0, time.time() - sample.sampled_at)
                if self.watch.host_sample is None and age <= self.stale_after:
                    self.watch.host_sample = sample
                    self.watch.host_sample_at = time.monotonic() - age
                    return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PRIME_PAUSE)
        return self.watch.host_sample is not None

    async def _own_sample(self) -> HostMetrics:
        if self._sampler is None:
            # psutil (in hostsample) is loaded only when metrics is first missed.
            from common.hostsample import HostSampler

            self._sampler = await asyncio.to_thread(HostSampler)
        return await asyncio.to_thread(self._sampler.sample)

    async def payload(self, agent_id: str) -> dict[str, Any]:
        age = self.watch.sample_age()
        sample = self.watch.host_sample
        unavailable = self.watch.down()
        stale = sample is None or age is None or age > self.stale_after
        if stale != self._was_stale:
            self._was_stale = stale
            if stale:
                log.warning("no fresh metrics sample (age %s s): heartbeats carry the "
                            "gateway's own sample", "none" if age is None else f"{age:.0f}")
            else:
                log.info("metrics samples are back in the heartbeat")
        if stale:
            sample = await self._own_sample()
            if "metrics" not in unavailable:
                unavailable.append("metrics")
        assert sample is not None
        body = sample.to_body()
        payload: dict[str, Any] = {"agent_id": agent_id}
        payload.update((key, body[key]) for key in SAMPLE_KEYS)
        payload.update(own_figures(self.started_at))
        payload.update({
            "status": "active",
            "timestamp": dt.datetime.now().isoformat(),
            "agent_version": __version__,
            "sample_source": "gateway" if stale else "metrics",
            "sample_age": None if stale or age is None else round(age, 3),
            "unavailable": sorted(unavailable),
        })
        return payload

    async def run(self, emit: Emit, agent_id: str, stop: asyncio.Event) -> None:
        """Beat until `stop` is set (the link went down or the process stops)."""
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            try:
                await emit("heartbeat", await self.payload(agent_id))
                self.sent += 1
            except Exception as exc:  # a beat lost to a dying link; the next one is due
                log.warning("heartbeat not sent: %s", exc)
            n += 1
            now = time.monotonic()
            if start + n * self.interval < now:
                # Late (the loop was stalled): one beat now, then back on the grid.
                n = max(n, math.floor((now - start) / self.interval))
            delay = start + n * self.interval - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, delay))
