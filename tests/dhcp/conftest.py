"""Fixtures of the DHCP tests: LANs with dnsmasq, runtime stand-ins, lease keepers, and
an executor process with a netbridge stand-in and a bus client; all removed in
finalizers, also when a test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import zmq.asyncio

from common.bus import RpcClient
from services.executor.dhcp import LeaseKeeper, Timing
from testkit.executor import ExecutorProc, cleanup_instance
from testkit.helpers import short_tmpdir
from testkit.movinglan import free_blocks
from tests.dhcp.lan import DhcpLan, make_lan
from tests.docker_fixtures import docker_client, standin_image
from tests.rehome.fakebridge import FakeBridge

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


@pytest.fixture
def executor(docker_client: docker.DockerClient, standin_image: str
             ) -> Iterator[ExecutorProc]:
    """An executor process with DHCP leases on, not yet started (a test starts it with
    the environment it wants)."""
    with short_tmpdir("oatx") as base:
        proc = ExecutorProc(Path(base), ORCH_DHCP_LEASES="on", ORCH_DHCP_NO_OFFER_AFTER="4")
        try:
            yield proc
        finally:
            proc.stop()
            lines = proc.output().splitlines()
            print(f"--- executor {proc.instance} log (tail) ---\n" + "\n".join(lines[-80:]))
            cleanup_instance(docker_client, proc.instance)


@pytest.fixture
async def bridge(executor: ExecutorProc, zctx: zmq.asyncio.Context
                 ) -> AsyncIterator[FakeBridge]:
    fake = FakeBridge(zctx, executor.run_dir).start()
    yield fake
    await fake.close()


@pytest.fixture
async def bus(executor: ExecutorProc, bridge: FakeBridge, zctx: zmq.asyncio.Context
              ) -> AsyncIterator[RpcClient]:
    client = executor.client(zctx)
    yield client
    client.close()


@pytest.fixture
def blocks(docker_client: docker.DockerClient) -> Callable[[int], list[str]]:
    return lambda n: free_blocks(docker_client, n, set())


@pytest.fixture
def lan_on(lans: Callable[..., DhcpLan], bridge: FakeBridge) -> Callable[..., DhcpLan]:
    """Factory: a LAN on `block` that netmon (the bridge stand-in) reports to the
    executor, its dnsmasq leasing hosts `pool` of the block unless `server=False`; other
    keywords go to `lans`."""
    def factory(block: str, *, server: bool = True, pool: tuple[int, int] = (16, 24),
                **kwargs: Any) -> DhcpLan:
        lan = lans(**kwargs)
        if server:
            lan.serve(block, pool)
        bridge.table[lan.parent] = lan.host_interface(block)
        return lan
    return factory
