"""Fixtures for netbridge tests: a test namespace with `oat0`, netmon inside it, the bridge
on the host sharing netmon's state directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import zmq.asyncio

from tests.netbridge.bridge import BridgeProcess, Bus
from tests.netmon.fixtures import lan, netmon_factory, netns

__all__ = ["lan", "netmon_factory", "netns"]


@pytest.fixture
def state_dir(base_dir: Path) -> Path:
    return base_dir / "state"


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
