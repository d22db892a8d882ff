"""Boot sync against the real engine: runtimes that should run are started only once the
network monitor has reported, and only after their networks followed the host."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import docker
import pytest
import zmq.asyncio

from common.messages import LifecycleBoot
from testkit.executor import ExecutorProc, create_ok, macvlan_name, short_id, wait_ready
from testkit.helpers import wait_for
from testkit.movinglan import MovingLan, host
from tests.executor.lifecycle_events import LifecycleEvents
from tests.rehome.fakebridge import FakeBridge
from tests.rehome.tools import lan_view, manual, on_network

pytestmark = [pytest.mark.docker, pytest.mark.netns, pytest.mark.timeout(180)]


def moment(text: str) -> dt.datetime:
    """An engine or journal timestamp (nanoseconds cut to microseconds)."""
    head, _, frac = text.rstrip("Z").partition(".")
    return dt.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}")


async def test_networks_rehomed_before_runtimes_start(
        make_executor: Callable[..., ExecutorProc], zctx: zmq.asyncio.Context,
        moving_lans: Callable[[], MovingLan], blocks: Callable[[int], list[str]],
        bridge_for: Callable[[ExecutorProc], FakeBridge],
        docker_client: docker.DockerClient) -> None:
    old, new = blocks(2)
    lan = moving_lans()
    lan.lan_side(old, new)
    executor = make_executor(ORCH_BOOT_NETMON_WAIT="40")
    bridge = bridge_for(executor)
    bridge.table[lan.parent] = lan.iface(old)
    executor.start()
    bus = executor.client(zctx)
    events: LifecycleEvents | None = None
    try:
        await wait_ready(bus)
        names = [f"oat-plc-{short_id()}" for _ in range(2)]
        for i, name in enumerate(names):
            await create_ok(bus, name, [manual(lan, old, 20 + i)])
            await on_network(bus, name, macvlan_name(lan.parent, old))

        # Power cut: the executor and the runtimes go down; the LAN moves meanwhile;
        # the network monitor is not up yet when the executor comes back.
        executor.stop()
        await bridge.close()
        for name in names:
            docker_client.api.stop(name, timeout=3)
        executor.start()
        await wait_ready(bus)
        events = LifecycleEvents(zctx, executor.run_dir)
        await events.listen(3)
        for name in names:  # waiting for the network monitor
            assert docker_client.api.inspect_container(name)["State"]["Running"] is False
        assert "lifecycle.boot" not in events.topics()

        bridge = bridge_for(executor)
        bridge.table[lan.parent] = lan.iface(new)

        def running() -> bool:
            bridge.discovery()  # lossy until the executor's subscription has joined
            return all(docker_client.api.inspect_container(n)["State"]["Running"]
                       for n in names)
        await asyncio.to_thread(wait_for, running, 40, "the runtimes started", interval=0.5)

        boot = await events.wait("lifecycle.boot")
        assert isinstance(boot, LifecycleBoot)
        assert (boot.reason, boot.runtimes, boot.started, boot.failed, boot.netmon) == \
            ("start", 2, 2, 0, "reported")
        assert boot.network_wait_seconds >= 2 and boot.seconds >= boot.network_wait_seconds
        for i, name in enumerate(names):
            body = await on_network(bus, name, macvlan_name(lan.parent, new))
            _, ip, _ = lan_view(body)
            assert ip != host(old, 20 + i) and body["last_rehome"]["outcome"] == "rehomed_new_ip"
            started = docker_client.api.inspect_container(name)["State"]["StartedAt"]
            # Moved while stopped, then started: the runtime never ran on the old subnet.
            assert moment(body["last_rehome"]["at"]) < moment(started), (body, started)
            assert body["lifecycle"]["state"] == "running"
            wait_for(lambda ip=ip: lan.reach_https(ip), 30, "the LAN reaching the runtime")
        assert "boot sync (start) done" in executor.output()
    finally:
        if events is not None:
            events.close()
        bus.close()
