"""The whole agent suite under supervisord, linked over real mTLS to a development cloud.

The cloud runs in a thread of the test process with its own event loop, so plain
(synchronous) tests — hypothesis included — drive it with `agent.send(...)`, and it can be
stopped and started again on the same port while the agent keeps running.  The agent
enrols through the cloud's provisioning endpoints, as the installer does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq
import zmq.asyncio

from common import wire
from common.bus import Endpoints, RpcClient
from devcloud.enroll import Credentials
from devcloud.hub import AckRecord
from devcloud.server import DevCloud
from testkit.helpers import short_tmpdir, wait_for
from testkit.suite import Suite
from testkit.zmqctx import SyncTrackingContext, TrackingContext, finish

T = TypeVar("T")

RPC_TIMEOUT = 2.0
RECONNECT_MAX = 2.0
SUITE_ENV = {
    "ORCH_RPC_TIMEOUT": str(RPC_TIMEOUT),
    "ORCH_RECONNECT_MAX": str(RECONNECT_MAX),
    "ORCH_METRICS_INTERVAL": "1",
    "ORCH_BEAT_INTERVAL": "0.5",
    # heartbeat_interval stays at its default (5 s): its rhythm is tested for real.
}


class CloudThread:
    """A development cloud on its own event loop in a daemon thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="devcloud",
                                       daemon=True)
        self.thread.start()
        self.cloud: DevCloud | None = None
        self.port = 0

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def start(self) -> DevCloud:
        cloud = DevCloud(self.directory, port=self.port, admin_port=0, provision_port=0,
                         command_timeout=15)
        self.call(cloud.start())
        self.cloud, self.port = cloud, cloud.port
        return cloud

    def stop(self) -> None:
        if self.cloud is not None:
            self.call(self.cloud.stop())
            self.cloud = None

    @staticmethod
    async def _cancel_leftovers() -> None:
        # Engine.IO leaves ping tasks of closed sockets to run out on their own.
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        try:
            self.stop()
            self.call(self._cancel_leftovers())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


class Traces:
    """`rpc.<server>.<method>` traces of the agent's processes, as the tap sees them."""

    def __init__(self, run_dir: Path, servers: tuple[str, ...]) -> None:
        self.ctx = SyncTrackingContext()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        for server in servers:
            self.sock.setsockopt(zmq.SUBSCRIBE, f"rpc.{server}.".encode())
            self.sock.connect(Endpoints(run_dir).pub(server))
        self.seen: list[dict[str, Any]] = []

    def until(self, predicate: Any, timeout: float) -> list[dict[str, Any]]:
        """Collect traces until one satisfies `predicate`; return those collected."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.sock.poll(remaining * 1000):
                raise AssertionError(f"no matching trace within {timeout} s; got {got}")
            envelope = wire.decode(self.sock.recv_multipart())
            got.append(envelope.body)
            self.seen.append(envelope.body)
            if predicate(envelope.body):
                return got

    def close(self) -> None:
        self.sock.close(0)
        finish(self.ctx)


@dataclass
class Agent:
    base: Path
    clouds: CloudThread
    creds: Credentials
    suite: Suite
    traces: Traces
    stamp: int = field(default=9_000_000_000_000)

    @property
    def cloud(self) -> DevCloud:
        assert self.clouds.cloud is not None, "the cloud is stopped"
        return self.clouds.cloud

    @property
    def id(self) -> str:
        return self.creds.agent_id

    def next_cid(self) -> int:
        self.stamp += 1
        return self.stamp

    def send(self, topic: str, payload: Any, timeout: float = 15) -> AckRecord:
        return self.clouds.call(self.cloud.send_record(self.id, topic, payload, timeout=timeout,
                                                       stamp=False), timeout + 5)

    def bus_call(self, server: str, method: str, timeout: float = 5) -> Any:
        async def call() -> Any:
            ctx = TrackingContext()
            client = RpcClient(ctx, Endpoints(self.base / "run").rpc(server),
                               wire.Stamper("e2e-test"), timeout)
            try:
                return await client.call(method, {})
            finally:
                client.close()
                finish(ctx)
        return self.clouds.call(call())

    def sentinel(self, server: str, timeout: float = 10) -> list[dict[str, Any]]:
        """Every trace of `server` published before a `ping` the test sends now."""
        self.bus_call(server, "ping")
        traces = self.traces.until(
            lambda t: t["server"] == server and t["method"] == "ping"
            and t["caller"] == "e2e-test", timeout)
        return [t for t in traces[:-1] if t["server"] == server]

    def wait_connected(self, timeout: float = 15) -> None:
        assert self.clouds.call(self.cloud.wait_connected(self.id, timeout), timeout + 5), \
            f"agent not connected; suite output:\n{self.suite.output()[-3000:]}"


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    with short_tmpdir() as base:
        (base / "state").mkdir()
        clouds = CloudThread(base / "cloud")
        suite: Suite | None = None
        traces: Traces | None = None
        try:
            cloud = clouds.start()
            creds = clouds.call(cloud.enroll(base / "mtls"))
            # The executor is real but kept off this machine's Docker engine: these tests
            # are about the link, and Docker work has its own tests that clean up.
            suite = Suite(base, ORCH_CLOUD_URL=cloud.url, ORCH_MTLS_DIR=str(creds.directory),
                          ORCH_CA_FILE=str(creds.ca_path),
                          ORCH_DOCKER_HOST=f"unix://{base}/no-docker.sock", **SUITE_ENV)
            traces = Traces(base / "run", ("executor", "metrics"))
            suite.start()
            suite.wait_running()
            agent = Agent(base, clouds, creds, suite, traces)
            agent.wait_connected(20)
            # The trace subscription is live once a trace of our own comes through.
            wait_for(lambda: _try_sentinel(agent), 10, interval=0.2, what="trace subscription")
            yield agent
        finally:
            if suite is not None:
                suite.stop()
            if traces is not None:
                traces.close()
            clouds.close()


def _try_sentinel(agent: Agent) -> bool:
    try:
        agent.sentinel("executor", timeout=1)
        agent.sentinel("metrics", timeout=1)
    except AssertionError:
        return False
    return True
