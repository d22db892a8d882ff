"""Executor benchmark: prints one JSON object.

Figures: create → running and → reachable (HTTPS on the internal address) p50 over 10
sequential creates; `device_status` round trip p50/p99 over the bus with 0, 10 and 50
runtimes; the executor's memory (PSS, USS) with 50 runtimes.  Runtimes are on their
internal networks only (no MACVLAN), so the bench touches nothing but the engine's bridges.

Run from the repository root as root with the Docker engine up:
    PYTHONPATH=. python bench/executor.py [--runtimes 50] [--timed 10] [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common_info import context, memory_gb
from common.bus import RpcClient
from testkit.executor import (
    STANDIN_TAG,
    ExecutorProc,
    executor_run,
    https_ok,
    wait_ready,
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def status_rtt(bus: RpcClient, device: str, calls: int) -> dict[str, float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await bus.call("device_status", {"device_id": device})
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": pct(samples, 0.5), "p99_ms": pct(samples, 0.99), "calls": calls}


async def create_one(bus: RpcClient, name: str) -> tuple[float, float]:
    """Seconds from the request to `success` (running), and to answering over HTTPS."""
    started = time.perf_counter()
    ack = await bus.call("create_runtime", {"container_name": name, "vnic_configs": [],
                                            "runtime_version": STANDIN_TAG})
    if ack.get("status") != "creating":
        raise RuntimeError(f"create of {name}: {ack}")
    while True:
        body = await bus.call("device_status", {"device_id": name})
        if body["status"] == "success" and body.get("is_running"):
            break
        if body["status"] not in ("creating",):
            raise RuntimeError(f"create of {name}: {body}")
        await asyncio.sleep(0.02)
    running = time.perf_counter() - started
    ip = body["internal_ip"]
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + 60
    while not await loop.run_in_executor(None, https_ok, ip, 1.0):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} never answered on {ip}")
        await asyncio.sleep(0.02)
    return running, time.perf_counter() - started


def memory(pid: int) -> dict[str, float]:
    info = psutil.Process(pid).memory_full_info()
    return {"pss_mb": round(info.pss / 2**20, 1), "uss_mb": round(info.uss / 2**20, 1),
            "rss_mb": round(info.rss / 2**20, 1)}


async def run(args: argparse.Namespace, executor: ExecutorProc) -> dict[str, Any]:
    ctx = zmq.asyncio.Context()
    bus = executor.client(ctx, timeout=30)
    try:
        await wait_ready(bus)
        out: dict[str, Any] = {"status_rtt": {}}
        out["status_rtt"]["0"] = await status_rtt(bus, "bench-none", args.calls)
        prefix = f"bench-{os.getpid()}"
        running, reachable = [], []
        for i in range(args.timed):
            r, h = await create_one(bus, f"{prefix}-{i}")
            running.append(r)
            reachable.append(h)
        out["create_to_running_s"] = {"p50": round(statistics.median(running), 3),
                                      "max": round(max(running), 3), "n": args.timed}
        out["create_to_reachable_s"] = {"p50": round(statistics.median(reachable), 3),
                                        "max": round(max(reachable), 3), "n": args.timed}
        out["status_rtt"][str(args.timed)] = await status_rtt(bus, f"{prefix}-0", args.calls)
        rest = list(range(args.timed, args.runtimes))
        started = time.perf_counter()
        for batch in range(0, len(rest), 4):
            await asyncio.gather(*(create_one(bus, f"{prefix}-{i}")
                                   for i in rest[batch:batch + 4]))
        out["create_rest_s"] = round(time.perf_counter() - started, 1)
        out["status_rtt"][str(args.runtimes)] = await status_rtt(bus, f"{prefix}-0",
                                                                 args.calls)
        assert executor.proc is not None
        out["executor_memory_with_runtimes"] = memory(executor.proc.pid)
        out["executor_memory_with_runtimes"]["runtimes"] = args.runtimes
        return out
    finally:
        bus.close()
        ctx.destroy(linger=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", type=int, default=50)
    parser.add_argument("--timed", type=int, default=10)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with executor_run(ORCH_LOG_LEVEL="INFO") as (dc, executor):
        figures = asyncio.run(run(args, executor))
    result = {
        "bench": "executor",
        **context(memory_gb=memory_gb(), engine=dc.version().get("Version")),
        "runtimes": args.runtimes, **figures,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
