"""The fault suite's agent: the real suite under supervisord, the netmon sidecar as a
process, the development cloud on the test's loop, the real engine, three stand-in
runtimes on a test LAN — and a steady stream of cloud commands to run faults under.

Scaled for CI: a few runtimes, a few commands per second, one churn runtime created and
deleted over and over.  Each test gets a fresh agent (a fault must not leak into the
next test); everything is removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import pytest
import zmq.asyncio

from common.bus import Endpoints, Subscriber
from testkit import faults
from testkit.cloudagent import CloudAgent, cloud_agent, metrics_history_readable, settled_problems
from testkit.stream import Ledger, Sender, churn, read_stream, settle

RPC_TIMEOUT = 3.0
# What an ack may take when nothing had to be resent: the owning process's deadline,
# plus the gateway's own work and a loaded CI machine.
ACK_BUDGET = RPC_TIMEOUT + 3.0
FAULT_ENV = {"ORCH_RPC_TIMEOUT": str(RPC_TIMEOUT), "ORCH_RECONNECT_MAX": "2",
             "ORCH_METRICS_INTERVAL": "1", "ORCH_BEAT_INTERVAL": "0.5"}
RUNTIMES = 3
STATE_CHANGES = ("create_runtime", "delete_device")

# The marks of a module whose tests stop the machine's one engine: they run only when
# asked for (a machine where nothing else uses the engine, e.g. CI), and the engine is
# started again after each test whatever happened.
STOPS_THE_ENGINE = [
    pytest.mark.skipif(os.environ.get("OAT_ENGINE_FAULTS") != "1",
                       reason="stops the machine's Docker engine: set OAT_ENGINE_FAULTS=1"),
    pytest.mark.usefixtures("engine_restored"),
]


@dataclass
class Faulty:
    agent: CloudAgent
    sender: Sender
    devices: list[str]
    churn_device: str
    traces: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ledger(self) -> Ledger:
        return self.sender.ledger

    async def under_stream(self, faults: list[Callable[[], Awaitable[Any]]],
                           rate: float = 4.0, between: float = 4.0,
                           with_churn: bool = True) -> None:
        """Reads at `rate`/s and create/delete churn, with `faults` one after the other,
        `between` seconds apart; returns once the stream has settled."""
        stop = asyncio.Event()
        vnic = self.agent.vnic(0, 11 + RUNTIMES)
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(read_stream(self.sender, self.devices, rate, stop))]
        if with_churn:
            tasks.append(asyncio.create_task(churn(self.sender, self.churn_device, vnic, stop,
                                                   "test", pause=1.0)))
        try:
            await asyncio.sleep(between)
            for fault in faults:
                await fault()
                await asyncio.sleep(between)
        finally:
            stop.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def check_acks(self, resends_allowed: bool = False) -> None:
        """Every command acked, each attempt that was answered in time; resends only
        where the gateway died with commands in flight."""
        ledger = self.ledger
        assert ledger.lost == [], ledger.summary()
        assert ledger.acked == ledger.sent > 20, ledger.summary()
        assert ledger.slowest_first_try < ACK_BUDGET, ledger.summary()
        if not resends_allowed:
            assert ledger.resends == 0, ledger.summary()

    async def check_settled(self) -> None:
        """Nothing half-created, state files and history readable, runtimes running."""
        for device in self.devices:
            state = await settle(self.sender, device, 60)
            assert state["status"] == "success", state
        await settle(self.sender, self.churn_device, 60)
        problems = await asyncio.to_thread(settled_problems, self.agent)
        assert problems == [], problems
        assert metrics_history_readable(self.agent.state_dir)

    def executions(self) -> int:
        """Create and delete calls the executor served for the gateway."""
        return sum(1 for t in self.traces if t.get("caller") == "gateway"
                   and t.get("method") in STATE_CHANGES)


async def collect_traces(run_dir: Any, into: list[dict[str, Any]], stop: asyncio.Event) -> None:
    ctx = zmq.asyncio.Context()
    sub = Subscriber(ctx, [Endpoints(run_dir).pub("executor")], ["rpc.executor."])
    try:
        while not stop.is_set():
            envelope = await sub.recv(0.5)
            if envelope is not None:
                into.append(envelope.body)
    finally:
        sub.close()
        ctx.destroy(linger=0)


async def create_runtimes(agent: CloudAgent, sender: Sender, names: list[str]) -> None:
    for i, name in enumerate(names):
        ack = await sender.send("create_new_runtime", {
            "container_name": name, "vnic_configs": [agent.vnic(0, 11 + i)],
            "runtime_version": "test"})
        assert ack is not None and ack.get("status") == "creating", ack
    for name in names:
        state = await settle(sender, name, 90)
        assert state["status"] == "success", state


@contextlib.asynccontextmanager
async def faulty_agent(state_size: str = "", **env: str) -> AsyncIterator[Faulty]:
    async with cloud_agent(1, state_size=state_size, **{**FAULT_ENV, **env}) as agent:
        tag = agent.lans[0].parent
        sender = Sender(agent.cloud, agent.id, ack_timeout=20, deadline=90)
        names = [f"{tag}-plc{i}" for i in range(RUNTIMES)]
        await create_runtimes(agent, sender, names)
        sender.ledger.acks.clear()  # state changes are counted from here, as traces are
        faulty = Faulty(agent, sender, names, f"{tag}-churn")
        stop = asyncio.Event()
        collector = asyncio.create_task(collect_traces(agent.base / "run", faulty.traces, stop))
        try:
            await asyncio.sleep(0.5)  # the subscription is live
            yield faulty
        finally:
            stop.set()
            await collector


@pytest.fixture
async def faulty(docker_client: docker.DockerClient, standin_image: str
                 ) -> AsyncIterator[Faulty]:
    async with faulty_agent() as f:
        yield f


@pytest.fixture
def engine_restored() -> Iterator[None]:
    """The engine started again after the test, whatever happened (`STOPS_THE_ENGINE`)."""
    try:
        yield
    finally:
        faults.start_engine()
