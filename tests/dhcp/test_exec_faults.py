"""DHCP through the real executor when things fail: the LAN's server goes away and comes
back; the engine's restart, as far as it can be played without stopping the shared
engine (every runtime stopped by the engine while the executor is down, then a new
executor).  The real engine restart is `tests/faults/test_zz_engine_dhcp.py` (opt-in).

Leases are capped at 20 s (`ORCH_DHCP_LEASE_CAP`; dnsmasq's shortest lease is two
minutes), T1/T2 4 s/7 s, so expiry and renewals happen within the test.

Needs root, the engine and dnsmasq.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import docker
import pytest

from common.bus import RpcClient
from testkit.executor import (
    ExecutorProc,
    create_ok,
    https_ok_from,
    short_id,
    wait_ready,
    wait_status,
)
from testkit.helpers import wait_for
from tests.dhcp.lan import DhcpLan
from tests.dhcp.netwatch import ENGINE_NETNS, NetnsWatch
from tests.dhcp.test_docker import container_addresses
from tests.dhcp.test_executor import dhcp_vnic, in_state, lease_of, pid_of

pytestmark = [pytest.mark.docker, pytest.mark.netns, pytest.mark.timeout(300)]

CAP = {"ORCH_DHCP_LEASE_CAP": "20"}
OPTIONS = ["option:T1,4", "option:T2,7"]


async def test_server_gone_then_back(
        lan_on: Callable[..., DhcpLan], executor: ExecutorProc, bus: RpcClient,
        blocks: Callable[[int], list[str]], docker_client: docker.DockerClient) -> None:
    (block,) = blocks(1)
    lan = lan_on(block, ping=False, options=OPTIONS)
    executor.start(**CAP)
    await wait_ready(bus)
    name = f"oat-ds-{short_id()}"
    await create_ok(bus, name, [dhcp_vnic(lan)])
    body = await wait_status(bus, name, in_state("bound"), 30)
    net = lease_of(body)
    ip, mac = net["ip_address"], net["mac_address"]
    expiry = net["dhcp"]["lease_expiry"]

    # No server: renewing at T1, rebinding at T2, the address kept (and reachable) ...
    lan.stop_server()
    stopped_at = time.monotonic()
    await wait_status(bus, name, in_state("rebinding"), 20)
    assert container_addresses(pid_of(docker_client, name), mac) == [f"{ip}/27"]
    assert https_ok_from(lan.ns, ip)
    # ... until the lease really expires: then status shows the loss, the address goes.
    body = await wait_status(bus, name, in_state("expired"), 30)
    lost_after = time.monotonic() - stopped_at
    # Not before the expiry shown while the server was there (a renewal may only
    # have moved it later).
    assert time.time() >= datetime.fromisoformat(expiry).timestamp() - 0.5
    net = lease_of(body)
    assert net["ip_address"] is None and net["gateway"] is None
    assert net["dhcp"]["lease_expiry"] is None and net["dhcp"]["server"] is None
    assert container_addresses(pid_of(docker_client, name), mac) == []
    assert lost_after <= 25, f"expired {lost_after:.1f} s after the server stopped"
    print(f"lease lost {lost_after:.1f} s after the server stopped (last expiry {expiry})")

    # The server is back: leased again, the same address (dnsmasq knows the MAC).
    lan.start_server()
    body = await wait_status(bus, name, in_state("bound"), 90)
    assert lease_of(body)["ip_address"] == ip
    assert container_addresses(pid_of(docker_client, name), mac) == [f"{ip}/27"]
    wait_for(lambda: https_ok_from(lan.ns, ip), 30, interval=0.5,
             what="HTTPS from the LAN at the lease again")


@pytest.mark.skipif(not __import__("os").path.isdir(ENGINE_NETNS),
                    reason="the engine's namespaces are not visible here")
async def test_engine_restart_played_with_leases(
        lan_on: Callable[..., DhcpLan], executor: ExecutorProc, bus: RpcClient,
        blocks: Callable[[int], list[str]], docker_client: docker.DockerClient) -> None:
    """What an engine restart does to the runtimes, played on the shared engine: the
    executor loses its engine (killed here), the engine stops every runtime, a (new)
    executor finds them stopped and starts them.  The leases continue: the same
    addresses, renewed, nothing but the lease ever on the vNICs."""
    (block,) = blocks(1)
    lan = lan_on(block, ping=False, options=OPTIONS)
    executor.start(**CAP)
    await wait_ready(bus)
    names = [f"oat-de-{short_id()}" for _ in range(3)]
    for name in names:
        await create_ok(bus, name, [dhcp_vnic(lan)])
    before = {}
    for name in names:
        before[name] = lease_of(await wait_status(bus, name, in_state("bound"), 30))
    with NetnsWatch() as watch:
        executor.kill()
        for name in names:  # the engine's shutdown: SIGTERM, then SIGKILL
            docker_client.containers.get(name).stop(timeout=2)
        executor.start(**CAP)
        await wait_ready(bus)
        for name in names:
            body = await wait_status(bus, name, lambda b: bool(b.get("is_running"))
                                     and in_state("bound", "renewing")(b), 60)
            net = lease_of(body)
            assert net["ip_address"] == before[name]["ip_address"]
            assert container_addresses(pid_of(docker_client, name), net["mac_address"]) \
                == [f"{net['ip_address']}/27"]
        # Renewed by the new executor: a later lease start than before the restart.
        for name in names:
            since = before[name]["dhcp"]["lease_start"]
            await wait_status(bus, name, lambda b, since=since: in_state("bound")(b) and
                              lease_of(b)["dhcp"]["lease_start"] > since, 30)
    leased = {f"{n['ip_address']}/27" for n in before.values()}
    assert len(watch.seen) >= len(names)
    assert watch.addresses_in(block) <= leased, watch.seen
    assert lan.leases() == {n["mac_address"]: n["ip_address"] for n in before.values()}
    for net in before.values():
        wait_for(lambda ip=net["ip_address"]: https_ok_from(lan.ns, ip), 30, interval=0.5,
                 what=f"HTTPS from the LAN to {net['ip_address']}")
