"""Per-device consumption on the real engine: which containers are sampled, the reply
shape and limits, history across a restart, forgetting removed devices, and answers
while the engine is away.

Runtimes are stand-in containers labelled exactly as the executor labels its runtimes
(`common.labels.runtime`), on a private test bridge; the metrics process runs
for real with a short interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import zmq.asyncio

from common import adopted, labels, wire
from common.bus import Endpoints, RpcClient, RpcError, Subscriber
from common.messages import Alive
from services.metrics.cgroups import locate
from services.metrics.devices import RESYNC_CYCLES
from services.metrics.service import HISTORY_FILE
from testkit import dockerenv
from testkit.helpers import agent_env, async_wait_for, short_tmpdir, start_module, stop_process

pytestmark = [pytest.mark.docker]

INTERVAL = "0.5"
# Ten minutes of 0.5 s samples fit in 2880 points: every sample is a point of its own.
PERIODS = {"cpuPeriod": "10m", "memoryPeriod": "10m", "max_points": 2880}


@dataclass
class Stand:
    """The containers of one test module: two runtimes of `instance`, one stranger."""

    instance: str
    network: str
    plain: str  # managed, no limits
    limited: str  # managed, 64 MB and half a CPU
    stranger: str  # carries our labels but another instance id
    unmanaged: str  # no agent labels at all


def _run(dc: docker.DockerClient, image: str, network: str, name: str,
         extra_labels: dict[str, str], **kwargs: Any) -> None:
    dc.containers.run(image, detach=True, name=name, network=network,
                      labels={**dockerenv.TEST_LABELS, **extra_labels}, **kwargs)


def runtime_labels(instance: str, name: str) -> dict[str, str]:
    return labels.runtime(instance, name, [], "test-op")


@pytest.fixture(scope="module")
def stand(docker_client: docker.DockerClient, standin_image: str) -> Iterator[Stand]:
    tag = uuid.uuid4().hex[:6]
    net = dockerenv.create_test_bridge(docker_client, "oat-mt")
    s = Stand(dockerenv.test_instance("m"), net.name, f"oat-mp-{tag}", f"oat-ml-{tag}",
              f"oat-ms-{tag}", f"oat-mu-{tag}")
    try:
        _run(docker_client, standin_image, net.name, s.plain, runtime_labels(s.instance, s.plain))
        _run(docker_client, standin_image, net.name, s.limited,
             runtime_labels(s.instance, s.limited), mem_limit="64m", nano_cpus=500_000_000)
        _run(docker_client, standin_image, net.name, s.stranger,
             runtime_labels("another-agent", s.stranger))
        _run(docker_client, standin_image, net.name, s.unmanaged, {})
        yield s
    finally:
        for name in (s.plain, s.limited, s.stranger, s.unmanaged):
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.containers.get(name).remove(force=True, v=True)
        net.remove()


@dataclass
class Metrics:
    base: Path
    client: RpcClient
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self, **extra: str) -> Metrics:
        self.proc = start_module("services.metrics", {**self.env, **extra},
                                 self.base / "metrics.log")
        return self

    def stop(self) -> int:
        assert self.proc is not None
        code = stop_process(self.proc)
        self.proc = None
        return code

    async def device(self, device: str, **params: Any) -> dict[str, Any]:
        reply: dict[str, Any] = await self.client.call(
            "consumption_device", {"device_id": device, **PERIODS, **params}, timeout=5)
        return reply

    async def counters(self, ctx: zmq.asyncio.Context) -> dict[str, int]:
        """The counters of the next liveness beat."""
        sub = Subscriber(ctx, [Endpoints(self.base / "run").pub("metrics")], ["svc.metrics.alive"])
        try:
            envelope = await sub.recv(5)
            assert envelope is not None, "no liveness beat from metrics"
            return Alive.from_body(envelope.body).counters
        finally:
            sub.close()

    def stored_devices(self) -> set[str]:
        with contextlib.closing(sqlite3.connect(self.base / "state" / HISTORY_FILE)) as db:
            return {r[0] for r in db.execute("SELECT DISTINCT device_id FROM device_samples")}

    def stored_samples(self, device: str) -> list[float]:
        """The sample times the history file holds for `device`, read around the program."""
        with contextlib.closing(sqlite3.connect(self.base / "state" / HISTORY_FILE)) as db:
            return [r[0] for r in db.execute(
                "SELECT ts FROM device_samples WHERE device_id = ? ORDER BY ts", (device,))]


@pytest.fixture
async def make_metrics(zctx: zmq.asyncio.Context) -> AsyncIterator[Callable[..., Metrics]]:
    made: list[tuple[Metrics, contextlib.ExitStack]] = []

    def factory(instance: str, **env: str) -> Metrics:
        stack = contextlib.ExitStack()
        base = stack.enter_context(short_tmpdir("oatm"))
        (base / "state").mkdir()
        client = RpcClient(zctx, Endpoints(base / "run").rpc("metrics"), wire.Stamper("t"), 5)
        m = Metrics(base, client, agent_env(base, ORCH_METRICS_INTERVAL=INTERVAL,
                                            ORCH_BEAT_INTERVAL="0.5",
                                            ORCH_INSTANCE_ID=instance, **env))
        made.append((m, stack))
        return m

    yield factory
    for m, stack in made:
        if m.proc is not None:
            m.stop()
        # Shown by pytest only when the test failed.
        print((m.base / "metrics.log").read_text(errors="replace")[-4000:])
        m.client.close()
        stack.close()


async def samples_of(m: Metrics, device: str, n: int) -> dict[str, Any]:
    async def enough() -> dict[str, Any] | None:
        try:
            reply = await m.device(device)
        except RpcError:
            return None
        return reply if len(reply.get("cpu_usage", [])) >= n else None
    result: dict[str, Any] = await async_wait_for(enough, 20, interval=0.2,
                                                  what=f"{n} samples of {device}")
    return result


def check_shape(reply: dict[str, Any], device: str) -> None:
    assert set(reply) >= {"device_id", "memory", "cpu", "cpu_usage", "memory_usage"}
    assert reply["device_id"] == device
    assert reply["cpu_usage"] and reply["memory_usage"]
    for point in reply["cpu_usage"]:
        assert set(point) == {"timestamp", "cpu"}
        assert isinstance(point["timestamp"], int) and 0 <= point["cpu"] < 400
    for point in reply["memory_usage"]:
        assert set(point) == {"timestamp", "memory"}
        # A stand-in is a small Python server: a few MB, far below a GB.
        assert isinstance(point["memory"], int) and 1 <= point["memory"] < 1024


@pytest.mark.parametrize("source", ["auto", "api"])
async def test_managed_runtimes_only_with_limits(stand: Stand, make_metrics: Callable[..., Metrics],
                                                 docker_client: docker.DockerClient,
                                                 zctx: zmq.asyncio.Context, source: str) -> None:
    m = make_metrics(stand.instance, ORCH_CONTAINER_STATS=source).start()
    plain = await samples_of(m, stand.plain, 3)
    limited = await samples_of(m, stand.limited, 3)
    check_shape(plain, stand.plain)
    check_shape(limited, stand.limited)
    assert (plain["memory"], plain["cpu"]) == ("unlimited", "unlimited")
    assert (limited["memory"], limited["cpu"]) == ("64 MB", "0.5 vCPU")
    assert "stale" not in plain
    # Containers that are not this agent's runtimes are never sampled nor answered for.
    assert m.stored_devices() == {stand.plain, stand.limited}
    for other in (stand.stranger, stand.unmanaged, "no-such-device"):
        assert await m.device(other) == {"status": "error", "error": f"Device {other} not found",
                                          "device_id": other}
    # A window before any sample is empty; bucketing bounds the number of points.
    old = await m.device(stand.plain, cpuPeriod="1000,2000")
    assert old["cpu_usage"] == [] and len(old["memory_usage"]) >= 3
    few = await m.device(stand.plain, max_points=1)
    assert len(few["cpu_usage"]) == 1
    # The source actually used: cgroup files where this test can see them, else streams.
    cid = docker_client.containers.get(stand.plain).id
    visible = locate(Path("/sys/fs/cgroup"), cid) is not None
    expect = "cgroup" if source == "auto" and visible else "stream"
    counters = await m.counters(zctx)
    assert counters.get(f"device_samples_{expect}", 0) >= 6, counters
    assert counters.get("device_samples", 0) == counters[f"device_samples_{expect}"]
    assert m.stop() == 0


async def test_history_survives_restart_and_removed_device_is_forgotten(
        stand: Stand, make_metrics: Callable[..., Metrics], docker_client: docker.DockerClient,
        standin_image: str) -> None:
    name = f"oat-mr-{uuid.uuid4().hex[:6]}"
    _run(docker_client, standin_image, stand.network, name, runtime_labels(stand.instance, name),
         mem_limit="48m")
    try:
        m = make_metrics(stand.instance).start()
        before = await samples_of(m, name, 3)
        assert m.stop() == 0
        m.start()
        # The first answer after the restart already holds every sample taken before it.
        after = await samples_of(m, name, 1)
        assert after["cpu_usage"][: len(before["cpu_usage"])] == before["cpu_usage"]
        assert after["memory"] == "48 MB"
        docker_client.containers.get(name).remove(force=True, v=True)

        async def forgotten() -> bool:
            reply = await m.device(name)
            return reply.get("status") == "error" and name not in m.stored_devices()
        await async_wait_for(forgotten, 15, interval=0.2, what=f"{name} to be forgotten")
        # The other devices keep their history.
        assert m.stored_devices() >= {stand.plain, stand.limited}
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(name).remove(force=True, v=True)


async def test_engine_away_history_or_clear_error(stand: Stand,
                                                  make_metrics: Callable[..., Metrics]) -> None:
    m = make_metrics(stand.instance).start()
    before = await samples_of(m, stand.limited, 2)
    assert m.stop() == 0
    # The same state directory, an engine socket that does not exist.
    m.start(ORCH_DOCKER_HOST=f"unix://{m.base}/no-engine.sock")
    stale = await m.device(stand.limited)
    assert stale["stale"] is True
    assert (stale["memory"], stale["cpu"]) == ("64 MB", "0.5 vCPU")  # the last limits seen
    # The history kept every sample answered before the stop.  The series themselves are
    # not compared point by point: buckets are counted back from the moment of asking,
    # so two samples less than one interval apart (sampling jitter at 0.5 s) can share
    # a bucket in one answer and not in the other.
    stored = m.stored_samples(stand.limited)
    assert len(stored) >= len(before["cpu_usage"]), (stored, before)
    assert int(stored[-1]) >= before["cpu_usage"][-1]["timestamp"], (stored, before)
    assert stale["cpu_usage"][0]["timestamp"] <= before["cpu_usage"][0]["timestamp"]
    with pytest.raises(RpcError) as info:
        await m.device(stand.plain + "-never-seen")
    assert info.value.kind == "docker_unavailable"
    assert "Docker unavailable" in info.value.message
    # The host samples go on without the engine.
    assert set(await m.client.call("host_sample", timeout=5)) >= {"cpu_usage", "memory_usage"}


async def test_runtimes_adopted_from_the_original_are_sampled(
        stand: Stand, make_metrics: Callable[..., Metrics],
        docker_client: docker.DockerClient) -> None:
    """A container without labels counts once the executor's `adopted.json` names it (a
    runtime taken over from the original agent); until then it does not."""
    m = make_metrics(stand.instance)
    cid = docker_client.containers.get(stand.unmanaged).id
    m.start()
    await samples_of(m, stand.plain, 2)
    assert await m.device(stand.unmanaged) == {
        "status": "error", "error": f"Device {stand.unmanaged} not found",
        "device_id": stand.unmanaged}
    adopted.write(m.base / "state", {cid: stand.unmanaged})
    reply = await samples_of(m, stand.unmanaged, 2)
    check_shape(reply, stand.unmanaged)
    assert stand.unmanaged in m.stored_devices()
    assert stand.stranger not in m.stored_devices()
    assert m.stop() == 0


async def test_listing_follows_engine_events_and_restarts_keep_sampling(
        stand: Stand, make_metrics: Callable[..., Metrics], docker_client: docker.DockerClient,
        standin_image: str, zctx: zmq.asyncio.Context) -> None:
    """The container set is listed when the engine says it changed, not every cycle; a new
    runtime is still sampled, and a restarted one goes on being sampled (its cgroup files,
    kept open, are replaced by the new cgroup's)."""
    m = make_metrics(stand.instance).start()
    await samples_of(m, stand.plain, 2)
    first = await m.counters(zctx)
    await asyncio.sleep(RESYNC_CYCLES * float(INTERVAL) * 2)
    later = await m.counters(zctx)
    cycles = later["device_cycles"] - first["device_cycles"]
    listings = later["device_listings"] - first["device_listings"]
    assert cycles >= RESYNC_CYCLES, (first, later)
    # Nothing changed: the periodic resync only (an unrelated event may add one or two).
    assert listings <= cycles // RESYNC_CYCLES + 3, (cycles, listings)

    name = f"oat-me-{uuid.uuid4().hex[:6]}"
    _run(docker_client, standin_image, stand.network, name,
         runtime_labels(stand.instance, name))
    try:
        await samples_of(m, name, 2)
        container = docker_client.containers.get(name)
        container.restart(timeout=1)
        before = len((await m.device(name))["cpu_usage"])
        await samples_of(m, name, before + 3)
        assert name in m.stored_devices()
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(name).remove(force=True, v=True)
    assert m.stop() == 0
