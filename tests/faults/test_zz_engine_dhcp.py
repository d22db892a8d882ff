"""The Docker engine restarts under dhcp vPLCs: the leases continue.

The real thing, where `tests/dhcp/test_exec_faults.py` plays it on the shared engine:
the engine is stopped (its runtimes with it) and started again; the executor, running all
along, reconnects and starts the runtimes; each gets its lease back (the same address,
asked for first), renewals continue, and nothing but the lease is ever seen on a vNIC.

Stops the machine's one engine: only under the global Docker lock and only with
`OAT_ENGINE_FAULTS=1` (a machine where nothing else uses the engine, e.g. CI); the
engine is started again whatever happens, before the fixtures clean up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import docker
import pytest

from common.bus import RpcClient
from testkit import faults
from testkit.executor import ExecutorProc, create_ok, short_id, wait_ready, wait_status
from testkit.helpers import wait_for
from tests.dhcp.conftest import blocks, bridge, bus, executor, lan_on, lans
from tests.dhcp.lan import DhcpLan
from tests.dhcp.netwatch import NetnsWatch
from tests.dhcp.test_docker import container_addresses
from tests.dhcp.test_executor import dhcp_vnic, in_state, lease_of, pid_of
from tests.docker_fixtures import docker_client, standin_image
from tests.faults.conftest import STOPS_THE_ENGINE

__all__ = ["blocks", "bridge", "bus", "docker_client", "executor", "lan_on", "lans",
           "standin_image"]

pytestmark = [
    pytest.mark.docker, pytest.mark.netns, pytest.mark.timeout(400),
    *STOPS_THE_ENGINE,
]


async def test_engine_restart_keeps_leases(
        lan_on: Callable[..., DhcpLan], executor: ExecutorProc, bus: RpcClient,
        blocks: Callable[[int], list[str]], docker_client: docker.DockerClient) -> None:
    (block,) = blocks(1)
    lan = lan_on(block, ping=False, options=["option:T1,4", "option:T2,7"])
    executor.start(ORCH_DHCP_LEASE_CAP="20")
    await wait_ready(bus)
    names = [f"oat-dz-{short_id()}" for _ in range(2)]
    for name in names:
        await create_ok(bus, name, [dhcp_vnic(lan)])
    before = {n: lease_of(await wait_status(bus, n, in_state("bound"), 30)) for n in names}
    with NetnsWatch() as watch:
        await asyncio.to_thread(faults.stop_engine)
        await asyncio.sleep(5)
        await asyncio.to_thread(faults.start_engine)
        for name in names:
            body = await wait_status(bus, name, lambda b: bool(b.get("is_running"))
                                     and in_state("bound")(b), 120)
            net = lease_of(body)
            assert net["ip_address"] == before[name]["ip_address"]
            dc = docker.DockerClient.from_env()  # the old client's connection is gone
            try:
                assert container_addresses(pid_of(dc, name), net["mac_address"]) == \
                    [f"{net['ip_address']}/27"]
            finally:
                dc.close()
        for name in names:
            since = before[name]["dhcp"]["lease_start"]
            await wait_status(bus, name, lambda b, since=since: in_state("bound")(b) and
                              lease_of(b)["dhcp"]["lease_start"] > since, 30)
    assert watch.addresses_in(block) <= {f"{n['ip_address']}/27" for n in before.values()}
    wait_for(lambda: lan.leases() == {n["mac_address"]: n["ip_address"]
                                      for n in before.values()}, 10, "dnsmasq's leases")
