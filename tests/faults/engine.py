"""What the engine fault tests share: the probes sent while the engine is away, what
their answers must say, and "every runtime back and running"."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from testkit.helpers import async_wait_for
from tests.faults.conftest import Faulty


async def all_running(f: Faulty, timeout: float) -> None:
    async def running() -> bool:
        for device in f.devices:
            body = await f.sender.send("get_device_status", {"device_id": device})
            if body.get("status") != "success" or body.get("container_status") != "running":
                return False
            container = await asyncio.to_thread(f.agent.dc.containers.get, device)
            if container.status != "running":  # the live view says what the engine says
                return False
        return True
    await async_wait_for(running, timeout, "every runtime back and running", interval=1.0)


# The engine is kept away this long, counted from the moment its process is gone.
OUTAGE = 20.0
# The executor notices the engine gone at its next engine call or when the event stream
# breaks (at once when the process exits): every command after this says so.
NOTICE = 3.0
STATUS_PREFIX = "Failed to retrieve container status: Docker unavailable: "


@dataclass
class Probe:
    topic: str
    at: float  # seconds after the engine was gone
    took: float
    ack: Any


def says_unavailable(probe: Probe, device: str) -> bool:
    """`get_device_status` in the original's shape, its reason naming the engine; every
    other command the `docker_unavailable` error ack."""
    ack = probe.ack
    if not isinstance(ack, dict) or ack.get("status") != "error":
        return False
    if probe.topic == "get_device_status":
        return ack.get("device_id") == device and str(ack.get("error")).startswith(
            STATUS_PREFIX)
    return ack.get("reason") == "docker_unavailable" and str(ack.get("error")).startswith(
        "Docker unavailable: ")


async def probe_while_away(f: Faulty, device: str, gone: float, probes: list[Probe]) -> None:
    """Until OUTAGE seconds after `gone`, every second: commands that need the engine,
    besides the stream's reads and churn — a status, a call through to the runtime, and
    a state change."""
    async def probe(topic: str, payload: dict[str, Any]) -> None:
        started = time.monotonic()
        ack = await f.sender.send(topic, payload)
        probes.append(Probe(topic, started - gone, time.monotonic() - started, ack))

    while time.monotonic() - gone < OUTAGE:
        await asyncio.gather(
            probe("get_device_status", {"device_id": device}),
            probe("run_command", {"device_id": device, "method": "GET", "api": "/api/ping"}),
            probe("restart_device", {"device_id": device}))
        await asyncio.sleep(1.0)


def check_probes(probes: list[Probe], device: str, budget: float) -> None:
    late = [p for p in probes if p.at >= NOTICE]
    assert len(late) >= 3 * 10, probes  # ten rounds at least: answers came promptly
    wrong = [p for p in late if not says_unavailable(p, device)]
    assert wrong == [], wrong
    assert max(p.took for p in probes) < budget, probes
