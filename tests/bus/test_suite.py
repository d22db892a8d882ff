"""The whole suite under supervisord: start, restart, kill -9, FATAL."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.bus import Endpoints, Subscriber
from testkit.helpers import wait_for
from testkit.suite import PROGRAMS, Suite, bin_path, running_suite

FAST = {"ORCH_METRICS_INTERVAL": "1", "ORCH_BEAT_INTERVAL": "0.5"}


@pytest.fixture(scope="module")
def suite() -> Iterator[Suite]:
    """One suite for the module: each test leaves every program RUNNING again."""
    with running_suite(**FAST) as s:
        yield s


async def _sources(sub: Subscriber, wanted: set[str], timeout: float) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while seen != wanted and time.monotonic() < deadline:
        envelope = await sub.recv(deadline - time.monotonic())
        if envelope is not None:
            seen.add(envelope.header.source)
    return seen


async def test_all_programs_run_and_beat(suite: Suite, zctx) -> None:
    states = suite.status()
    assert {p: states[p][0] for p in PROGRAMS} == dict.fromkeys(PROGRAMS, "RUNNING")
    assert states["fatalwatch"][0] == "RUNNING"
    sub = Subscriber(zctx, Endpoints(suite.base / "run").all_pubs(), ["svc."])
    assert await _sources(sub, set(PROGRAMS), 10) == set(PROGRAMS)
    assert oct((suite.base / "run").stat().st_mode & 0o777) == "0o700"
    sub.close()


async def test_restart_metrics_flows_again_without_resubscribing(suite: Suite, zctx) -> None:
    sub = Subscriber(zctx, Endpoints(suite.base / "run").all_pubs(), ["metrics.host"])
    first = await sub.recv(5)
    assert first is not None
    old_pid = suite.status()["metrics"][1]
    out = suite.ctl("restart", "metrics")
    assert "metrics: started" in out
    restarted_at = time.monotonic()
    new_pid = suite.status()["metrics"][1]
    assert new_pid != old_pid
    # The same subscriber sees samples again within one period of the new process starting.
    while True:
        envelope = await sub.recv(max(0.1, restarted_at + 5 - time.monotonic()))
        assert envelope is not None, "no metrics.host after restart"
        if envelope.header.seq < first.header.seq or envelope.header.timestamp > time.time() - 2:
            break
    sub.close()


@pytest.mark.parametrize("program", PROGRAMS)
async def test_kill_9_comes_back(suite: Suite, zctx, program: str) -> None:
    old_pid = suite.status()[program][1]
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    states = wait_for(
        lambda: (s := suite.status()).get(program, ("", None))[0] == "RUNNING"
        and s[program][1] != old_pid and s,
        15, interval=0.2, what=f"{program} restarted")
    new_pid = states[program][1]
    sub = Subscriber(zctx, Endpoints(suite.base / "run").all_pubs(), [f"svc.{program}.alive"])
    while True:
        envelope = await sub.recv(5)
        assert envelope is not None, f"{program} does not beat after restart"
        if envelope.body["pid"] == new_pid:
            break
    sub.close()


def test_program_that_cannot_start_stops_supervisord(base_dir: Path) -> None:
    # An invalid setting makes every program exit at start with a configuration error.
    s = Suite(base_dir, ORCH_METRICS_INTERVAL="-1")
    s.start()
    try:
        assert s.proc is not None
        code = s.proc.wait(60)
        output = s.output()
        assert "FATAL" in output and "fatalwatch" in output
        assert "configuration error" in output
        assert code == 0  # supervisord's own clean exit after the listener's SIGTERM
    finally:
        s.stop()


async def test_tap_shows_live_traffic_from_all_programs(suite: Suite, zctx) -> None:
    import json
    import subprocess

    from common import wire
    from common.bus import RpcClient

    client = RpcClient(zctx, Endpoints(suite.base / "run").rpc("metrics"), wire.Stamper("t"))
    tap = subprocess.Popen([bin_path("orchestrator-tap"), "--json", "--seconds", "4"],
                           env=suite.env, stdout=subprocess.PIPE, text=True)
    # Calls made while the tap runs show up as request traces.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        await client.call("ping")
        await asyncio.sleep(0.2)
    out, _ = tap.communicate(timeout=15)
    assert tap.returncode == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert {r["source"] for r in records} >= set(PROGRAMS)
    assert any(r["topic"] == "rpc.metrics.ping" and r["body"]["outcome"] == "ok"
               for r in records)
    assert any(r["topic"] == "metrics.host" for r in records)
    client.close()
