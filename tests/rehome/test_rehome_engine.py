"""Re-homing against the real engine, driven event by event by a scripted netbridge:
inactive parents, a cable replug, the `detach` policy and a move back, a kill -9 in the
middle of a move, and the reconciliation at start."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import docker
import pytest
import zmq.asyncio

from testkit.executor import (
    ExecutorProc,
    create_ok,
    journal,
    macvlan_name,
    short_id,
    wait_ready,
    wait_status,
)
from testkit.helpers import wait_for
from testkit.movinglan import MovingLan, host
from tests.rehome.fakebridge import FakeBridge
from tests.rehome.tools import (
    Beats,
    dhcp,
    endpoints_of,
    lan_view,
    manual,
    network_ids,
    on_network,
    started_at,
    stored_vnics,
)

pytestmark = [pytest.mark.docker, pytest.mark.netns, pytest.mark.timeout(180)]


async def test_inactive_replug_detach_and_back(
        make_executor: Callable[..., ExecutorProc], zctx: zmq.asyncio.Context,
        moving_lans: Callable[[], MovingLan], blocks: Callable[[int], list[str]],
        bridge_for: Callable[[ExecutorProc], FakeBridge],
        docker_client: docker.DockerClient) -> None:
    old, new = blocks(2)
    lan = moving_lans()
    lan.subnet = old
    lan.lan_side(old, new)
    executor = make_executor(ORCH_REHOME_STATIC_MISFIT="detach")
    bridge = bridge_for(executor)
    bridge.table[lan.parent] = lan.iface(old)
    executor.start()
    bus = executor.client(zctx)
    beats = Beats(zctx, executor.run_dir)
    try:
        await wait_ready(bus)
        fixed, auto = f"oat-fix-{short_id()}", f"oat-dyn-{short_id()}"
        await create_ok(bus, fixed, [manual(lan, old, 20)])
        await create_ok(bus, auto, [dhcp(lan)])
        before = {n: lan_view(await on_network(bus, n, macvlan_name(lan.parent, old)))
                  for n in (fixed, auto)}
        starts = {n: started_at(docker_client, n) for n in (fixed, auto)}
        endpoints = {n: endpoints_of(docker_client, n) for n in (fixed, auto)}
        ids = network_ids(docker_client, executor.instance)

        # Cable pulled (inactive, no addresses), then replugged on the same subnet:
        # nothing is touched.
        for iface in (lan.iface(active=False), lan.iface(old)):
            counters = await beats.current()
            bridge.change(iface)
            await beats.settled_after(counters.get("net_events_received", 0))
            for n in (fixed, auto):
                body = await bus.call("device_status", {"device_id": n})
                assert lan_view(body) == before[n] and "last_rehome" not in body, body
                assert endpoints_of(docker_client, n) == endpoints[n]
            assert network_ids(docker_client, executor.instance) == ids

        # The parent moves: the automatic vNIC follows with its MAC; the static IP does
        # not fit and the policy is `detach`.
        bridge.change(lan.iface(new))
        body = await on_network(bus, auto, macvlan_name(lan.parent, new))
        network, ip, mac = lan_view(body)
        assert mac == before[auto][2] and ip.startswith(new.rsplit(".", 1)[0])
        assert body["last_rehome"]["outcome"] == "rehomed"
        assert body["last_rehome"]["from_network"] == macvlan_name(lan.parent, old)
        body = await on_network(bus, fixed, None)
        event = body["last_rehome"]
        assert event["outcome"] == "detached" and "not a host address" in event["note"]
        assert event["static_ip"] == host(old, 20)
        wait_for(lambda: lan.reach_https(ip), 30, "the LAN reaching the moved runtime")
        assert lan.neighbour_mac(ip) == before[auto][2]
        assert macvlan_name(lan.parent, old) not in network_ids(docker_client)
        (stored,) = stored_vnics(executor.state_dir, fixed)
        assert stored["network"] is None and "left disconnected" in stored["detached"]
        assert stored["ip_address"] == host(old, 20)
        (stored,) = stored_vnics(executor.state_dir, auto)
        assert stored["network"] == network and stored["parent_subnet"] == new

        # And back: the static IP fits again and is restored.
        bridge.change(lan.iface(old))
        body = await on_network(bus, fixed, macvlan_name(lan.parent, old))
        assert lan_view(body) == before[fixed]
        assert body["last_rehome"]["outcome"] == "reattached"
        assert [e["outcome"] for e in body["network_events"]] == ["detached", "reattached"]
        body = await on_network(bus, auto, macvlan_name(lan.parent, old))
        assert lan_view(body)[2] == before[auto][2]
        wait_for(lambda: lan.reach_https(host(old, 20)), 30, "the LAN reaching the static IP")
        assert lan.neighbour_mac(host(old, 20)) == before[fixed][2]
        assert macvlan_name(lan.parent, new) not in network_ids(docker_client)
        for n in (fixed, auto):
            assert started_at(docker_client, n) == starts[n], "never restarted"
            assert (await bus.call("device_status", {"device_id": n}))["restart_count"] == 0
    finally:
        beats.close()
        bus.close()


async def test_killed_in_the_middle_of_a_move(
        make_executor: Callable[..., ExecutorProc], zctx: zmq.asyncio.Context,
        moving_lans: Callable[[], MovingLan], blocks: Callable[[int], list[str]],
        bridge_for: Callable[[ExecutorProc], FakeBridge],
        docker_client: docker.DockerClient) -> None:
    old, new = blocks(2)
    lan = moving_lans()
    lan.lan_side(new)
    executor = make_executor(OAT_PAUSE_AT="rehome_old_removed")
    bridge = bridge_for(executor)
    bridge.table[lan.parent] = lan.iface(old)
    executor.start()
    bus = executor.client(zctx)
    try:
        await wait_ready(bus)
        name = f"oat-plc-{short_id()}"
        await create_ok(bus, name, [dhcp(lan)])
        _, _, mac = lan_view(await on_network(bus, name, macvlan_name(lan.parent, old)))
        start = started_at(docker_client, name)

        bridge.change(lan.iface(new))
        wait_for(lambda: macvlan_name(lan.parent, old) not in network_ids(docker_client), 20,
             "the old network removed")
        wait_for(lambda: journal(executor, name).get("operation") == "rehome", 10,
             "the move journalled")
        body = await wait_status(bus, name, lambda b: b.get("networks") == {}, 10)
        assert body["rehoming"]["step"] == "disconnecting", body
        executor.kill()
        entry = journal(executor, name)
        assert entry["state"] == "in_progress"
        assert entry["request"]["target"]["subnet"] == new

        executor.start(OAT_PAUSE_AT="")
        await wait_ready(bus)
        body = await on_network(bus, name, macvlan_name(lan.parent, new))
        network, ip, got_mac = lan_view(body)
        assert got_mac == mac and body["last_rehome"]["outcome"] == "rehomed"
        wait_for(lambda: journal(executor, name).get("state") == "success", 10, "journal done")
        assert started_at(docker_client, name) == start
        wait_for(lambda: lan.reach_https(ip), 30, "the LAN reaching the runtime")
        assert lan.neighbour_mac(ip) == mac
        assert stored_vnics(executor.state_dir, name)[0]["network"] == network
    finally:
        bus.close()


async def test_reconciled_at_start(
        make_executor: Callable[..., ExecutorProc], zctx: zmq.asyncio.Context,
        moving_lans: Callable[[], MovingLan], blocks: Callable[[int], list[str]],
        bridge_for: Callable[[ExecutorProc], FakeBridge],
        docker_client: docker.DockerClient) -> None:
    old, new = blocks(2)
    lan = moving_lans()
    lan.lan_side(new)
    executor = make_executor()
    bridge = bridge_for(executor)
    bridge.table[lan.parent] = lan.iface(old)
    executor.start()
    bus = executor.client(zctx)
    try:
        await wait_ready(bus)
        name = f"oat-plc-{short_id()}"
        await create_ok(bus, name, [manual(lan, old, 20)])
        _, _, mac = lan_view(await on_network(bus, name, macvlan_name(lan.parent, old)))
        # The executor is away while the host moves; it finds out from the snapshot.
        executor.stop()
        bridge.table[lan.parent] = lan.iface(new)
        executor.start()
        await wait_ready(bus)
        body = await on_network(bus, name, macvlan_name(lan.parent, new))
        _, ip, got_mac = lan_view(body)
        assert got_mac == mac and ip != host(old, 20)
        event = body["last_rehome"]
        assert event["outcome"] == "rehomed_new_ip" and "engine assigned" in event["note"]
        wait_for(lambda: lan.reach_https(ip), 30, "the LAN reaching the runtime")
        assert lan.neighbour_mac(ip) == mac
        # A restart re-creates the interface: the MAC is still the runtime's own (older
        # engines set it only on the network the container was created with, long gone).
        result = await bus.call("restart_device", {"device_id": name}, timeout=30)
        assert result["success"] is True, result
        subprocess.run(["ip", "-n", lan.ns, "neigh", "flush", "all"], check=True)
        wait_for(lambda: lan.reach_https(ip), 30, "the LAN reaching the restarted runtime")
        assert lan.neighbour_mac(ip) == mac
        body = await bus.call("device_status", {"device_id": name})
        assert lan_view(body) == (macvlan_name(lan.parent, new), ip, mac)
    finally:
        bus.close()
