"""One container's counters at one moment, and the sample two of them make.

Every source (cgroup files, the engine's stats stream) produces a `Reading`: cumulative
CPU time in nanoseconds, memory in use, and when it was taken (monotonic seconds).  The CPU
figure of a sample is the CPU time used between two readings divided by the wall time
between them, so each stored point is the average over one collection interval whatever
the source's own rhythm.  It is in percent of one CPU, as the engine's CLI reports it: a
runtime busy on two cores shows 200.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MB = 1024 * 1024


@dataclass(frozen=True)
class Reading:
    at: float  # time.monotonic() when taken
    cpu_ns: int
    memory_bytes: int


def cpu_percent(prev: Reading, cur: Reading) -> float | None:
    """Average CPU % of one CPU between two readings; None when they cannot be compared
    (the same reading twice, or a counter that went backwards: the container restarted)."""
    elapsed = cur.at - prev.at
    used = cur.cpu_ns - prev.cpu_ns
    if elapsed <= 0 or used < 0:
        return None
    return used / (elapsed * 1e9) * 100.0


def from_stats(body: dict[str, Any], at: float) -> Reading | None:
    """A reading from one engine stats object (`GET /containers/{id}/stats`); None when the
    container is not running (the engine then sends empty counters)."""
    cpu = (body.get("cpu_stats") or {}).get("cpu_usage") or {}
    mem = body.get("memory_stats") or {}
    total = cpu.get("total_usage")
    usage = mem.get("usage")
    if not isinstance(total, int) or not isinstance(usage, int) or total <= 0:
        return None
    stats = mem.get("stats") or {}
    # cgroup v1 reports total_inactive_file, v2 inactive_file; the CLI subtracts either.
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    if not isinstance(inactive, int) or inactive > usage:
        inactive = 0
    return Reading(at=at, cpu_ns=total, memory_bytes=usage - inactive)
