"""A steady stream of cloud commands with the cloud's resend rule, and its ledger.

Each command gets a fresh `correlation_id`.  When no ack comes back (the gateway died with
it, or the link was down) the sender does what the cloud does: it waits for the agent to
reconnect and resends the same payload with the same id, until an ack comes or the
command's deadline passes.  An explicit error ack counts as acked; its kind (the ack's
`reason`, else the first words of its text) is counted.  A command without any ack by its
deadline is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from devcloud.errors import AckTimeout, AgentNotConnected
from devcloud.server import DevCloud

STATE_CHANGING = {"create_new_runtime", "delete_device", "start_device", "stop_device",
                  "restart_device", "delete_orchestrator"}


def error_kind(ack: Any) -> str | None:
    """None for a success; else a short stable name of the error."""
    if not isinstance(ack, dict) or ack.get("status") != "error":
        return None
    if ack.get("reason"):
        return str(ack["reason"])
    response = ack.get("http_response")
    if isinstance(response, dict):  # run_command: the runtime's own answer was an error
        return f"http {response.get('status_code')}"
    text = re.sub(r"[0-9a-f]{12,}|\d+", "#", str(ack.get("error", "")))
    return " ".join(text.split()[:4]) or "error"


@dataclass
class Lost:
    topic: str
    correlation_id: int
    attempts: int


@dataclass
class Ledger:
    sent: int = 0
    acked: int = 0
    attempts: int = 0
    resends: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    lost: list[Lost] = field(default_factory=list)
    slowest: float = 0.0
    slowest_first_try: float = 0.0  # of the commands acked on their first attempt
    acks: dict[int, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"commands_sent": self.sent, "acks_received": self.acked,
                "acks_lost": len(self.lost), "attempts": self.attempts,
                "resends": self.resends, "by_topic": dict(self.by_topic),
                "errors_by_kind": dict(self.errors.most_common()),
                "slowest_ack_s": round(self.slowest, 3),
                "slowest_first_try_ack_s": round(self.slowest_first_try, 3),
                "lost": [vars(lost) for lost in self.lost[:20]]}


class Sender:
    def __init__(self, cloud: DevCloud, agent_id: str, *, ack_timeout: float = 20.0,
                 deadline: float = 120.0, start_id: int = 7_000_000_000_000) -> None:
        self.cloud, self.agent_id = cloud, agent_id
        self.ack_timeout, self.deadline = ack_timeout, deadline
        self.ledger = Ledger()
        self._ids = itertools.count(start_id)

    async def send(self, topic: str, payload: dict[str, Any]) -> Any:
        """Send until acked or the deadline passes; the ack, or None when lost."""
        cid = next(self._ids)
        body = {**payload, "correlation_id": cid}
        ledger = self.ledger
        ledger.sent += 1
        ledger.by_topic[topic] += 1
        started = time.monotonic()
        end = started + self.deadline
        attempts = 0
        while (remaining := end - time.monotonic()) > 0:
            if not self.cloud.hub.is_connected(self.agent_id):
                await self.cloud.wait_connected(self.agent_id, min(remaining, 5))
                continue
            attempts += 1
            ledger.attempts += 1
            if attempts > 1:
                ledger.resends += 1
            try:
                record = await self.cloud.send_record(
                    self.agent_id, topic, body, stamp=False,
                    timeout=max(0.5, min(self.ack_timeout, remaining)))
            except (AckTimeout, AgentNotConnected):
                await asyncio.sleep(0.5)
                continue
            ledger.acked += 1
            ledger.slowest = max(ledger.slowest, time.monotonic() - started)
            if attempts == 1:
                ledger.slowest_first_try = max(ledger.slowest_first_try, record.elapsed)
            kind = error_kind(record.ack)
            if kind is not None:
                ledger.errors[f"{topic}: {kind}"] += 1
            if topic in STATE_CHANGING:
                ledger.acks[cid] = record.ack
            return record.ack
        ledger.lost.append(Lost(topic, cid, attempts))
        return None


def read_command(rng: random.Random, devices: list[str]) -> tuple[str, dict[str, Any]]:
    """One read of the mix: status, consumption, host interfaces, run_command GETs."""
    device = rng.choice(devices) if devices else "plc-none"
    roll = rng.random()
    if roll < 0.35:
        return "get_device_status", {"device_id": device}
    if roll < 0.50:
        return "get_consumption_device", {"device_id": device, "cpuPeriod": "1h",
                                          "memoryPeriod": "1h"}
    if roll < 0.55:
        return "get_consumption_orchestrator", {"cpuPeriod": "1h", "memoryPeriod": "1h"}
    if roll < 0.70:
        return "get_host_interfaces", {"include_virtual": False, "detailed": True}
    api = rng.choice(("/api/version", "/api/ping", "/api/status"))
    return "run_command", {"device_id": device, "method": "GET", "api": api}


async def read_stream(sender: Sender, devices: list[str], rate: float, stop: asyncio.Event,
                      seed: int = 1, max_in_flight: int = 32) -> None:
    """Reads at `rate` per second until `stop`; waits for the ones in flight."""
    rng = random.Random(seed)
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[Any]] = set()

    async def one(topic: str, payload: dict[str, Any]) -> None:
        try:
            await sender.send(topic, payload)
        finally:
            slots.release()

    period = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        await slots.acquire()
        task = asyncio.create_task(one(*read_command(rng, devices)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_at += period
        delay = next_at - time.monotonic()
        if delay < -5 * period:  # fell behind (a stall): do not burst to catch up
            next_at = time.monotonic()
        with_timeout = max(0.0, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), with_timeout)
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def settle(sender: Sender, device: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll `get_device_status` until the device is neither creating nor deleting."""
    end = time.monotonic() + timeout
    ack: Any = None
    while time.monotonic() < end:
        ack = await sender.send("get_device_status", {"device_id": device})
        if isinstance(ack, dict) and ack.get("status") not in ("creating", "deleting") \
                and ack.get("reason") not in ("unavailable", "timeout"):
            return ack
        await asyncio.sleep(1.0)
    raise AssertionError(f"{device} never settled; last status {ack}")


async def churn(sender: Sender, device: str, vnic: dict[str, Any], stop: asyncio.Event,
                image_tag: str, pause: float = 10.0) -> Counter[str]:
    """Create and delete `device` over and over until `stop`; counts what was seen."""
    seen: Counter[str] = Counter()
    while not stop.is_set():
        state = await settle(sender, device)
        if state.get("status") == "success":
            ack = await sender.send("delete_device", {"device_id": device})
            seen[f"delete: {ack.get('status') if isinstance(ack, dict) else ack}"] += 1
        else:
            ack = await sender.send("create_new_runtime", {
                "container_name": device, "vnic_configs": [vnic],
                "runtime_version": image_tag})
            seen[f"create: {ack.get('status') if isinstance(ack, dict) else ack}"] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
    await settle(sender, device)
    return seen
