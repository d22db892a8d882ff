"""Per-device sampling: one collection cycle over every managed runtime container.

`DeviceCollector.collect()` is blocking and runs in the metrics process's small Docker
pool, never on the event loop.  A cycle is: the container listing (filtered by our labels
on the engine's side) when the set may have changed (`watch.py`: an engine event, a
vanished cgroup, a changed adoption file, or every `RESYNC_CYCLES` cycles; every cycle
while the event stream is down), an inspect for each container that started since it was
last seen (its PID, cgroup parent and limits), then one `Reading` per running container
from the cheapest source available, and one sample per container that has a previous
reading.

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

from common import labels
from common.errors import DockerUnavailable
from services.metrics import containers
from services.metrics.access import EngineAccess
from services.metrics.cgroups import CgroupGone, CgroupReader, locate
from services.metrics.engine import Engine
from services.metrics.readings import MB, Reading, cpu_percent
from services.metrics.streams import StreamSource
from services.metrics.watch import READ_TIMEOUT, ChangeWatch

log = logging.getLogger(__name__)

MODES = ("auto", "cgroup", "api")
# Cycles between listings when no event said anything changed: a safety net for a missed
# event and the only way adopted runtimes (no labels, not in the event stream) are seen
# to come and go other than by their cgroups.
RESYNC_CYCLES = 12


@dataclass
class Tracked:
    cid: str
    device: str
    running: bool = False
    inspected: bool = False  # since the container last started
    cgroup: CgroupReader | None = None
    prev: Reading | None = None


@dataclass
class Collected:
    """One cycle's outcome.  `present` is None when the engine could not be listed: the
    absence of a device then proves nothing.  `fresh`: this cycle listed the engine (an
    absence counts toward forgetting a device only then)."""

    rows: list[tuple[str, float, float, float]] = field(default_factory=list)
    present: set[str] | None = None
    limits: dict[str, tuple[int, int]] = field(default_factory=dict)
    by_source: Counter[str] = field(default_factory=Counter)
    fresh: bool = False


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
        self.watch: ChangeWatch | None = None
        self.listings = 0
        self._listed: list[containers.Listed] | None = None
        self._present: set[str] = set()  # the devices of `_listed`
        self._since_listing = 0
        self._relist = False  # something seen in a cycle says the listing is stale

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
            adopted_now = self.adopted()
            if adopted_now != self._adopted_now:
                self._adopted_now, self._relist = adopted_now, True
            fresh = self._listing_due()
            if fresh:
                self._listed = self.docker.call_sync(containers.list_runtimes, self.instance,
                                                     self._adopted_now)
                self._present = {row.device for row in self._listed}
                self.listings += 1
            listed = self._listed
            assert listed is not None
        except DockerUnavailable as exc:
            log.debug("no device samples this cycle: %s", exc)
            self._listed = None
            # Readings across the outage cannot be compared, and streams would only retry.
            self.streams.drop_all()
            for track in self.tracked.values():
                track.prev = None
            return Collected()
        out = Collected(present=self._present, fresh=fresh)  # read-only for the service
        if fresh:
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
                self._relist = True  # removed or stopped since the listing
                return
            track.inspected = True
            out.limits[track.device] = (facts.memory_bytes, facts.nano_cpus)
            if self.mode != "api":
                files = locate(self.cgroup_root, track.cid, facts.pid,
                               facts.cgroup_parent)
                track.cgroup = CgroupReader(files) if files is not None else None
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
                # Stopped since the listing, or its cgroup moved: look again.
                track.cgroup, track.inspected, track.prev = None, False, None
                self._relist = True
                return None
            self.streams.drop(track.cid)
            return reading
        if self.mode == "cgroup":
            return None
        self.streams.ensure(track.cid)
        # A reading older than a few intervals belongs to a stream that stalled.
        return self.streams.latest(track.cid, max_age=max(3 * self.interval, 5.0))

    def want_listing(self) -> None:
        """Have the next cycle list the engine (a flag; safe from any thread)."""
        self._relist = True

    def _listing_due(self) -> bool:
        """Whether this cycle lists the engine (see the module's docstring)."""
        self._start_watch()
        changed = self.watch is not None and self.watch.take()  # always clears the flag
        due = (changed or self._relist or self._listed is None or self.watch is None
               or not self.watch.alive or self._since_listing + 1 >= RESYNC_CYCLES)
        self._since_listing = 0 if due else self._since_listing + 1
        if due:
            self._relist = False
        return due

    def _start_watch(self) -> None:
        if self.watch is not None or self.instance is None:
            return
        self.watch = ChangeWatch(self._watch_client,
                                 labels.filters(self.instance, labels.KIND_RUNTIME))
        self.watch.start()

    def _watch_client(self) -> Engine:
        api = Engine(self.docker.base_url, READ_TIMEOUT)
        api.api_version = self.docker.api_version if self.docker.available else ""
        return api

    def _stopped(self, track: Tracked) -> None:
        if track.cgroup is not None:
            track.cgroup.close()
        track.running, track.inspected, track.cgroup, track.prev = False, False, None, None
        self.streams.drop(track.cid)

    def _drop(self, cid: str) -> None:
        track = self.tracked.pop(cid, None)
        if track is not None and track.cgroup is not None:
            track.cgroup.close()
        self.streams.drop(cid)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        for track in self.tracked.values():
            if track.cgroup is not None:
                track.cgroup.close()
        self.streams.close()
