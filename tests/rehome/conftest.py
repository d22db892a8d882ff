"""Fixtures of the re-homing tests: executors (from the executor tests), moving LANs, a
scripted netbridge; everything removed in finalizers, also when a test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import docker
import pytest
import zmq.asyncio

from testkit.executor import ExecutorProc
from testkit.movinglan import MovingLan, free_blocks, make_moving_lan, remove_moving_lan
from tests.docker_fixtures import docker_client, standin_image
from tests.executor.conftest import make_executor
from tests.rehome.fakebridge import FakeBridge

__all__ = ["docker_client", "make_executor", "standin_image"]


@pytest.fixture
def moving_lans() -> Iterator[Callable[[], MovingLan]]:
    made: list[MovingLan] = []

    def factory() -> MovingLan:
        lan = make_moving_lan()
        made.append(lan)
        return lan

    yield factory
    for lan in made:
        remove_moving_lan(lan)


@pytest.fixture
def blocks(docker_client: docker.DockerClient) -> Callable[[int], list[str]]:
    """Free /27 documentation blocks, never the same one twice in a test."""
    given: set[str] = set()

    def take(count: int) -> list[str]:
        found = free_blocks(docker_client, count, given)
        given.update(found)
        return found
    return take


@pytest.fixture
async def bridge_for(zctx: zmq.asyncio.Context) -> AsyncIterator[
        Callable[[ExecutorProc], FakeBridge]]:
    made: list[FakeBridge] = []

    def factory(executor: ExecutorProc) -> FakeBridge:
        bridge = FakeBridge(zctx, executor.run_dir).start()
        made.append(bridge)
        return bridge

    yield factory
    for bridge in made:
        await bridge.close()
