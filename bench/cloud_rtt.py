"""Cloud round trip and heartbeat rhythm of the whole agent, over real mTLS on loopback.

Starts a development cloud in this process and the agent suite under supervisord (the
repository's `supervisord.conf`), enrolled through the cloud's provisioning endpoints.
Then measures:

* command round trip, cloud emit → ack, for a cheap command the owning process answers
  from memory (default `get_host_interfaces`), at concurrency 1 and 16;
* the heartbeat period (mean, jitter) over `--load-seconds` of continuous commands (16 in
  flight) and over `--heartbeat-seconds` of an idle agent.

Prints one JSON object.

  python bench/cloud_rtt.py [--commands 2000] [--topic get_host_interfaces]
                            [--heartbeat-seconds 300] [--load-seconds 30]
                            [--log-level INFO]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common_info import ROOT, context, percentile
from devcloud.server import DevCloud
from testkit.helpers import stop_process

BIN = Path(sys.executable).parent
PAYLOADS: dict[str, dict[str, Any]] = {
    "get_host_interfaces": {},
    "get_device_status": {"device_id": "bench-missing-device"},
    "get_consumption_orchestrator": {"cpuPeriod": "5m", "memoryPeriod": "5m"},
}
TARGETS = {"p50_ms": 5.0, "p99_ms": 20.0, "heartbeat_period_s": 5.0,
           "heartbeat_tolerance_s": 0.5}


def summary_ms(seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3),
            "p99_ms": round(percentile(ms, 99), 3), "mean_ms": round(statistics.fmean(ms), 3),
            "max_ms": round(max(ms), 3)}


def rhythm(received: list[float]) -> dict[str, Any]:
    intervals = [b - a for a, b in itertools.pairwise(received)]
    if not intervals:
        return {"beats": len(received)}
    return {"beats": len(received), "mean_s": round(statistics.fmean(intervals), 4),
            "jitter_stdev_s": round(statistics.pstdev(intervals), 4),
            "min_s": round(min(intervals), 4), "max_s": round(max(intervals), 4),
            "max_deviation_s": round(max(abs(i - 5.0) for i in intervals), 4)}


class Agent:
    """The suite under supervisord in a private directory, pointed at `cloud`."""

    def __init__(self, base: Path, env: dict[str, str]) -> None:
        self.base = base
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONPATH": str(ROOT), "ORCH_STATE_DIR": str(base / "state"),
                    "ORCH_RUN_DIR": str(base / "run"),
                    "ORCH_PROGRAM_USER": pwd.getpwuid(os.geteuid()).pw_name, **env}
        (base / "run").mkdir(mode=0o700)
        self.log = open(base / "supervisord.out", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(BIN / "supervisord"), "-c",
                                      str(ROOT / "supervisord.conf")],
                                     env=self.env, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def stop(self) -> None:
        stop_process(self.proc, 30)
        self.log.close()


async def round_trips(cloud: DevCloud, agent_id: str, topic: str, count: int,
                      concurrency: int, payload: dict[str, Any] | None = None) -> list[float]:
    """Seconds of each round trip."""
    return [seconds for _, seconds in await stamped_round_trips(
        cloud, agent_id, topic, count, concurrency, payload)]


async def stamped_round_trips(cloud: DevCloud, agent_id: str, topic: str, count: int | None,
                              concurrency: int, payload: dict[str, Any] | None = None,
                              seconds: float | None = None) -> list[tuple[float, float]]:
    """(Unix time sent, seconds) of each round trip, `concurrency` in flight: `count` in
    all, or (`count` None) as many as `seconds` allow."""
    payload = PAYLOADS[topic] if payload is None else payload
    stamped: list[tuple[float, float]] = []
    end = None if seconds is None else time.monotonic() + seconds

    async def worker() -> None:
        for _ in itertools.count() if count is None else range(count // concurrency):
            if end is not None and time.monotonic() >= end:
                break
            sent, started = time.time(), time.perf_counter()
            ack = await cloud.send(agent_id, topic, payload, timeout=10)
            stamped.append((sent, time.perf_counter() - started))
            if not isinstance(ack, dict) or ack.get("action") != topic:
                raise RuntimeError(f"unexpected ack {ack!r}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stamped


async def load_for(cloud: DevCloud, agent_id: str, topic: str, seconds: float,
                   concurrency: int = 16) -> int:
    """Keep `concurrency` commands in flight for `seconds`; return how many were acked."""
    deadline = time.monotonic() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await cloud.send(agent_id, topic, PAYLOADS[topic], timeout=10)
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def beats_between(cloud: DevCloud, agent_id: str, start: float, end: float) -> list[float]:
    return [b.received_at for b in cloud.hub.heartbeats(agent_id)
            if start <= b.received_at <= end]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="oatb", dir="/tmp"))
    agent: Agent | None = None
    try:
        async with DevCloud(base / "cloud", port=0, admin_port=0, provision_port=0) as cloud:
            creds = await cloud.enroll(base / "mtls")
            agent = Agent(base, {"ORCH_LOG_LEVEL": args.log_level,
                                 "ORCH_CLOUD_URL": cloud.url,
                                 "ORCH_MTLS_DIR": str(creds.directory),
                                 "ORCH_CA_FILE": str(creds.ca_path)})
            if not await cloud.wait_connected(creds.agent_id, 60):
                raise RuntimeError("the agent did not connect; see "
                                   f"{base / 'supervisord.out'}")
            await cloud.wait_heartbeats(creds.agent_id, 1, timeout=15)
            await round_trips(cloud, creds.agent_id, args.topic, 200, 4)  # warm-up
            results = {}
            for concurrency in (1, 16):
                times = await round_trips(cloud, creds.agent_id, args.topic, args.commands,
                                          concurrency)
                results[f"concurrency_{concurrency}"] = summary_ms(times)
            load_start = time.time()
            under_load = await load_for(cloud, creds.agent_id, args.topic, args.load_seconds)
            load_end = time.time()
            await asyncio.sleep(args.heartbeat_seconds)
            idle_end = time.time()
            return {
                "benchmark": "cloud_rtt",
                **context(),
                "sizes": {"commands_per_level": args.commands, "topic": args.topic,
                          "runtimes": 0, "heartbeat_seconds": args.heartbeat_seconds,
                          "log_level": args.log_level, "load_seconds": args.load_seconds,
                          "load_concurrency": 16, "load_commands": under_load,
                          "transport": "websocket over TLS 1.3, loopback"},
                "round_trip": results,
                "heartbeat": {
                    "idle": rhythm(beats_between(cloud, creds.agent_id, load_end, idle_end)),
                    "under_load": rhythm(beats_between(cloud, creds.agent_id, load_start,
                                                       load_end)),
                },
                "targets": TARGETS,
            }
    finally:
        if agent is not None:
            agent.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=2000,
                        help="commands per concurrency level (at least 1000 for the record)")
    parser.add_argument("--topic", default="get_host_interfaces", choices=sorted(PAYLOADS))
    parser.add_argument("--heartbeat-seconds", type=float, default=300.0,
                        help="idle time over which the heartbeat period is measured")
    parser.add_argument("--load-seconds", type=float, default=30.0,
                        help="time of continuous load (16 in flight) for the heartbeat "
                             "period under load")
    parser.add_argument("--log-level", default="INFO",
                        help="the agent's; INFO logs one line per command through "
                             "supervisord, WARNING measures the path without it")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
