"""Faults to inject into a running agent (`testkit.cloudagent.CloudAgent`).

Each returns once the fault is in place and the agent is back (or, for the engine, once
it is stopped); each is bounded.  The engine faults stop the machine's one Docker engine:
only under the global lock, never beside other people's tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from testkit import dockerenv
from testkit.cloudagent import CloudAgent
from testkit.helpers import wait_for

DOCKER_PIDFILE = Path(os.environ.get("ORCH_DOCKERD_PIDFILE", "/var/run/docker.pid"))


async def back_up(agent: CloudAgent, old: dict[str, int], program: str,
                  timeout: float = 60) -> float:
    """Wait until `program` runs under a new pid and the agent is connected; seconds."""
    started = time.monotonic()

    def replaced() -> bool:
        pid = agent.pids().get(program)
        return pid is not None and pid != old.get(program)
    await asyncio.to_thread(wait_for, replaced, timeout, f"{program} restarted",
                            interval=0.2)
    if not await agent.cloud.wait_connected(agent.id, timeout):
        raise AssertionError("the agent did not reconnect")
    return time.monotonic() - started


async def kill9(agent: CloudAgent, program: str) -> float:
    old = await asyncio.to_thread(agent.pids)
    os.kill(old[program], signal.SIGKILL)
    return await back_up(agent, old, program)


async def ctl_restart(agent: CloudAgent, program: str) -> float:
    old = await asyncio.to_thread(agent.pids)
    out = await asyncio.to_thread(agent.suite.ctl, "restart", program)
    if f"{program}: started" not in out:
        raise AssertionError(f"supervisorctl restart {program}: {out!r}")
    return await back_up(agent, old, program)


async def netmon_bounce(agent: CloudAgent, down: float = 5.0) -> float:
    started = time.monotonic()
    agent.kill_netmon()
    await asyncio.sleep(down)
    agent.start_netmon()
    return time.monotonic() - started


def dockerd_pid() -> int | None:
    try:
        pid = int(DOCKER_PIDFILE.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop_engine(timeout: float = 60) -> None:
    """Stop the Docker engine (SIGTERM, then SIGKILL) and wait until it is gone."""
    pid = dockerd_pid()
    if pid is None:
        raise RuntimeError(f"no running dockerd in {DOCKER_PIDFILE}")
    os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: dockerd_pid() is None, timeout, "dockerd to exit", interval=0.2)
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: dockerd_pid() is None, 20, "dockerd killed", interval=0.2)


def kill_engine() -> None:
    pid = dockerd_pid()
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: dockerd_pid() is None, 20, "dockerd killed", interval=0.2)


def start_engine() -> None:
    """Start the engine again (the installer's script) and wait until it answers."""
    if dockerenv.engine_answers():
        return
    subprocess.run([str(dockerenv.ENGINE_SCRIPT)], check=True, capture_output=True,
                   timeout=180)
    wait_for(dockerenv.engine_answers, 60, "the engine answering", interval=0.5)


async def engine_outage(seconds: float = 20.0) -> float:
    started = time.monotonic()
    await asyncio.to_thread(stop_engine)
    try:
        await asyncio.sleep(seconds)
    finally:
        await asyncio.to_thread(start_engine)
    return time.monotonic() - started
