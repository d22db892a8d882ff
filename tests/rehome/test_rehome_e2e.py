"""End to end: real netmon → netbridge → executor (the supervisord suite), real netlink,
the real engine.  The MACVLAN parent must be visible to the engine, so it is a veth end
in the host namespace, and netmon watches the host namespace as it does in production;
the test changes only the veth pair and the namespace it created (netmon only reads)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import zmq.asyncio

from common import wire
from common.bus import Endpoints, RpcClient
from testkit import dockerenv
from testkit.executor import (
    STANDIN_REPO,
    cleanup_instance,
    create_ok,
    macvlan_name,
    short_id,
    wait_ready,
)
from testkit.helpers import (
    agent_env,
    async_wait_for,
    short_tmpdir,
    start_module,
    stop_process,
    wait_for,
)
from testkit.movinglan import MovingLan
from testkit.suite import Suite
from tests.rehome.tools import (
    Beats,
    dhcp,
    endpoints_of,
    lan_view,
    manual,
    network_ids,
    on_network,
    program_dir,
    started_at,
    stored_vnics,
)

pytestmark = [pytest.mark.docker, pytest.mark.netns, pytest.mark.timeout(180)]

DEBOUNCE = 0.5


@dataclass
class Agent:
    suite: Suite
    netmon: subprocess.Popen[bytes]
    base: Path

    @property
    def instance(self) -> str:
        return self.suite.env["ORCH_INSTANCE_ID"]

    def client(self, ctx: zmq.asyncio.Context, server: str) -> RpcClient:
        return RpcClient(ctx, Endpoints(self.base / "run").rpc(server), wire.Stamper("test"),
                         10.0)


@pytest.fixture
def agent(docker_client: docker.DockerClient, standin_image: str) -> Iterator[Agent]:
    """The suite under supervisord plus netmon (host namespace), sharing one state dir."""
    instance = dockerenv.test_instance("e")
    with short_tmpdir() as base:
        (base / "state").mkdir()
        path = f"{program_dir(base)}{os.pathsep}{agent_env(base)['PATH']}"
        suite = Suite(base, PATH=path, ORCH_INSTANCE_ID=instance, ORCH_RUNTIME_IMAGE=STANDIN_REPO,
                      ORCH_SIDECAR_CONTAINER=f"oat-sidecar-{instance}", ORCH_STOP_GRACE="3",
                      ORCH_BEAT_INTERVAL="0.5", ORCH_RECONNECT_MAX="0.5",
                      ORCH_LOG_LEVEL="DEBUG")
        netmon = start_module("services.netmon", agent_env(base), base / "netmon.out",
                              "--debounce", str(DEBOUNCE), "--log-level", "DEBUG")
        try:
            suite.start()
            suite.wait_running()
            yield Agent(suite, netmon, base)
        finally:
            suite.stop()
            stop_process(netmon)
            cleanup_instance(docker_client, instance)
            # Shown only when the test failed.
            print(suite.output()[-6000:])
            print((base / "netmon.out").read_text(errors="replace")[-3000:])


async def host_row(netbridge: RpcClient, lan: MovingLan) -> dict[str, Any] | None:
    # detailed (true): the row keeps subnet and gateway.
    reply = await netbridge.call("host_interfaces", {"include_virtual": False,
                                                     "detailed": True})
    for row in reply.get("interfaces") or []:
        if row["name"] == lan.parent and row["subnet"] == lan.subnet \
                and row["gateway"] == lan.gateway():
            # The original's keys; detailed rows add netmon's details besides.
            keys = ("name", "ip_address", "ipv4_addresses", "mac_address", "subnet",
                    "gateway")
            return {key: row[key] for key in keys}
    return None


def parent_mac(lan: MovingLan) -> str:
    return Path(f"/sys/class/net/{lan.parent}/address").read_text().strip()


async def test_parent_moves_runtimes_follow(
        agent: Agent, zctx: zmq.asyncio.Context, moving_lans: Callable[[], MovingLan],
        blocks: Callable[[int], list[str]], docker_client: docker.DockerClient) -> None:
    old, new = blocks(2)
    lan = moving_lans()
    lan.lan_side(old)
    lan.move_host(old)
    executor, netbridge = agent.client(zctx, "executor"), agent.client(zctx, "netbridge")
    beats = Beats(zctx, agent.base / "run")
    try:
        await wait_ready(executor)
        # get_host_interfaces, as the gateway asks it: the test interface with its
        # address, subnet and gateway, as netmon saw them on the host.
        row = await async_wait_for(lambda: host_row(netbridge, lan), 20, interval=0.2,
                                   what="the parent in get_host_interfaces")
        assert row == {"name": lan.parent, "ip_address": lan.host_address(),
                       "ipv4_addresses": [lan.host_address()], "mac_address": parent_mac(lan),
                       "subnet": old, "gateway": lan.gateway()}

        fixed, auto = f"oat-fix-{short_id()}", f"oat-dyn-{short_id()}"
        await create_ok(executor, fixed, [manual(lan, old, 20)])
        await create_ok(executor, auto, [dhcp(lan)])
        before = {n: lan_view(await on_network(executor, n, macvlan_name(lan.parent, old)))
                  for n in (fixed, auto)}
        starts = {n: started_at(docker_client, n) for n in (fixed, auto)}
        wait_for(lambda: lan.reach_https(before[fixed][1]), 30, "the LAN reaching the runtime")

        # The host moves to another subnet (new address, new gateway): netmon → netbridge →
        # executor; both runtimes follow with their MACs, without a restart.
        lan.lan_side(new)
        lan.move_host(new)
        after = {n: await on_network(executor, n, macvlan_name(lan.parent, new), timeout=30)
                 for n in (fixed, auto)}
        for n in (fixed, auto):
            network, ip, mac = lan_view(after[n])
            assert mac == before[n][2], n
            assert started_at(docker_client, n) == starts[n], f"{n} was restarted"
            assert after[n]["restart_count"] == 0 and after[n]["is_running"] is True
            event = after[n]["last_rehome"]
            assert event["from_network"] == macvlan_name(lan.parent, old)
            assert event["to_network"] == network and event["to_subnet"] == new
            assert event["ip_address"] == ip and event["mac_address"] == mac
            (stored,) = stored_vnics(agent.base / "state", n)
            assert stored["network"] == network and stored["mac_address"] == mac
            assert stored["parent_subnet"] == new and stored["parent_gateway"] == lan.gateway()
        assert after[auto]["last_rehome"]["outcome"] == "rehomed"
        # The static address cannot live on the new subnet: the engine assigned one
        # (the default policy), and the event says why.
        assert after[fixed]["last_rehome"]["outcome"] == "rehomed_new_ip"
        assert "not a host address" in after[fixed]["last_rehome"]["note"]
        for n in (fixed, auto):
            _, ip, mac = lan_view(after[n])
            wait_for(lambda ip=ip: lan.reach_https(ip), 30, f"the LAN reaching {n} at {ip}")
            assert lan.neighbour_mac(ip) == mac
        assert macvlan_name(lan.parent, old) not in network_ids(docker_client)
        row = await async_wait_for(lambda: host_row(netbridge, lan), 10, interval=0.2,
                                   what="the new subnet in get_host_interfaces")
        assert row["ip_address"] == lan.host_address()

        # A cable replug on the same subnet: events flow, nothing is touched.
        endpoints = {n: endpoints_of(docker_client, n) for n in (fixed, auto)}
        ids = network_ids(docker_client, agent.instance)
        counters = await beats.current()
        seen = counters.get("net_events_received", 0)
        lan.carrier(False)
        await beats.wait(lambda c: c.get("net_events_received", 0) > seen)
        lan.carrier(True)
        await beats.settled_after(seen + 1)
        for n in (fixed, auto):
            body = await executor.call("device_status", {"device_id": n})
            assert body["networks"] == after[n]["networks"]
            assert body["network_events"] == after[n]["network_events"]
            assert endpoints_of(docker_client, n) == endpoints[n]
        assert network_ids(docker_client, agent.instance) == ids
        wait_for(lambda: lan.reach_https(lan_view(after[auto])[1]), 30, "reachable after replug")
    finally:
        beats.close()
        with contextlib.suppress(Exception):
            executor.close()
            netbridge.close()
