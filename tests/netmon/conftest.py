from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.netmon.fixtures import lan, netmon_factory, netns
from tests.netmon.nsutil import NetmonProcess

__all__ = ["lan", "netmon_factory", "netns"]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def netmon(lan: str, netmon_factory: Callable[..., NetmonProcess]) -> NetmonProcess:
    return netmon_factory(lan)
