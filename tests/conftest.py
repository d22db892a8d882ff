"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import zmq.asyncio

from testkit.helpers import short_tmpdir
from testkit.zmqctx import TrackingContext, finish


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A short private directory holding `state/` and `run/` for one test."""
    with short_tmpdir() as path:
        (path / "state").mkdir()
        yield path


@pytest.fixture
async def zctx() -> AsyncIterator[zmq.asyncio.Context]:
    """A context whose sockets the test must close: one left open fails the test."""
    ctx = TrackingContext()
    yield ctx
    finish(ctx)


# Docker fixtures live in their own module so the Docker tests can also run alone.
from tests.docker_fixtures import docker_client, standin_image  # noqa: E402,F401


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules named `test_zz_*` run after every other test of the session, wherever
    they sit: they stop the machine's Docker engine, which nothing after them should
    have to live through (a stable sort keeps every other order as collected)."""
    items.sort(key=lambda item: item.path.name.startswith("test_zz_"))
