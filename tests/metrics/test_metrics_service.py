"""The metrics process for real: samples on the bus, history across restarts, queries."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import zmq.asyncio

from common import wire
from common.bus import Endpoints, RpcClient, Subscriber
from common.messages import HostMetrics
from testkit.helpers import agent_env, async_wait_for, start_module, stop_process

FIELDS = {"cpu_usage", "memory_usage", "memory_total", "disk_usage", "disk_total", "uptime",
          "timestamp"}


def _start(base: Path, interval: str = "0.5"):
    env = agent_env(base, ORCH_METRICS_INTERVAL=interval)
    return start_module("services.metrics", env, base / "metrics.log")


async def test_samples_follow_the_heartbeat_units_and_rhythm(base_dir: Path,
                                                             zctx: zmq.asyncio.Context) -> None:
    proc = _start(base_dir)
    try:
        sub = Subscriber(zctx, [Endpoints(base_dir / "run").pub("metrics")], ["metrics.host"])
        samples = []
        deadline = time.monotonic() + 15
        while len(samples) < 6 and time.monotonic() < deadline:
            envelope = await sub.recv(2)
            if envelope is not None:
                samples.append(HostMetrics.from_body(envelope.body))
        assert len(samples) == 6
        sample = samples[-1]
        assert set(sample.to_body()) >= FIELDS
        assert 0 <= sample.cpu_usage <= 100
        assert 0 < sample.memory_usage < sample.memory_total < 4096  # GB, not bytes
        assert 0 < sample.disk_usage <= sample.disk_total
        assert isinstance(sample.uptime, int) and sample.uptime > 0
        # Drift-free: spacing stays at the interval on average.
        gaps = [b.sampled_at - a.sampled_at for a, b in itertools.pairwise(samples)]
        assert abs(sum(gaps) / len(gaps) - 0.5) < 0.05
        sub.close()
    finally:
        stop_process(proc)


async def test_history_survives_restart_and_answers_queries(base_dir: Path,
                                                            zctx: zmq.asyncio.Context) -> None:
    client = RpcClient(zctx, Endpoints(base_dir / "run").rpc("metrics"), wire.Stamper("t"), 3)

    async def history_len() -> int:
        try:
            reply = await client.call("consumption_orchestrator",
                                      {"cpuPeriod": "2m", "memoryPeriod": "2m"}, timeout=1)
        except Exception:
            return 0
        return len(reply["cpu_usage"])

    proc = _start(base_dir)
    try:
        before = await async_wait_for(lambda: _at_least(history_len, 4), 15,
                                      what="four samples in history")
    finally:
        assert stop_process(proc) == 0
    proc = _start(base_dir)
    try:
        reply = await async_wait_for(
            lambda: _reply_if(client, lambda r: len(r["cpu_usage"]) > before), 15,
            what="history to grow after the restart")
        assert {"memory", "cpu", "os", "kernel", "disk", "cpu_usage", "memory_usage"} <= set(reply)
        assert isinstance(reply["memory"], int) and reply["memory"] > 100  # MB
        assert isinstance(reply["cpu"], int) and reply["cpu"] >= 1
        assert reply["kernel"] and reply["os"].endswith(reply["kernel"])
        point = reply["cpu_usage"][0]
        assert set(point) == {"timestamp", "cpu"} and isinstance(point["timestamp"], int)
        assert set(reply["memory_usage"][0]) == {"timestamp", "memory"}
        # A window that ends before any sample is empty; a garbage period means the last hour
        # (0.5 s samples in 10 s buckets at most 360 points: see history.resolution).
        old = await client.call("consumption_orchestrator",
                                {"cpuPeriod": "1000,2000", "memoryPeriod": "garbage"})
        assert old["cpu_usage"] == [] and 1 <= len(old["memory_usage"]) <= 360
        assert old["memory_usage"][0]["timestamp"] <= reply["memory_usage"][0]["timestamp"]
        sample = await client.call("host_sample")
        assert set(sample) >= FIELDS
    finally:
        stop_process(proc)
        client.close()


async def _at_least(fn, n: int) -> int:
    value = await fn()
    return value if value >= n else 0


async def _reply_if(client: RpcClient, predicate):
    try:
        reply = await client.call("consumption_orchestrator",
                                  {"cpuPeriod": "2m", "memoryPeriod": "2m"}, timeout=1)
    except Exception:
        return None
    return reply if predicate(reply) else None
