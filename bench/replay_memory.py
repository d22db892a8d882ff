"""Gateway memory under a long stream of mixed cloud commands: the replay cache stays
bounded.

Starts a development cloud in this process and the agent suite under supervisord in a
private directory (the executor pointed at a Docker socket that does not exist, so no
command touches the machine's engine), then drives `--commands` commands, 16 in flight:
state changes with fresh ids (each kept by the replay cache) and resends of some of them,
status polls with one fixed id, consumption reads and `run_command` GETs with repeated
ids, and `run_command` POSTs.  Prints one JSON object: the gateway's PSS after warm-up and
at the end, the replay cache's entries and file size, and how the acks were answered.
Everything it creates lives under one temporary directory, removed at the end.

  python bench/replay_memory.py [--commands 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench.common_info import context
from devcloud.server import DevCloud
from testkit.helpers import short_tmpdir
from testkit.suite import Suite

MB = 1024 * 1024
VNICS = [{"name": "eth0", "parent_interface": "oat0", "network_mode": "dhcp"}]


def command(i: int) -> tuple[str, dict[str, Any]]:
    """The i-th command of the mix (ten kinds in turn)."""
    kind = i % 10
    cid = 1_000_000 + i
    if kind == 0:
        return "create_new_runtime", {"container_name": f"bench-{i}", "vnic_configs": VNICS,
                                      "correlation_id": cid}
    if kind == 1:
        return "stop_device", {"device_id": f"bench-{i}", "correlation_id": cid}
    if kind == 2:  # a resend of the previous stop_device: same id, same payload
        return "stop_device", {"device_id": f"bench-{i - 1}", "correlation_id": cid - 1}
    if kind == 3:
        return "get_device_status", {"device_id": "bench-poll", "correlation_id": 7}
    if kind == 4:
        return "get_consumption_orchestrator", {"cpuPeriod": "1h", "memoryPeriod": "1h",
                                                "correlation_id": i % 50}
    if kind == 5:
        return "get_consumption_device", {"device_id": "bench-x", "cpuPeriod": "1h",
                                          "memoryPeriod": "1h", "correlation_id": i % 50}
    if kind == 6:
        return "run_command", {"device_id": "bench-x", "method": "GET", "api": "/status",
                               "correlation_id": i % 50}
    if kind == 7:
        return "run_command", {"device_id": f"bench-{i}", "method": "POST", "api": "/upload",
                               "data": {"blob": "x" * 2000}, "correlation_id": cid}
    if kind == 8:
        return "restart_device", {"device_id": f"bench-{i}", "correlation_id": cid}
    return "get_host_interfaces", {"correlation_id": i % 50}


def pss_mb(pid: int) -> float:
    return round(psutil.Process(pid).memory_full_info().pss / MB, 1)


async def drive(cloud: DevCloud, agent_id: str, start: int, count: int,
                outcomes: Counter[str]) -> None:
    queue = iter(range(start, start + count))

    async def worker() -> None:
        for i in queue:
            topic, payload = command(i)
            ack = await cloud.send(agent_id, topic, payload, timeout=30)
            if not isinstance(ack, dict) or ack.get("action") != topic:
                raise RuntimeError(f"unexpected ack {ack!r}")
            outcomes[f"{topic}:{ack.get('reason') or ack.get('status') or 'ok'}"] += 1

    await asyncio.gather(*(worker() for _ in range(16)))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with short_tmpdir("oarm") as base:
        (base / "state").mkdir()
        async with DevCloud(base / "cloud", port=0, admin_port=0, provision_port=0) as cloud:
            creds = await cloud.enroll(base / "mtls")
            suite = Suite(base, ORCH_CLOUD_URL=cloud.url, ORCH_MTLS_DIR=str(creds.directory),
                          ORCH_CA_FILE=str(creds.ca_path), ORCH_LOG_LEVEL="WARNING",
                          ORCH_DOCKER_HOST=f"unix://{base}/no-docker.sock")
            suite.start()
            try:
                await asyncio.to_thread(suite.wait_running)
                if not await cloud.wait_connected(creds.agent_id, 60):
                    raise RuntimeError("the agent did not connect")
                pid = suite.status()["gateway"][1]
                assert pid is not None
                outcomes: Counter[str] = Counter()
                await drive(cloud, creds.agent_id, 0, 500, outcomes)  # warm-up
                start_pss = pss_mb(pid)
                started = time.monotonic()
                samples = [start_pss]
                step = max(1, args.commands // 10)
                for offset in range(0, args.commands, step):
                    await drive(cloud, creds.agent_id, 500 + offset,
                                min(step, args.commands - offset), outcomes)
                    samples.append(pss_mb(pid))
                elapsed = time.monotonic() - started
                replay_log = base / "state" / "gateway" / "replay.log"
                assert suite.status()["gateway"][1] == pid, "the gateway restarted"
                return {
                    "benchmark": "replay_memory", **context(),
                    "commands": args.commands, "concurrency": 16,
                    "seconds": round(elapsed, 1),
                    "gateway_pss_mb": {"start": start_pss, "end": samples[-1],
                                       "max": max(samples), "samples": samples},
                    "replay_log_bytes": replay_log.stat().st_size,
                    "outcomes": dict(sorted(outcomes.items())),
                }
            finally:
                suite.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=20_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
