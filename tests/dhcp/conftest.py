"""Fixtures of the DHCP tests: LANs with dnsmasq, runtime stand-ins, lease keepers; all
removed in finalizers, also when a test fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.executor.dhcp import LeaseKeeper, Timing
from tests.dhcp.lan import DhcpLan, make_lan
from tests.docker_fixtures import docker_client, standin_image

__all__ = ["docker_client", "standin_image"]

# Fast retransmissions so a test waits seconds, not RFC minutes; the lease cap makes
# expiry observable although dnsmasq's shortest lease is two minutes.
FAST = Timing(retransmit_initial=0.5, retransmit_max=2.0, request_tries=4, reboot_tries=2,
              no_offer_after=4.0, backoff_max=2.0, renew_min=0.5, lease_cap=20.0)


@pytest.fixture
def lans(tmp_path: Path) -> Iterator[Callable[..., DhcpLan]]:
    made: list[DhcpLan] = []

    def factory(**kwargs: Any) -> DhcpLan:
        where = tmp_path / f"lan{len(made)}"
        where.mkdir()
        lan = make_lan(where, **kwargs)
        made.append(lan)
        return lan

    yield factory
    for lan in made:
        lan.close()


@pytest.fixture
def keepers(tmp_path: Path) -> Iterator[Callable[..., LeaseKeeper]]:
    made: list[LeaseKeeper] = []

    def factory(state: Path | None = None, timing: Timing = FAST, **kwargs: Any) -> LeaseKeeper:
        keeper = LeaseKeeper(state or tmp_path / "state", timing, **kwargs).start()
        made.append(keeper)
        return keeper

    yield factory
    for keeper in made:
        keeper.stop()
