"""`get_device_status` round trip through the cloud path with 0, 10 and 50 runtimes.

Cloud emit → gateway → executor → ack, over real mTLS on loopback, against the whole
suite under supervisord with the stand-in runtime image.  Runtimes are created through
the executor's bus method on their internal networks only (the cloud contract requires a
vNIC, which would need a LAN), so the bench touches nothing but the engine's bridges.
Prints one JSON object; the target is a flat curve with p99 ≤ 20 ms.

Run from the repository root as root with the Docker engine up:
    python bench/cloud_status.py [--runtimes 0,10,50] [--commands 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cloud_rtt import Agent, round_trips, summary_ms
from bench.common_info import context
from bench.executor import create_one
from common import wire
from common.bus import Endpoints, RpcClient
from devcloud.server import DevCloud
from testkit import dockerenv
from testkit.executor import STANDIN_REPO, cleanup_instance, wait_ready


async def run(args: argparse.Namespace, instance: str, base: Path) -> dict[str, Any]:
    levels = sorted({int(n) for n in args.runtimes.split(",")})
    agent: Agent | None = None
    ctx = zmq.asyncio.Context()
    try:
        async with DevCloud(base / "cloud", port=0, admin_port=0, provision_port=0) as cloud:
            creds = await cloud.enroll(base / "mtls")
            agent = Agent(base, {"ORCH_LOG_LEVEL": args.log_level, "ORCH_CLOUD_URL": cloud.url,
                                 "ORCH_MTLS_DIR": str(creds.directory),
                                 "ORCH_CA_FILE": str(creds.ca_path),
                                 "ORCH_INSTANCE_ID": instance,
                                 "ORCH_RUNTIME_IMAGE": STANDIN_REPO})
            if not await cloud.wait_connected(creds.agent_id, 60):
                raise RuntimeError(f"the agent did not connect; see {base}/supervisord.out")
            bus = RpcClient(ctx, Endpoints(base / "run").rpc("executor"),
                            wire.Stamper("bench"), 60)
            await wait_ready(bus, 60)
            created: list[str] = []
            results: dict[str, Any] = {}
            for level in levels:
                while len(created) < level:
                    batch = [f"bench-{instance}-{len(created) + i}"
                             for i in range(min(4, level - len(created)))]
                    await asyncio.gather(*(create_one(bus, name) for name in batch))
                    created.extend(batch)
                device = created[0] if created else "bench-missing-device"
                payload = {"device_id": device}
                await round_trips(cloud, creds.agent_id, "get_device_status", 100, 4,
                                  payload)
                results[str(level)] = {
                    f"concurrency_{c}": summary_ms(await round_trips(
                        cloud, creds.agent_id, "get_device_status", args.commands, c,
                        payload))
                    for c in (1, 16)}
                results[str(level)]["answer"] = (await cloud.send(
                    creds.agent_id, "get_device_status", payload))["status"]
            bus.close()
            return {"benchmark": "cloud_status", **context(),
                    "sizes": {"commands_per_level": args.commands, "log_level": args.log_level,
                              "runtimes": levels},
                    "round_trip_by_runtimes": results,
                    "targets": {"p99_ms": 20.0, "shape": "flat across runtime counts"}}
    finally:
        if agent is not None:
            agent.stop()
        ctx.destroy(linger=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtimes", default="0,10,50")
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    dockerenv.ensure_engine()
    dc = dockerenv.client()
    dockerenv.ensure_standin_image(dc)
    instance = dockerenv.test_instance("b")
    base = Path(tempfile.mkdtemp(prefix="oacs", dir="/tmp"))
    try:
        figures = asyncio.run(run(args, instance, base))
    finally:
        cleanup_instance(dc, instance)
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
