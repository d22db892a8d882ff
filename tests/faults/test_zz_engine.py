"""The Docker engine itself goes away: stopped for 20 s, or killed with the whole suite
(a power cut) in the middle of a create and a delete.

These stop the machine's one engine, so they run last in the suite, only under the
global Docker lock, and only when asked for with `OAT_ENGINE_FAULTS=1` (a machine where
nothing else uses the engine, e.g. CI); the engine is started again whatever happens (a
failure included), before the fixtures clean up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testkit import faults
from testkit.helpers import async_wait_for, wait_for
from testkit.stream import settle
from testkit.suite import Suite
from tests.faults.conftest import ACK_BUDGET, RUNTIMES, Faulty

log = logging.getLogger(__name__)

pytestmark = [
    pytest.mark.docker, pytest.mark.netns,
    pytest.mark.skipif(os.environ.get("OAT_ENGINE_FAULTS") != "1",
                       reason="stops the machine's Docker engine: set OAT_ENGINE_FAULTS=1"),
]


@pytest.fixture(autouse=True)
def engine_restored() -> Iterator[None]:
    try:
        yield
    finally:
        faults.start_engine()


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


async def test_engine_stopped_for_20_s(faulty: Faulty) -> None:
    device = faulty.devices[0]
    probes: list[Probe] = []

    async def probe(topic: str, payload: dict[str, Any], gone: float) -> None:
        started = time.monotonic()
        ack = await faulty.sender.send(topic, payload)
        probes.append(Probe(topic, started - gone, time.monotonic() - started, ack))

    async def outage() -> None:
        await asyncio.to_thread(faults.stop_engine)
        gone = time.monotonic()
        try:
            # Commands that need the engine, besides the stream's reads and churn: a
            # status, a call through to the runtime, and a state change.
            while time.monotonic() - gone < OUTAGE:
                await asyncio.gather(
                    probe("get_device_status", {"device_id": device}, gone),
                    probe("run_command", {"device_id": device, "method": "GET",
                                          "api": "/api/ping"}, gone),
                    probe("restart_device", {"device_id": device}, gone))
                await asyncio.sleep(1.0)
        finally:
            await asyncio.to_thread(faults.start_engine)

    await faulty.under_stream([outage])
    late = [p for p in probes if p.at >= NOTICE]
    assert len(late) >= 3 * 10, probes  # ten rounds at least: answers came promptly
    wrong = [p for p in late if not says_unavailable(p, device)]
    assert wrong == [], wrong
    assert max(p.took for p in probes) < ACK_BUDGET, probes
    faulty.check_acks()  # every command once, in time, an error or not, outage or not
    await all_running(faulty, 90)
    for name in faulty.devices:
        body = await faulty.sender.send("get_device_status", {"device_id": name})
        log.info("after the outage %s: lifecycle %s", name, body.get("lifecycle"))
    await faulty.check_settled()
    states = await asyncio.to_thread(faulty.agent.suite.status)
    assert all(state == "RUNNING" for state, _ in states.values()), states


def journal_step(state_dir: Path, device: str) -> str | None:
    try:
        entry = json.loads((state_dir / "operations" / f"{device}.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return str(entry.get("step")) if entry.get("state") == "in_progress" else None


def power_cut(f: Faulty) -> None:
    """kill -9 of supervisord, every program, netmon and the engine, all at once."""
    pids = f.agent.pids()
    engine = faults.dockerd_pid()
    for pid in [pids.pop("supervisord"), *pids.values(), *([engine] if engine else [])]:
        os.kill(pid, signal.SIGKILL)
    assert f.agent.suite.proc is not None
    f.agent.suite.proc.wait(10)
    f.agent.netmon = None
    wait_for(lambda: faults.dockerd_pid() is None, 20, "the engine gone", interval=0.1)


def power_on(f: Faulty) -> None:
    faults.start_engine()
    old = f.agent.suite
    suite = Suite(f.agent.base)
    suite.env = dict(old.env)
    f.agent.suite = suite
    f.agent.start_netmon()
    suite.start()
    suite.wait_running(60)


async def test_power_cut_mid_create_and_mid_delete(faulty: Faulty) -> None:
    agent, sender = faulty.agent, faulty.sender
    newcomer, leaving = f"{agent.lans[0].parent}-cut", faulty.devices[1]

    async def cut() -> None:
        create = await sender.send("create_new_runtime", {
            "container_name": newcomer, "vnic_configs": [agent.vnic(0, 11 + RUNTIMES + 1)],
            "runtime_version": "test"})
        delete = await sender.send("delete_device", {"device_id": leaving})
        assert create["status"] == "creating" and delete["status"] == "deleting", \
            (create, delete)
        await async_wait_for(lambda: journal_step(agent.state_dir, newcomer) is not None
                             or journal_step(agent.state_dir, leaving) is not None, 10,
                             "an operation in progress", interval=0.01)
        off = time.monotonic()
        await asyncio.to_thread(power_cut, faulty)
        await asyncio.to_thread(power_on, faulty)
        assert await agent.cloud.wait_connected(agent.id, 30)
        log.info("power cut: the agent back %.1f s after the cut", time.monotonic() - off)

    # The stream (reads and churn) goes on through the cut: what was in flight is
    # resent as the cloud does, what comes meanwhile waits for the link — as long as
    # the cloud would: past the engine's own start and the suite's.
    sender.deadline = 180
    started = time.monotonic()
    await faulty.under_stream([cut])
    log.info("power cut: stream of %.0f s, %s", time.monotonic() - started,
             sender.ledger.summary())

    # Every operation finished or rolled back; never stuck, never half there.
    made = await settle(sender, newcomer, 90)
    assert made["status"] in ("success", "not_found", "error"), made
    gone = await settle(sender, leaving, 90)
    assert gone["status"] in ("not_found", "success"), gone
    faulty.devices.remove(leaving)
    if gone["status"] == "success":
        faulty.devices.append(leaving)
    if made["status"] == "success":
        faulty.devices.append(newcomer)
    await all_running(faulty, 90)
    await faulty.check_settled()
    # The gateway died with commands in flight: those were resent.
    faulty.check_acks(resends_allowed=True)
