"""Bus benchmark: request/reply round trip over ipc and PUB/SUB throughput.

Runs a small server process through the real service runner, then measures from a client
process.  Prints one JSON object.

  python bench/bus.py [--calls 5000] [--messages 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zmq.asyncio

from bench.common_info import ROOT, context, percentile
from common import wire
from common.bus import Endpoints, RpcClient, RpcTimeout, Subscriber
from common.service import Runtime, run_service


class BenchServer:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        runtime.rpc.register("echo", self.echo)
        runtime.rpc.register("blast", self.blast)

    async def echo(self, params: dict[str, Any]) -> Any:
        return params

    async def blast(self, params: dict[str, Any]) -> Any:
        body = {"payload": "x" * int(params.get("size", 100))}
        count = int(params["count"])
        started = time.perf_counter()
        for i in range(count):
            self.rt.publisher.send("bench.blast", body)
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let the subscriber's side of the pipe drain
        return {"seconds": time.perf_counter() - started}

    async def run(self) -> None:
        await self.rt.stop.wait()

    def close(self) -> None:
        pass


async def measure(run_dir: Path, calls: int, messages: int) -> dict[str, Any]:
    ctx = zmq.asyncio.Context()
    endpoints = Endpoints(run_dir)
    client = RpcClient(ctx, endpoints.rpc("bench"), wire.Stamper("client"), 5)
    deadline = time.monotonic() + 20
    while True:
        try:
            await client.call("ping", timeout=0.5)
            break
        except RpcTimeout:
            if time.monotonic() > deadline:
                raise
    for _ in range(500):
        await client.call("echo", {"warm": 1})
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        await client.call("echo", {"i": i})
        samples.append((time.perf_counter() - started) * 1e6)
    started = time.perf_counter()
    concurrent_calls = calls
    for _ in range(concurrent_calls // 16):
        await asyncio.gather(*(client.call("echo", {"i": j}) for j in range(16)))
    concurrent_seconds = time.perf_counter() - started

    sub = Subscriber(ctx, [endpoints.pub("bench")], ["bench.blast"])
    # Wait until the subscription is live: a short blast must arrive.
    while await sub.recv(0.05) is not None:
        pass
    for _ in range(100):
        await client.call("blast", {"count": 10})
        if await sub.recv(0.2) is not None:
            break
    while await sub.recv(0.1) is not None:
        pass
    received = 0
    started = time.perf_counter()
    blast = asyncio.create_task(client.call("blast", {"count": messages}, timeout=60))
    last = started
    while True:
        envelope = await sub.recv(0.5)
        if envelope is None:
            if blast.done():
                break
            continue
        received += 1
        last = time.perf_counter()
    sent_seconds = (await blast)["seconds"]
    client.close()
    sub.close()
    ctx.term()
    return {
        "rpc_round_trip_us": {
            "calls": calls, "p50": round(percentile(samples, 50), 1),
            "p99": round(percentile(samples, 99), 1),
            "mean": round(sum(samples) / len(samples), 1),
        },
        "rpc_concurrency_16": {"calls": concurrent_calls,
                               "calls_per_s": round(concurrent_calls / concurrent_seconds)},
        "pubsub": {
            "published": messages, "received": received,
            "lost": messages - received,
            "publish_msgs_per_s": round(messages / sent_seconds),
            "receive_msgs_per_s": round(received / max(last - started, 1e-9)),
            "body_bytes": 100,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.serve:
        return run_service("bench", BenchServer, rest)
    with tempfile.TemporaryDirectory(prefix="oab", dir="/tmp") as tmp:
        base = Path(tmp)
        env = dict(os.environ, ORCH_STATE_DIR=str(base / "state"), ORCH_RUN_DIR=str(base / "run"),
                   ORCH_LOG_LEVEL="WARNING")
        server = subprocess.Popen([sys.executable, __file__, "--serve"], env=env, cwd=ROOT)
        try:
            figures = asyncio.run(measure(base / "run", args.calls, args.messages))
        finally:
            server.terminate()
            server.wait(10)
    print(json.dumps({"benchmark": "bus", **context(), **figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
