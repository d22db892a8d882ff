"""Per-device sampling: one collection cycle over every managed runtime container.

`DeviceCollector.collect()` is blocking and runs in the metrics process's small Docker
pool, never on the event loop.  A cycle is: one container listing (filtered by our labels
on the engine's side), an inspect for each container that started since the last cycle
(its PID, cgroup parent and limits), then one `Reading` per running container from the
cheapest source available, and one sample per container that has a previous reading.

Sources, per container, chosen by `mode` (`ORCH_CONTAINER_STATS`):

* `cgroup` — the kernel's cgroup files (`cgroups.py`): microseconds per container;
* `api` — the engine's stats streams (`streams.py`);
* `auto` (default) — cgroup files when the container's cgroup is visible, else a stream.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import DockerUnavailable
from services.metrics import containers
from services.metrics.access import EngineAccess
from services.metrics.cgroups import CgroupFiles, CgroupGone, locate
from services.metrics.readings import MB, Reading, cpu_percent
from services.metrics.streams import StreamSource

log = logging.getLogger(__name__)

MODES = ("auto", "cgroup", "api")


@dataclass
class Tracked:
    cid: str
    device: str
    running: bool = False
    inspected: bool = False  # since the container last started
    cgroup: CgroupFiles | None = None
    prev: Reading | None = None


@dataclass
class Collected:
    """One cycle's outcome.  `present` is None when the engine could not be listed: the
    absence of a device then proves nothing."""

    rows: list[tuple[str, float, float, float]] = field(default_factory=list)
    present: set[str] | None = None
    limits: dict[str, tuple[int, int]] = field(default_factory=dict)
    by_source: Counter[str] = field(default_factory=Counter)


class DeviceCollector:
    def __init__(self, docker: EngineAccess, instance: Callable[[], str | None], mode: str,
                 cgroup_root: Path, interval: float, streams: StreamSource,
                 adopted: Callable[[], dict[str, str]] = dict) -> None:
        if mode not in MODES:
            raise ValueError(f"container stats mode must be one of {', '.join(MODES)}")
        self.docker = docker
        self._instance_source = instance
        # Runtimes adopted from the original agent (no labels): id → name, re-read each
        # cycle from the executor's state file (a small read).
        self.adopted = adopted
        self._adopted_now: dict[str, str] = {}
        self.instance: str | None = None
        self.mode = mode
        self.cgroup_root = cgroup_root
        self.interval = interval
        self.streams = streams
        self.tracked: dict[str, Tracked] = {}

    def resolve_instance(self) -> str | None:
        """The agent instance id, read once it exists (a small file read)."""
        if self.instance is None:
            self.instance = self._instance_source()
        return self.instance

    def ensure_connected(self) -> None:
        """Connect when the engine is not known to be up; raises DockerUnavailable."""
        if not self.docker.available:
            self.docker.connect()
            self.streams.set_version(self.docker.api_version)

    def collect(self) -> Collected:
        if self.resolve_instance() is None:
            # The executor writes the instance id before it creates anything: until it
            # exists there is nothing of ours to sample, and nothing to forget.
            return Collected()
        try:
            self.ensure_connected()
            self._adopted_now = self.adopted()
            listed = self.docker.call_sync(containers.list_runtimes, self.instance,
                                           self._adopted_now)
        except DockerUnavailable as exc:
            log.debug("no device samples this cycle: %s", exc)
            # Readings across the outage cannot be compared, and streams would only retry.
            self.streams.drop_all()
            for track in self.tracked.values():
                track.prev = None
            return Collected()
        out = Collected(present={row.device for row in listed})
        seen = {row.cid for row in listed}
        for cid in list(self.tracked):
            if cid not in seen:
                self._drop(cid)
        for row in listed:
            track = self.tracked.setdefault(row.cid, Tracked(row.cid, row.device))
            if not row.running:
                self._stopped(track)
                continue
            track.running = True
            try:
                self._sample(track, out)
            except DockerUnavailable as exc:
                log.debug("device sampling interrupted: %s", exc)
                break
        return out

    def _sample(self, track: Tracked, out: Collected) -> None:
        if not track.inspected:
            facts = self.docker.call_sync(containers.inspect_runtime, track.cid, self.instance,
                                          self._adopted_now)
            if facts is None or not facts.running:
                return  # removed or stopped since the listing: the next cycle will tell
            track.inspected = True
            out.limits[track.device] = (facts.memory_bytes, facts.nano_cpus)
            if self.mode != "api":
                track.cgroup = locate(self.cgroup_root, track.cid, facts.pid,
                                      facts.cgroup_parent)
                if track.cgroup is None and self.mode == "cgroup":
                    log.warning("the cgroup of %s is not visible under %s", track.device,
                                self.cgroup_root)
        reading = self._read(track)
        if reading is None:
            return
        prev, track.prev = track.prev, reading
        if prev is None or reading.at == prev.at:
            return
        cpu = cpu_percent(prev, reading)
        if cpu is None:
            return
        # A stream's reading may be up to a second old: stamp the sample when it was taken.
        wall = time.time() - (time.monotonic() - reading.at)
        out.rows.append((track.device, wall, cpu, reading.memory_bytes / MB))
        out.by_source["cgroup" if track.cgroup is not None else "stream"] += 1

    def _read(self, track: Tracked) -> Reading | None:
        if track.cgroup is not None:
            try:
                reading = track.cgroup.read(time.monotonic())
            except CgroupGone:
                # Stopped between listing and reading, or its cgroup moved: look again.
                track.cgroup, track.inspected, track.prev = None, False, None
                return None
            self.streams.drop(track.cid)
            return reading
        if self.mode == "cgroup":
            return None
        self.streams.ensure(track.cid)
        # A reading older than a few intervals belongs to a stream that stalled.
        return self.streams.latest(track.cid, max_age=max(3 * self.interval, 5.0))

    def _stopped(self, track: Tracked) -> None:
        track.running, track.inspected, track.cgroup, track.prev = False, False, None, None
        self.streams.drop(track.cid)

    def _drop(self, cid: str) -> None:
        self.tracked.pop(cid, None)
        self.streams.drop(cid)

    def close(self) -> None:
        self.streams.close()
