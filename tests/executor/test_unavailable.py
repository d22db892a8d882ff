"""The engine unavailable (socket missing, connections dropped): every command answers a
clear `docker_unavailable` error in time (`device_status` the original's error body); the
executor reconnects and resyncs when the engine is back.  The machine's dockerd is never
stopped: the executor talks to it through a forwarder socket the test cuts and restores."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import zmq.asyncio

from common.bus import RpcClient, RpcError
from testkit.executor import (
    STANDIN_TAG,
    ExecutorProc,
    Lan,
    create_ok,
    manual_vnic,
    short_id,
    wait_ready,
    wait_status,
)
from testkit.helpers import async_wait_for
from tests.executor.forwarder import Forwarder

pytestmark = [pytest.mark.docker]

ANSWER_WITHIN = 3.0


@pytest.fixture
def forwarder(tmp_path: Path) -> Iterator[Forwarder]:
    fwd = Forwarder(tmp_path / "engine.sock")
    yield fwd
    fwd.cut()


def commands(device: str) -> list[tuple[str, dict[str, object]]]:
    return [
        ("create_runtime", {"container_name": device, "vnic_configs": [],
                            "runtime_version": STANDIN_TAG}),
        ("device_status", {"device_id": device}),
        ("start_device", {"device_id": device}),
        ("stop_device", {"device_id": device}),
        ("restart_device", {"device_id": device}),
        ("delete_device", {"device_id": device}),
        ("run_command", {"device_id": device, "method": "GET", "api": "/api/version"}),
        ("delete_orchestrator", {}),
    ]


async def assert_all_unavailable(bus: RpcClient, device: str) -> None:
    for method, params in commands(device):
        started = time.monotonic()
        if method == "device_status":
            # The original's answer: an error body that keeps device_id.
            body = await bus.call(method, params, timeout=ANSWER_WITHIN + 2)
            assert time.monotonic() - started < ANSWER_WITHIN
            assert body["status"] == "error" and body["device_id"] == device, body
            # The original's shape; the reason says plainly what is wrong.
            assert body["error"].startswith(
                "Failed to retrieve container status: Docker unavailable: "), body
            assert set(body) == {"status", "device_id", "error"}, body
            continue
        with pytest.raises(RpcError) as info:
            await bus.call(method, params, timeout=ANSWER_WITHIN + 2)
        elapsed = time.monotonic() - started
        assert info.value.kind == "docker_unavailable", (method, info.value)
        assert info.value.message.startswith("Docker unavailable: "), info.value.message
        assert elapsed < ANSWER_WITHIN, (method, elapsed)


async def ping(bus: RpcClient) -> None:
    async def up() -> bool:
        try:
            await bus.call("ping", {}, timeout=1)
            return True
        except Exception:
            return False
    await async_wait_for(up, 15, interval=0.1, what="executor on the bus")


async def test_engine_missing_at_start_then_appearing(
        make_executor: Callable[..., ExecutorProc], forwarder: Forwarder,
        zctx: zmq.asyncio.Context) -> None:
    executor = make_executor(ORCH_DOCKER_HOST=forwarder.url).start()
    bus = executor.client(zctx)
    await ping(bus)
    await assert_all_unavailable(bus, f"oat-plc-{short_id()}")
    forwarder.start()
    await wait_ready(bus, timeout=15)
    body = await bus.call("device_status", {"device_id": "oat-nothing"})
    assert body["status"] == "not_found"
    assert "connected to the Docker engine" in executor.output()
    bus.close()


async def test_engine_lost_and_back_with_a_runtime(
        make_executor: Callable[..., ExecutorProc], forwarder: Forwarder,
        zctx: zmq.asyncio.Context, lans: Callable[[], Lan],
        docker_client: docker.DockerClient) -> None:
    forwarder.start()
    executor = make_executor(ORCH_DOCKER_HOST=forwarder.url).start()
    bus = executor.client(zctx)
    await wait_ready(bus)
    lan = lans()
    name = f"oat-plc-{short_id()}"
    await create_ok(bus, name, [manual_vnic(lan, 26)])

    forwarder.cut()
    await assert_all_unavailable(bus, name)
    # The world changes while the executor cannot see it.
    docker_client.containers.get(name).stop(timeout=3)
    forwarder.start()
    await wait_ready(bus, timeout=15)
    body = await wait_status(bus, name, lambda b: b.get("is_running") is False, timeout=15)
    assert body["status"] == "success" and body["container_status"] == "exited"
    started = await bus.call("start_device", {"device_id": name})
    assert started["success"] is True and started["container_status"] == "running"
    bus.close()
