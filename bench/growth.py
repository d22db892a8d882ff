"""Does any program's memory grow with the commands it serves?

The suite of `bench/scale.py` (supervisord, real mTLS to the development cloud, stand-in
runtimes created through the executor), with `--runtimes` runtimes; then `--rounds`
rounds of the same mixed load — `get_device_status` at 16 in flight, `run_command` GET,
`get_consumption_device` over 1 h, and one create/delete of a runtime — each followed by
a short pause and a USS/PSS reading of every program.  The first round fills caches,
pools and buffers; from the second on a program that holds something per command grows
round after round, while a flat one stays within the allocator's noise.  The figure per
program is the USS growth from the end of round 1 to the end of the last, per thousand
commands.

Run from the repository root as root with the Docker engine up (under the machine lock):
    python bench/growth.py [--runtimes 3] [--rounds 5] [--per-round 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cloud_rtt import round_trips
from bench.common_info import context
from bench.scale import MB, Bench, bench_image, run
from testkit import dockerenv
from testkit.executor import cleanup_instance
from testkit.helpers import short_tmpdir

SETTLE_S = 3.0  # after a round, before the reading: replies and frees done


def memory(bench: Bench) -> dict[str, dict[str, float]]:
    out = {}
    for name, proc in bench.processes().items():
        mem = proc.memory_full_info()
        out[name] = {"uss_mb": round(mem.uss / MB, 2), "pss_mb": round(mem.pss / MB, 2)}
    return out


async def one_round(bench: Bench, n: int) -> int:
    device = bench.devices[0]
    served = 0
    for topic, payload, count, in_flight in (
            ("get_device_status", {"device_id": device}, n // 2, 16),
            ("run_command", {"device_id": device, "method": "GET", "api": "/api/version"},
             n // 4, 4),
            ("get_consumption_device", {"device_id": device, "cpuPeriod": "1h",
                                        "memoryPeriod": "1h"}, n // 4, 4)):
        served += len(await round_trips(bench.cloud, bench.agent_id, topic, count, in_flight,
                                        payload))
    name = f"{bench.prefix}-churn"
    await bench.create(name)
    await bench.delete(name)
    return served + 2


async def rounds(bench: Bench, levels: list[int], args: argparse.Namespace) -> dict[str, Any]:
    await bench.grow(args.runtimes)
    samples = []
    served = 0
    for i in range(args.rounds):
        started = time.monotonic()
        served += await one_round(bench, args.per_round)
        await asyncio.sleep(SETTLE_S)
        samples.append({"round": i + 1, "commands": served,
                        "seconds": round(time.monotonic() - started, 1), **memory(bench)})
    first, last = samples[0], samples[-1]
    commands = last["commands"] - first["commands"]
    growth = {name: round(1000 * (last[name]["uss_mb"] - first[name]["uss_mb"]) / commands, 3)
              for name in last if isinstance(last[name], dict) and name in first}
    return {"rounds": samples, "uss_growth_mb_per_1000_commands_after_round_1": growth}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtimes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=1000)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    if args.runtimes < 1 or args.rounds < 2:
        parser.error("--runtimes must be at least 1 and --rounds at least 2")
    # What scale.run reads from its arguments.
    args.levels, args.pull_policy, args.timed = str(args.runtimes), "auto", 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    dockerenv.ensure_engine()
    dc = dockerenv.client()
    dockerenv.ensure_standin_image(dc)
    tag = bench_image(dc, 30)
    instance = dockerenv.test_instance("g")
    with short_tmpdir("oagr") as base:
        try:
            figures = asyncio.run(run(args, base, instance, tag, body=rounds))
        finally:
            cleanup_instance(dc, instance)
    print(json.dumps({"benchmark": "growth", **context(), "runtimes": args.runtimes,
                      "per_round": args.per_round, **figures,
                      "bench_seconds": round(time.monotonic() - started, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
