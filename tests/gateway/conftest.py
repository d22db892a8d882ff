"""The gateway in this process, on real sockets: a real development cloud over mTLS on
loopback, the real bus (ipc in a private directory), and stand-in peer processes that
serve chosen methods on their real request sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import zmq.asyncio

from common import wire
from common.bus import Counters, Endpoints, Publisher, RpcServer
from common.config import Config
from common.messages import Alive, HostMetrics
from common.service import Runtime, serve
from devcloud.enroll import Credentials
from devcloud.server import DevCloud
from services.gateway.service import PEERS, GatewayService
from testkit.helpers import async_wait_for

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class Peer:
    """A stand-in for one agent process: its PUB and request sockets, liveness beats, and
    whatever methods a test registers.  Calls are counted per method."""

    def __init__(self, ctx: zmq.asyncio.Context, run_dir: Path, name: str,
                 beat_interval: float = 0.2) -> None:
        self.name = name
        endpoints = Endpoints(run_dir)
        self.counters = Counters()
        self.stamper = wire.Stamper(name)
        self.publisher = Publisher(ctx, endpoints.pub(name), self.stamper, self.counters)
        self.rpc = RpcServer(ctx, endpoints.rpc(name), self.stamper, self.publisher,
                             self.counters)
        self.calls: Counters = Counters()
        self.stop = asyncio.Event()
        self.beat_interval = beat_interval
        self._tasks: list[asyncio.Task[None]] = []

    def serve(self, method: str, handler: Handler) -> None:
        async def counted(params: dict[str, Any]) -> Any:
            self.calls[method] += 1
            return await handler(params)
        self.rpc.register(method, counted)

    async def _beat(self) -> None:
        while not self.stop.is_set():
            self.publisher.publish(Alive(self.name, os.getpid(), 1.0, "test", {}))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.beat_interval)

    def start(self, beats: bool = True) -> Peer:
        self._tasks.append(asyncio.create_task(self.rpc.serve(self.stop)))
        if beats:
            self._tasks.append(asyncio.create_task(self._beat()))
        return self

    def publish_sample(self, **overrides: Any) -> HostMetrics:
        sample = HostMetrics(cpu_usage=12.5, memory_usage=2.5, memory_total=16.0,
                             disk_usage=45.8, disk_total=500.0, uptime=86400,
                             timestamp="2025-11-20T20:30:45.123456", sampled_at=time.time())
        sample = replace(sample, **overrides)
        self.publisher.publish(sample)
        return sample

    async def close(self) -> None:
        self.stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.rpc.close()
        self.publisher.close()


class InProcessGateway:
    """`GatewayService` run by the service runner's own `serve`, in the test's loop: the
    same bus wiring, ping, beats and shutdown as the process.  The runtime and the
    service are the ones `serve` made, caught through the factory it calls."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.task: asyncio.Task[int] | None = None
        self._made: tuple[Runtime, GatewayService] | None = None

    def _factory(self, runtime: Runtime) -> GatewayService:
        service = GatewayService(runtime)
        self._made = (runtime, service)
        return service

    async def start(self) -> InProcessGateway:
        self.task = asyncio.create_task(serve("gateway", self.config, self._factory, PEERS))
        await self.wait(lambda: self._made is not None, 10, "the gateway to start")
        return self

    @property
    def runtime(self) -> Runtime:
        assert self._made is not None, "the gateway has not started"
        return self._made[0]

    @property
    def service(self) -> GatewayService:
        assert self._made is not None, "the gateway has not started"
        return self._made[1]

    @property
    def ctx(self) -> zmq.asyncio.Context:
        return self.runtime.ctx

    @property
    def counters(self) -> Counters:
        return self.runtime.counters

    @property
    def status(self) -> Any:
        return self.service.link.status

    async def wait(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """`async_wait_for`, failing at once when the gateway stops meanwhile."""
        def alive_and() -> Any:
            assert self.task is not None and not self.task.done(), "the gateway stopped"
            return condition()
        return await async_wait_for(alive_and, timeout, what, interval=0.02)

    async def stop(self) -> int:
        if self.task is None:
            return 0
        if self._made is not None:
            self.runtime.stop.set()
        return await asyncio.wait_for(self.task, 15)


@dataclass
class Env:
    base: Path
    cloud: DevCloud
    creds: Credentials

    def config(self, **overrides: Any) -> Config:
        values: dict[str, Any] = {
            "cloud_url": self.cloud.url, "mtls_dir": self.creds.directory,
            "ca_file": self.creds.ca_path, "state_dir": self.base / "state",
            "run_dir": self.base / "run", "heartbeat_interval": 0.5, "beat_interval": 0.2,
            "rpc_timeout": 1.0, "reconnect_max": 0.5, "metrics_interval": 0.5,
        }
        values.update(overrides)
        return Config(**values)


@pytest.fixture
async def env(base_dir: Path) -> AsyncIterator[Env]:
    async with DevCloud(base_dir / "cloud", port=0, admin_port=0, provision_port=0) as cloud:
        creds = cloud.issue_credentials(base_dir / "mtls")
        yield Env(base_dir, cloud, creds)


@contextlib.asynccontextmanager
async def running_gateway(config: Config) -> AsyncIterator[InProcessGateway]:
    gateway = await InProcessGateway(config).start()
    try:
        yield gateway
    finally:
        await gateway.stop()


@contextlib.asynccontextmanager
async def peers(ctx: zmq.asyncio.Context, run_dir: Path,
                *names: str) -> AsyncIterator[dict[str, Peer]]:
    made = {name: Peer(ctx, run_dir, name) for name in names}
    try:
        yield made
    finally:
        for peer in made.values():
            await peer.close()


def creating_reply(params: dict[str, Any]) -> dict[str, Any]:
    """What the executor answers to create_runtime once the creation is under way."""
    name = params["container_name"]
    return {"status": "creating", "container_id": name,
            "message": f"Container creation started for {name}"}


async def connected(env: Env, gateway: InProcessGateway) -> None:
    """The cloud sees the agent and the gateway's link is up."""
    assert await env.cloud.wait_connected(env.creds.agent_id, 10)
    await gateway.wait(lambda: gateway.status.connected, 5, "the link")
