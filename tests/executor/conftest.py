"""Fixtures of the executor tests: a fresh executor per test, test LANs, a netbridge
stand-in; everything removed in finalizers, also when a test fails."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import docker
import pytest
import zmq.asyncio

from common.bus import RpcClient
from testkit.executor import (
    ExecutorProc,
    FakeNetbridge,
    Lan,
    cleanup_instance,
    make_lan,
    release_pins,
    remove_lan,
    wait_ready,
)
from testkit.helpers import short_tmpdir
from tests.docker_fixtures import docker_client, standin_image

__all__ = ["docker_client", "standin_image"]


@pytest.fixture
def make_executor(docker_client: docker.DockerClient, standin_image: str
                  ) -> Iterator[Callable[..., ExecutorProc]]:
    """Factory: an executor process (not yet started) in a private directory."""
    made: list[tuple[ExecutorProc, contextlib.ExitStack]] = []

    def factory(**env: str) -> ExecutorProc:
        stack = contextlib.ExitStack()
        base = stack.enter_context(short_tmpdir("oatx"))
        proc = ExecutorProc(Path(base), **env)
        made.append((proc, stack))
        return proc

    yield factory
    for proc, stack in made:
        proc.stop()
        # Captured by pytest and shown only when the test failed.
        lines = proc.output().splitlines()
        print(f"--- executor {proc.instance} log (tail) ---\n" + "\n".join(lines[-80:]))
        cleanup_instance(docker_client, proc.instance)
        release_pins(proc.run_dir)
        stack.close()


@pytest.fixture
def executor(make_executor: Callable[..., ExecutorProc]) -> ExecutorProc:
    return make_executor().start()


@pytest.fixture
async def bus(executor: ExecutorProc, zctx: zmq.asyncio.Context) -> AsyncIterator[RpcClient]:
    client = executor.client(zctx)
    try:
        await wait_ready(client)
    except AssertionError:
        raise AssertionError(f"executor not ready; log:\n{executor.output()[-3000:]}") from None
    yield client
    client.close()


@pytest.fixture
def lans(docker_client: docker.DockerClient) -> Iterator[Callable[[], Lan]]:
    """Factory of test LANs (veth pair + namespace), all removed at the end."""
    made: list[Lan] = []
    taken: set[str] = set()

    def factory() -> Lan:
        lan = make_lan(docker_client, taken)
        made.append(lan)
        return lan

    yield factory
    for lan in made:
        remove_lan(lan)


@pytest.fixture
async def netbridge(executor: ExecutorProc, zctx: zmq.asyncio.Context
                    ) -> AsyncIterator[FakeNetbridge]:
    fake = FakeNetbridge(zctx, executor.run_dir)
    stop = asyncio.Event()
    task = asyncio.create_task(fake.server.serve(stop))
    yield fake
    stop.set()
    await task
    fake.server.close()
