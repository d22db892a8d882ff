"""Fixtures for netbridge tests: a test namespace with `oat0`, netmon inside it, the bridge
on the host sharing netmon's state directory."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import zmq.asyncio

from tests.netbridge.bridge import BridgeProcess, Bus
from tests.netmon.nsutil import NetmonProcess, ip, unique_ns


@pytest.fixture
def netns() -> Iterator[str]:
    name = unique_ns()
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        ip(name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


@pytest.fixture
def lan(netns: str) -> str:
    """`oat0` (192.0.2.10/24, default route via 192.0.2.1) and its peer `oat0p`."""
    ip(netns, "link", "add", "oat0", "type", "veth", "peer", "name", "oat0p")
    ip(netns, "link", "set", "oat0p", "up")
    ip(netns, "link", "set", "oat0", "up")
    ip(netns, "addr", "add", "192.0.2.10/24", "dev", "oat0")
    ip(netns, "route", "add", "default", "via", "192.0.2.1", "dev", "oat0")
    return netns


@pytest.fixture
def state_dir(base_dir: Path) -> Path:
    return base_dir / "state"


@pytest.fixture
def netmon_factory(state_dir: Path) -> Iterator[Callable[..., NetmonProcess]]:
    started: list[NetmonProcess] = []

    def make(ns: str, wait: bool = True) -> NetmonProcess:
        proc = NetmonProcess(ns, state_dir, debounce=0.3)
        started.append(proc)
        return proc.start(wait=wait)

    yield make
    for proc in started:
        proc.cleanup()


@pytest.fixture
def bridge_factory(base_dir: Path) -> Iterator[Callable[[], BridgeProcess]]:
    started: list[BridgeProcess] = []

    def make() -> BridgeProcess:
        proc = BridgeProcess(base_dir).start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.cleanup()


@pytest.fixture
async def bus(zctx: zmq.asyncio.Context, base_dir: Path) -> AsyncIterator[Bus]:
    probe = Bus(zctx, base_dir / "run")
    try:
        yield probe
    finally:
        probe.close()
