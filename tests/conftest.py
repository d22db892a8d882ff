"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import zmq.asyncio

from testkit.helpers import short_tmpdir


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A short private directory holding `state/` and `run/` for one test."""
    with short_tmpdir() as path:
        (path / "state").mkdir()
        yield path


@pytest.fixture
async def zctx() -> AsyncIterator[zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


# Docker fixtures live in their own module so the Docker tests can also run alone.
from tests.docker_fixtures import docker_client, standin_image  # noqa: E402,F401
