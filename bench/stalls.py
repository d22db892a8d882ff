"""Where a command's time goes when many are in flight: round trips beside the CPU of
every program, sampled every 2 ms.

`bench/scale.py` times 16 status requests in flight for about three seconds.  This
bench keeps them in flight for `--seconds` at `--level` runtimes (100 by default, with
the real image's health check every 30 s) and samples, meanwhile, how many cores each of
these took:

* the agent's programs, supervisord, this process (its development cloud answers the
  agent) and the sampler, each moved for the run into a `cpuacct` cgroup of its own
  that this bench creates and removes again;
* the runtimes, health checks included: the engine's own cgroup of its containers,
  read only (any other container on the engine counts here too);
* the rest of the machine (the engine's daemons, runc, the containers' shims), as the
  machine's total less all of the above.

It prints one JSON object: the round trips; the average cores of each part; the slowest
commands, each with the cores of each part while it was in flight and how many health
checks started then; the cores of each part around a health check's start (20 ms steps,
averaged over every check in the run); and the round trips of the commands that met no
health check.  It needs the cgroup v1 `cpuacct` hierarchy (as Debian's engine sets it
up here); without it, it says so and stops.  Python's collector is off in this process
while commands are timed (its full collection of the cloud's records stalled every
command in flight by up to 60 ms).

Run from the repository root as root with the Docker engine up:
    python bench/stalls.py [--level 100] [--seconds 20] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import scale
from bench.cloud_rtt import stamped_round_trips, summary_ms
from bench.common_info import context
from testkit import dockerenv
from testkit.executor import cleanup_instance
from testkit.helpers import short_tmpdir

CPUACCT = Path("/sys/fs/cgroup/cpuacct")
PREFIX = "oat-stalls-"
STEP = 0.02  # seconds per step of the profile around a health check
AROUND = 15  # steps before and after a health check's start


class Groups:
    """cpuacct cgroups of this bench's own processes; `close()` puts them back."""

    def __init__(self, names: list[str]) -> None:
        self.paths: dict[str, Path] = {}
        self.home: dict[int, Path] = {}
        for stale in CPUACCT.glob(f"{PREFIX}*"):  # a killed run's; busy ones stay
            with contextlib.suppress(OSError):
                stale.rmdir()
        try:
            for name in names:
                path = CPUACCT / f"{PREFIX}{os.getpid()}-{name}"
                path.mkdir()
                self.paths[name] = path
        except BaseException:
            self.close()
            raise

    def add(self, name: str, pid: int) -> None:
        """Move `pid` (all its threads; its children from now on) into `name`."""
        self.home.setdefault(pid, home_of(pid))  # where it was before this bench
        (self.paths[name] / "cgroup.procs").write_text(str(pid))

    def counters(self) -> dict[str, Path]:
        """Part name → its cumulative CPU file (nanoseconds)."""
        found = {name: path / "cpuacct.usage" for name, path in self.paths.items()}
        if (CPUACCT / "docker" / "cpuacct.usage").exists():
            found["runtimes"] = CPUACCT / "docker" / "cpuacct.usage"
        found["machine"] = CPUACCT / "cpuacct.usage"
        return found

    def close(self) -> None:
        for pid, home in self.home.items():
            with contextlib.suppress(OSError):  # or it has exited
                (home / "cgroup.procs").write_text(str(pid))
        for path in self.paths.values():
            try:
                path.rmdir()
            except OSError as exc:
                print(f"stalls: could not remove {path}: {exc}", file=sys.stderr)


def home_of(pid: int) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(","):
            return CPUACCT / path.lstrip("/")
    return CPUACCT


def sample(out: str, seconds: float, period: float, files: list[str]) -> None:
    """The sampler process: every `period`, the time and each file's counter."""
    fds = [os.open(f, os.O_RDONLY) for f in files]
    rows = []
    end = time.time() + seconds
    print("sampling", flush=True)
    while True:
        now = time.time()
        if now >= end:
            break
        rows.append([now, *(int(os.pread(fd, 64, 0)) for fd in fds)])
        time.sleep(max(0.0, period - (time.time() - now)))
    Path(out).write_text(json.dumps(rows))


class Usage:
    """Cores each part used between two times, from the sampler's rows."""

    def __init__(self, names: list[str], rows: list[list[float]]) -> None:
        self.names = names
        self.rows = rows
        self.times = [r[0] for r in rows]

    def between(self, start: float, end: float) -> dict[str, float] | None:
        first = max(0, bisect.bisect_right(self.times, start) - 1)
        last = min(len(self.times) - 1, bisect.bisect_left(self.times, end))
        if last <= first:
            return None
        span = self.rows[last][0] - self.rows[first][0]
        cores = {name: (self.rows[last][i + 1] - self.rows[first][i + 1]) / 1e9 / span
                 for i, name in enumerate(self.names)}
        machine = cores.pop("machine")
        cores["rest"] = machine - sum(cores.values())
        cores["machine"] = machine
        return {name: round(value, 2) for name, value in cores.items()}


async def keep_in_flight(bench: scale.Bench, payload: dict[str, Any], seconds: float,
                         concurrency: int, topic: str) -> list[tuple[float, float]]:
    """(Unix time sent, seconds) of every round trip, in the order sent."""
    return sorted(await stamped_round_trips(bench.cloud, bench.agent_id, topic, None,
                                            concurrency, payload, seconds=seconds))


def slowest(stamped: list[tuple[float, float]], usage: Usage, checks: scale.HealthChecks,
            count: int) -> list[dict[str, Any]]:
    """The slowest commands, one per stall (commands in flight together are one stall)."""
    worst = sorted(sorted(stamped, key=lambda s: -s[1])[:count * 4])
    stalls: list[list[float]] = []  # [first sent, last ack, longest round trip]
    for sent, took in worst:
        if stalls and sent < stalls[-1][1]:
            stalls[-1][1] = max(stalls[-1][1], sent + took)
            stalls[-1][2] = max(stalls[-1][2], took)
        else:
            stalls.append([sent, sent + took, took])
    stalls = sorted(sorted(stalls, key=lambda s: -s[2])[:count])
    first = stamped[0][0]
    return [{"at_s": round(sent - first, 3), "longest_ms": round(took * 1000, 1),
             "health_checks": checks.met(sent, end - sent),
             "cores": usage.between(sent, end)} for sent, end, took in stalls]


def around_checks(usage: Usage, starts: list[float], first: float, last: float
                  ) -> dict[str, Any]:
    """Average cores of each part in 20 ms steps around a health check's start."""
    inside = [s for s in starts if first + AROUND * STEP < s < last - AROUND * STEP]
    steps: dict[str, dict[str, float]] = {}
    for step in range(-AROUND, AROUND):
        total: dict[str, float] = {}
        for start in inside:
            cores = usage.between(start + step * STEP, start + (step + 1) * STEP) or {}
            for name, value in cores.items():
                total[name] = total.get(name, 0.0) + value / len(inside)
        steps[f"{round(step * STEP * 1000)}ms"] = {n: round(v, 2) for n, v in total.items()}
    return {"checks": len(inside), "steps": steps}


async def body(bench: scale.Bench, levels: list[int], args: argparse.Namespace
               ) -> dict[str, Any]:
    checks = bench.checks
    if checks is None:
        raise RuntimeError("the bench follows no health checks")
    await bench.grow(args.level)
    payload = {"device_id": bench.devices[0]} if bench.devices else {"device_id": "none"}
    await keep_in_flight(bench, payload, 2.0, args.concurrency, args.topic)  # warm
    pids = {name: pid for name, pid in bench.suite.running_pids().items()
            if name in (*scale.AGENT, "supervisord")}
    groups = Groups([*pids, "bench", "sampler"])
    try:
        for name, pid in pids.items():
            groups.add(name, pid)
        groups.add("sampler", os.getpid())  # the sampler starts in it, then this moves on
        counters = groups.counters()
        out = bench.suite.base / "stall-samples.json"
        sampler = subprocess.Popen([sys.executable, __file__, "--sample", str(out),
                                    str(args.seconds + 2), str(args.period),
                                    *map(str, counters.values())],
                                   stdout=subprocess.PIPE)
        groups.add("bench", os.getpid())
        try:
            assert sampler.stdout is not None
            await asyncio.get_running_loop().run_in_executor(None, sampler.stdout.readline)
            await asyncio.sleep(0.1)
            with scale.quiet_gc():
                stamped = await keep_in_flight(bench, payload, args.seconds,
                                               args.concurrency, args.topic)
            if sampler.wait(args.seconds + 30) != 0:
                raise RuntimeError("the sampler failed")
        finally:
            if sampler.poll() is None:
                sampler.kill()
                sampler.wait()
    finally:
        groups.close()
    usage = Usage(list(counters), json.loads(out.read_text()))
    first, last = stamped[0][0], stamped[-1][0] + stamped[-1][1]
    clear = [s for s in stamped if not checks.met(*s)]
    return {"runtimes": len(bench.devices), "topic": args.topic,
            "concurrency": args.concurrency,
            "round_trips": {**summary_ms([d for _, d in stamped]),
                            "per_second": round(len(stamped) / (last - first))},
            "average_cores": usage.between(first, last),
            "health_checks": checks.met(first, last - first),
            "clear_of_health_checks": {**summary_ms([d for _, d in clear]),
                                       "share": round(len(clear) / len(stamped), 2)},
            "slowest": slowest(stamped, usage, checks, args.stalls),
            "around_a_health_check": around_checks(usage, checks.starts(), first, last)}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--sample":
        sample(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--topic", default="get_device_status",
                        choices=("get_device_status", "get_host_interfaces"))
    parser.add_argument("--period", type=float, default=0.002, help="sampling period, s")
    parser.add_argument("--stalls", type=int, default=8, help="slowest stalls listed")
    parser.add_argument("--health-interval", type=int, default=30)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    if not (CPUACCT / "cpuacct.usage").exists():
        print(json.dumps({"benchmark": "stalls", "error": f"no cgroup v1 cpuacct at {CPUACCT}"}))
        return 1
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    args.levels, args.pull_policy, args.keep_log, args.grow_batch = (
        str(args.level), "auto", "", 1)
    started = time.monotonic()
    scale.compile_as_image()
    dockerenv.ensure_engine()
    dc = dockerenv.client()
    dockerenv.ensure_standin_image(dc)
    tag = scale.bench_image(dc, args.health_interval)
    instance = dockerenv.test_instance("s")
    with short_tmpdir("oast") as base:
        try:
            figures = asyncio.run(scale.run(args, base, instance, tag, body))
        finally:
            cleanup_instance(dc, instance)
    print(json.dumps({"benchmark": "stalls", **context(), "engine": dc.version().get("Version"),
                      "sizes": {"level": args.level, "seconds": args.seconds,
                                "health_interval_s": args.health_interval,
                                "period_s": args.period},
                      **figures, "bench_seconds": round(time.monotonic() - started, 1)},
                     indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
