"""Metrics collection cost: prints one JSON object.

For 0, 10 and 50 running runtimes (stand-in containers labelled as the executor labels
them, on an internal bridge network the bench creates and removes), and for each source
of container figures (`cgroup` files, engine stats streams `api`):

* `cycle` — one device collection cycle measured in-process (`DeviceCollector.collect`,
  the function the metrics process runs in its Docker pool every interval): wall time and
  CPU time of the cycle itself (p50/max over `--cycles`), plus `background_cpu_ms_per_5s`,
  the CPU the stream threads spend between cycles (zero for cgroup files);
* `process` — the real metrics process (`python -m services.metrics`, 5 s interval) over
  `--window` seconds: its CPU per 5 s cycle (host sample, device cycle, SQLite, bus beat
  — everything), RSS/PSS/USS at the end, and the engine's (dockerd) CPU per cycle, next to
  the same figure over a window without the metrics process.

Stand-in health checks are disabled so that the engine's own work does not drown the
figures.  Run from the repository root as root with the Docker engine up:
    PYTHONPATH=. python bench/metrics_cost.py [--counts 0,10,50] [--window 30] [--cycles 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common_info import context, memory_gb
from common import labels
from services.metrics.access import EngineAccess
from services.metrics.devices import DeviceCollector
from services.metrics.streams import StreamSource
from testkit import dockerenv
from testkit.helpers import agent_env, short_tmpdir, start_module, stop_process

DOCKER_HOST = "unix:///var/run/docker.sock"
CGROUP_ROOT = Path("/sys/fs/cgroup")
SUBNETS = ("198.51.100.0/24", "192.0.2.0/24", "203.0.113.0/24")
INTERVAL = 5.0
SPACING = 2.0


def make_network(dc: docker.DockerClient, name: str) -> Any:
    for subnet in SUBNETS:
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
        try:
            return dc.networks.create(name, driver="bridge", internal=True, ipam=ipam,
                                      labels=dockerenv.TEST_LABELS)
        except docker.errors.APIError as exc:
            if "overlap" not in str(exc).lower():
                raise
    raise RuntimeError(f"no free subnet among {SUBNETS} for the bench network")


def start_runtimes(dc: docker.DockerClient, instance: str, network: str, first: int,
                   count: int) -> list[str]:
    names = []
    for i in range(first, first + count):
        name = f"oat-bench-{instance}-{i}"
        dc.containers.run(dockerenv.STANDIN_IMAGE, detach=True, name=name, network=network,
                          labels={**dockerenv.TEST_LABELS,
                                  **labels.runtime(instance, name, [], "bench")},
                          healthcheck={"test": ["NONE"]})
        names.append(name)
    return names


def proc_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def dockerd_pid() -> int | None:
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "dockerd":
            return int(p.pid)
    return None


def stats(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "max": round(max(values), 2)}


def measure_cycles(instance: str, mode: str, running: int, cycles: int) -> dict[str, Any]:
    """Drive the collector as the service does, every `SPACING` seconds (more than the
    streams' one-second rhythm, so every cycle finds a new reading), and time each cycle."""
    api = EngineAccess(DOCKER_HOST, 15.0, 1)
    collector = DeviceCollector(api, lambda: instance, mode, CGROUP_ROOT, SPACING,
                                StreamSource(DOCKER_HOST))
    try:
        # Warm up: the first cycle inspects every container and opens the streams; the
        # streams need a moment for their first stats object.
        deadline = time.monotonic() + 30
        while True:
            rows = collector.collect().rows
            if len(rows) >= running or time.monotonic() > deadline:
                break
            time.sleep(SPACING)
        walls, cpus = [], []
        window_cpu0, window_t0 = self_cpu(), time.monotonic()
        samples = 0
        for _ in range(cycles):
            t0, c0 = time.perf_counter(), time.thread_time()
            samples += len(collector.collect().rows)
            walls.append((time.perf_counter() - t0) * 1000)
            cpus.append((time.thread_time() - c0) * 1000)
            time.sleep(SPACING)
        window_cpu = (self_cpu() - window_cpu0) * 1000
        window_s = time.monotonic() - window_t0
        background = max(0.0, window_cpu - sum(cpus)) / window_s * INTERVAL
        return {"wall_ms": stats(walls), "cpu_ms": stats(cpus),
                "background_cpu_ms_per_5s": round(background, 1),
                "samples_per_cycle": round(samples / cycles, 1)}
    finally:
        collector.close()
        api.close()


def measure_process(instance: str, mode: str, window: float,
                    dockerd: int | None) -> dict[str, Any]:
    with short_tmpdir("oatb") as base:
        (base / "state").mkdir()
        env = agent_env(base, ORCH_INSTANCE_ID=instance, ORCH_CONTAINER_STATS=mode,
                        ORCH_METRICS_INTERVAL=str(INTERVAL), ORCH_LOG_LEVEL="WARNING")
        proc = start_module("services.metrics", env, base / "metrics.log")
        try:
            time.sleep(2 * INTERVAL)  # past the first cycles (inspects, stream opening)
            cpu0 = proc_cpu(proc.pid)
            d0 = proc_cpu(dockerd) if dockerd else 0.0
            time.sleep(window)
            cpu = proc_cpu(proc.pid) - cpu0
            engine = (proc_cpu(dockerd) - d0) if dockerd else 0.0
            mem = psutil.Process(proc.pid).memory_full_info()
            threads = psutil.Process(proc.pid).num_threads()
        finally:
            stop_process(proc)
    cycles = window / INTERVAL
    out: dict[str, Any] = {
        "cpu_ms_per_cycle": round(cpu * 1000 / cycles, 1),
        "rss_mb": round(mem.rss / 2**20, 1), "pss_mb": round(mem.pss / 2**20, 1),
        "uss_mb": round(mem.uss / 2**20, 1), "threads": threads,
    }
    if dockerd is not None:
        out["dockerd_cpu_ms_per_cycle"] = round(engine * 1000 / cycles, 1)
    return out


def dockerd_idle(dockerd: int | None, window: float) -> float | None:
    """The engine's CPU per 5 s with no metrics process: the baseline for the figure above
    (on a shared engine other users' work shows up in both)."""
    if dockerd is None:
        return None
    c0 = proc_cpu(dockerd)
    time.sleep(window)
    return round((proc_cpu(dockerd) - c0) * 1000 / (window / INTERVAL), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="0,10,50")
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--modes", default="cgroup,api")
    args = parser.parse_args()
    counts = sorted(int(c) for c in args.counts.split(","))
    modes = args.modes.split(",")
    dockerenv.ensure_engine()
    dc = dockerenv.client()
    dockerenv.ensure_standin_image(dc)
    instance = dockerenv.test_instance("b")
    network = make_network(dc, f"oat-bench-{instance}")
    dockerd = dockerd_pid()
    names: list[str] = []
    results: dict[str, Any] = {}
    try:
        for count in counts:
            names += start_runtimes(dc, instance, network.name, len(names), count - len(names))
            time.sleep(3)  # let the new stand-ins finish starting before measuring
            entry: dict[str, Any] = {
                "dockerd_cpu_ms_per_cycle_without_metrics": dockerd_idle(dockerd, args.window)}
            for mode in modes:
                entry[mode] = {
                    "cycle": measure_cycles(instance, mode, count, args.cycles),
                    "process": measure_process(instance, mode, args.window, dockerd),
                }
            results[str(count)] = entry
    finally:
        for name in names:
            with contextlib.suppress(docker.errors.NotFound):
                dc.containers.get(name).remove(force=True, v=True)
        network.remove()
    cgroup = "v2" if (CGROUP_ROOT / "cgroup.controllers").exists() else "v1"
    print(json.dumps({
        "bench": "metrics_cost",
        **context(memory_gb=memory_gb(), engine=dc.version().get("Version"), cgroup=cgroup),
        "interval_s": INTERVAL, "window_s": args.window,
        "runtimes": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
