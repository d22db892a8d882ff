"""The engine unreachable for 20 s without stopping the machine's engine: the suite's
executor and metrics talk to it through a forwarder socket the test cuts (socket gone,
every connection dropped) and restores, and meanwhile every runtime is stopped behind the
agent's back, as dockerd does on its way down.  The same checks as the real outage in
`test_zz_engine.py`, which needs a machine of its own: every command needing the engine
answered at once with "Docker unavailable", one ack each; afterwards every runtime
started again by the agent and its view right.  Safe beside other tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import docker
import pytest

from testkit.helpers import short_tmpdir
from tests.executor.forwarder import Forwarder
from tests.faults.conftest import ACK_BUDGET, Faulty, faulty_agent
from tests.faults.engine import Probe, all_running, check_probes, probe_while_away

pytestmark = [pytest.mark.docker, pytest.mark.netns]


@pytest.fixture
async def cut_faulty(docker_client: docker.DockerClient, standin_image: str
                     ) -> AsyncIterator[tuple[Faulty, Forwarder]]:
    with short_tmpdir() as path:
        forwarder = Forwarder(path / "engine.sock").start()
        try:
            async with faulty_agent(ORCH_DOCKER_HOST=forwarder.url) as f:
                yield f, forwarder
        finally:
            forwarder.cut()


async def test_engine_unreachable_for_20_s(cut_faulty: tuple[Faulty, Forwarder]) -> None:
    faulty, forwarder = cut_faulty
    device = faulty.devices[0]
    probes: list[Probe] = []

    def stop_runtimes() -> None:
        for name in faulty.devices:
            faulty.agent.dc.containers.get(name).stop(timeout=5)

    async def outage() -> None:
        forwarder.cut()
        gone = time.monotonic()
        try:
            await asyncio.to_thread(stop_runtimes)
            await probe_while_away(faulty, device, gone, probes)
        finally:
            forwarder.start()

    await faulty.under_stream([outage])
    check_probes(probes, device, ACK_BUDGET)
    faulty.check_acks()
    await all_running(faulty, 90)  # the boot sync after the reconnection started them
    for name in faulty.devices:
        body = await faulty.sender.send("get_device_status", {"device_id": name})
        # Stopped while the agent could not see it: not counted as the runtime's exit.
        assert body["lifecycle"]["exits"] == [], body
    await faulty.check_settled()
    states = await asyncio.to_thread(faulty.agent.suite.status)
    assert all(state == "RUNNING" for state, _ in states.values()), states
