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
from pathlib import Path

import pytest

from testkit import faults
from testkit.helpers import async_wait_for, wait_for
from testkit.stream import settle
from testkit.suite import Suite
from tests.faults.conftest import ACK_BUDGET, RUNTIMES, STOPS_THE_ENGINE, Faulty
from tests.faults.engine import Probe, all_running, check_probes, probe_while_away

log = logging.getLogger(__name__)

pytestmark = [
    pytest.mark.docker, pytest.mark.netns,
    *STOPS_THE_ENGINE,
]


async def test_engine_stopped_for_20_s(faulty: Faulty) -> None:
    device = faulty.devices[0]
    probes: list[Probe] = []

    async def outage() -> None:
        await asyncio.to_thread(faults.stop_engine)
        try:
            await probe_while_away(faulty, device, time.monotonic(), probes)
        finally:
            await asyncio.to_thread(faults.start_engine)

    await faulty.under_stream([outage])
    check_probes(probes, device, ACK_BUDGET)
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
