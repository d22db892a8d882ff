"""run_command benchmark: prints one JSON object.

A `GET /api/version` (a small JSON reply) to stand-in runtimes, timed three ways:
* `direct_new_connection`: `proxy()` in this process with connection reuse off — one TCP
  connection and TLS handshake per call, as before connections were kept;
* `direct_kept_alive`: `proxy()` in this process with kept-alive connections;
* `bus`: `run_command` over the bus to an executor (the production path, kept-alive).
Calls go round-robin over the runtimes, sequentially; p50/p99 in milliseconds.  Runtimes
are on their internal networks only (no MACVLAN), so the bench touches nothing but the
engine's bridges; everything it creates is removed at the end.

Run from the repository root as root with the Docker engine up:
    PYTHONPATH=. python bench/proxy.py [--runtimes 1] [--calls 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common_info import context, memory_gb
from common.bus import RpcClient
from services.executor.proxy.forward import ProxyLimits, proxy
from testkit.executor import (
    STANDIN_TAG,
    ExecutorProc,
    executor_run,
    https_ok,
    wait_ready,
    wait_status,
)

Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def command(device: str) -> dict[str, Any]:
    return {"device_id": device, "method": "GET", "api": "/api/version", "port": 8443,
            "headers": {}, "params": {}, "data": None, "files": {}}


async def timed(call: Call, targets: list[tuple[str, str]], calls: int) -> dict[str, Any]:
    """Sequential calls round-robin over (device, ip); every one must answer 200."""
    for device, ip in targets:  # warm-up: not counted
        await call(device, {"ip": ip})
    samples = []
    for n in range(calls):
        device, ip = targets[n % len(targets)]
        started = time.perf_counter()
        ack = await call(device, {"ip": ip})
        samples.append((time.perf_counter() - started) * 1000)
        status = (ack.get("http_response") or {}).get("status_code")
        if status != 200:
            raise RuntimeError(f"run_command to {device}: {ack}")
    return {"p50_ms": pct(samples, 0.5), "p99_ms": pct(samples, 0.99),
            "mean_ms": round(sum(samples) / len(samples), 2), "calls": calls}


async def create(bus: RpcClient, name: str) -> str:
    ack = await bus.call("create_runtime", {"container_name": name, "vnic_configs": [],
                                            "runtime_version": STANDIN_TAG})
    if ack.get("status") != "creating":
        raise RuntimeError(f"create of {name}: {ack}")
    body = await wait_status(bus, name, lambda b: b.get("status") != "creating", 120)
    if body.get("status") != "success":
        raise RuntimeError(f"create of {name}: {body}")
    ip = str(body["internal_ip"])
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + 60
    while not await loop.run_in_executor(None, https_ok, ip, 1.0):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} never answered on {ip}")
        await asyncio.sleep(0.05)
    return ip


async def run(args: argparse.Namespace, executor: ExecutorProc) -> dict[str, Any]:
    ctx = zmq.asyncio.Context()
    bus = executor.client(ctx, timeout=40)
    try:
        await wait_ready(bus)
        prefix = f"bench-px-{os.getpid()}"
        targets = []
        for i in range(args.runtimes):
            name = f"{prefix}-{i}"
            targets.append((name, await create(bus, name)))
        fresh = ProxyLimits(reuse_connections=False)
        kept = ProxyLimits()

        async def direct_fresh(device: str, where: dict[str, Any]) -> dict[str, Any]:
            return await proxy(where["ip"], command(device), limits=fresh)

        async def direct_kept(device: str, where: dict[str, Any]) -> dict[str, Any]:
            return await proxy(where["ip"], command(device), limits=kept)

        async def over_bus(device: str, where: dict[str, Any]) -> dict[str, Any]:
            ack: dict[str, Any] = await bus.call("run_command", command(device))
            return ack

        return {
            "direct_new_connection": await timed(direct_fresh, targets, args.calls),
            "direct_kept_alive": await timed(direct_kept, targets, args.calls),
            "bus": await timed(over_bus, targets, args.calls),
        }
    finally:
        bus.close()
        ctx.destroy(linger=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", type=int, default=1)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    # WARNING level: the per-call INFO line is not what is being measured.
    with executor_run(ORCH_LOG_LEVEL="WARNING") as (dc, executor):
        figures = asyncio.run(run(args, executor))
    result = {
        "bench": "proxy",
        **context(memory_gb=memory_gb(), engine=dc.version().get("Version")),
        "runtimes": args.runtimes, "request": "GET /api/version",
        "targets": {"p50_ms": 5.0, "p99_ms": 20.0},
        **figures,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
