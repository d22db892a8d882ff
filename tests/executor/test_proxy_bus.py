"""run_command through the executor's bus method to a managed stand-in runtime: hostile
header text refused by the executor itself, the production address limits, and kept-alive
connections that survive a runtime restart and re-creation."""

from __future__ import annotations

import base64
import contextlib
import uuid
from typing import Any

import docker
import docker.errors
import pytest
import zmq.asyncio

from common.bus import RpcClient
from common.config import Config
from services.executor.proxy.forward import internal_limits, proxy
from testkit import dockerenv
from testkit.executor import (
    ExecutorProc,
    create_ok,
    https_ok,
    short_id,
    wait_ready,
    wait_status,
)
from testkit.helpers import async_wait_for, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


def _cmd(device: str, method: str, api: str, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"device_id": device, "method": method, "api": api,
                              "port": 8443, "headers": {}, "params": {}, "data": None,
                              "files": {}}
    params.update(extra)
    return params


def _status(ack: dict[str, Any]) -> int:
    assert "http_response" in ack, ack
    return int(ack["http_response"]["status_code"])


async def _counts(bus: RpcClient, device: str) -> dict[str, int]:
    ack = await bus.call("run_command", _cmd(device, "GET", "/api/test/connections"))
    assert _status(ack) == 200, ack
    return dict(ack["http_response"]["body"])


async def test_hostile_header_text_is_refused_by_the_executor(
    bus: RpcClient, docker_client: docker.DockerClient
) -> None:
    name = f"oat-hdr-{short_id()}"
    body = await create_ok(bus, name, [])
    wait_for(lambda: https_ok(body["internal_ip"]), 20, "the runtime answering")
    marker = uuid.uuid4().hex
    api = f"/api/test/echo?marker={marker}"
    content = base64.b64encode(b"PK\x05\x06" + b"\0" * 18).decode()
    hostile: list[dict[str, Any]] = [
        {"files": {"file": {"filename": "p.zip", "content_base64": content,
                            "content_type": "application/zip\r\nX-Injected: yes"}}},
        {"files": {"file": {"filename": "p.zip\r\nX-Injected: yes",
                            "content_base64": content}}},
        {"files": {"fi\r\nle": {"filename": "p.zip", "content_base64": content}}},
        {"headers": {"X-Trace": "1\r\nX-Injected: yes"}},
        {"headers": {"X-Trace\r\nX-Injected": "yes"}},
    ]
    for extra in hostile:
        ack = await bus.call("run_command", _cmd(name, "POST", api, **extra))
        assert ack["status"] == "error" and _status(ack) == 400, (extra, ack)
        error = ack["http_response"]["body"]["error"]
        assert "control characters" in error or "not a valid token" in error, error
    # Nothing reached the runtime: a later request shows up in its log, the marker not.
    sentinel = uuid.uuid4().hex
    ack = await bus.call("run_command", _cmd(name, "GET", f"/api/test/echo?s={sentinel}"))
    assert _status(ack) == 200
    container = docker_client.containers.get(name)

    def log() -> str:
        return container.logs(stdout=True, stderr=True).decode(errors="replace")
    wait_for(lambda: sentinel in log(), 10, what="sentinel in the runtime's log")
    assert marker not in log()


async def _each_once(bus: RpcClient, docker_client: docker.DockerClient, name: str) -> None:
    """A POST, then GETs, all answered, each arriving once (a POST is never sent twice)."""
    markers = []
    for method in ("POST", "GET", "GET"):
        marker = uuid.uuid4().hex
        markers.append(marker)
        ack = await bus.call("run_command", _cmd(name, method, f"/api/test/echo?m={marker}"))
        assert _status(ack) == 200, ack
    container = docker_client.containers.get(name)

    def log() -> str:
        return container.logs(stdout=True, stderr=True).decode(errors="replace")
    wait_for(lambda: markers[-1] in log(), 10, what="the last request in the runtime's log")
    text = log()
    assert [text.count(marker) for marker in markers] == [1, 1, 1]


async def test_kept_connections_survive_a_runtime_restart_and_re_creation(
    bus: RpcClient, docker_client: docker.DockerClient,
) -> None:
    name = f"oat-keep-{short_id()}"
    body = await create_ok(bus, name, [])
    wait_for(lambda: https_ok(body["internal_ip"]), 20, "the runtime answering")
    before = await _counts(bus, name)
    for _ in range(10):
        assert _status(await bus.call("run_command", _cmd(name, "GET", "/api/version"))) == 200
    after = await _counts(bus, name)
    assert after["requests"] - before["requests"] == 11
    assert after["handshakes"] - before["handshakes"] <= 1, (before, after)

    # Restarted between calls: the kept connection is dead; no error reaches the caller.
    restarted = await bus.call("restart_device", {"device_id": name})
    assert restarted["success"] is True, restarted
    body = await wait_status(bus, name, lambda b: b.get("is_running") is True)
    wait_for(lambda: https_ok(body["internal_ip"]), 30, "the restarted runtime answering")
    await _each_once(bus, docker_client, name)

    # Re-created under the same name: another container, maybe the same address.
    deleted = await bus.call("delete_device", {"device_id": name})
    assert deleted["status"] == "deleting", deleted
    await wait_status(bus, name, lambda b: b.get("status") == "not_found")
    body = await create_ok(bus, name, [])
    wait_for(lambda: https_ok(body["internal_ip"]), 30, "the re-created runtime answering")
    await _each_once(bus, docker_client, name)


async def test_production_limits_keep_run_command_inside_the_internal_pool(
    executor: ExecutorProc, bus: RpcClient, zctx: zmq.asyncio.Context,
    docker_client: docker.DockerClient, standin_image: str,
) -> None:
    name = f"oat-pool-{short_id()}"
    body = await create_ok(bus, name, [])
    ip = body["internal_ip"]
    wait_for(lambda: https_ok(ip), 20, "the runtime answering")
    assert _status(await bus.call("run_command", _cmd(name, "GET", "/api/version"))) == 200

    # The limits the executor builds for this runtime, from its own configuration.
    pool = Config.load([], executor.env)[0].internal_pool
    internal = docker_client.api.inspect_network(f"{name}_internal")
    gateway = internal["IPAM"]["Config"][0].get("Gateway") or \
        docker_client.api.inspect_container(name)["NetworkSettings"]["Networks"][
            f"{name}_internal"]["Gateway"]
    limits = internal_limits(pool, gateway)
    assert _status(await proxy(ip, _cmd(name, "GET", "/api/version"), limits=limits)) == 200
    refused = await proxy(gateway, _cmd(name, "GET", "/api/version"), limits=limits)
    assert refused["status"] == "error" and "refused" in refused["error"], refused

    # A container the agent does not manage, on the same engine, answering HTTPS.
    bridge = dockerenv.create_test_bridge(docker_client, "oat-pool")
    other = None
    try:
        other = dockerenv.start_standin(docker_client, bridge.name, standin_image,
                                        {"STANDIN_DISCOVERY_PORT": "off"})
        assert _status(await proxy(other.ip, _cmd(name, "GET", "/api/version"))) == 200
        refused = await proxy(other.ip, _cmd(name, "GET", "/api/version"), limits=limits)
        assert refused["status"] == "error", refused
        assert "outside the internal networks" in refused["error"]
        assert "http_response" not in refused
    finally:
        if other is not None:
            with contextlib.suppress(docker.errors.NotFound):
                other.container.remove(force=True, v=True)
        with contextlib.suppress(docker.errors.NotFound):
            bridge.remove()

    # The executor itself applies them: configured with another pool, the same runtime's
    # address is outside it and run_command is refused before anything is sent.
    executor.stop()
    executor.start(ORCH_INTERNAL_POOL="172.29.0.0/16")
    client = executor.client(zctx)
    try:
        await wait_ready(client)

        async def answered() -> dict[str, Any] | None:
            ack: dict[str, Any] = await client.call(
                "run_command", _cmd(name, "GET", "/api/version"))
            return None if "not running" in str(ack.get("error")) else ack
        ack = await async_wait_for(answered, 20, "the runtime seen by the new executor")
        assert ack["status"] == "error" and "http_response" not in ack, ack
        assert "outside the internal networks" in ack["error"]
    finally:
        client.close()
