"""The executor inside the real supervisord suite: one full lifecycle through the bus,
with a `supervisorctl restart executor` in the middle that must not lose the runtime."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import docker
import pytest
import zmq.asyncio

from common import wire
from common.bus import Endpoints, RpcClient
from testkit import dockerenv
from testkit.executor import (
    STANDIN_REPO,
    Lan,
    cleanup_instance,
    create_ok,
    https_ok,
    manual_vnic,
    owned_objects,
    settled,
    short_id,
    wait_ready,
    wait_status,
)
from testkit.helpers import wait_for
from testkit.suite import Suite, running_suite

pytestmark = [pytest.mark.docker]


@pytest.fixture
def suite(docker_client: docker.DockerClient, standin_image: str) -> Iterator[Suite]:
    instance = dockerenv.test_instance("s")
    try:
        with running_suite(ORCH_INSTANCE_ID=instance, ORCH_RUNTIME_IMAGE=STANDIN_REPO,
                           ORCH_SIDECAR_CONTAINER=f"oat-sidecar-{instance}",
                           ORCH_STOP_GRACE="3", ORCH_BEAT_INTERVAL="0.5") as s:
            yield s
    finally:
        cleanup_instance(docker_client, instance)


async def test_lifecycle_under_supervisord(suite: Suite, zctx: zmq.asyncio.Context,
                                           lans: Callable[[], Lan],
                                           docker_client: docker.DockerClient) -> None:
    instance = suite.env["ORCH_INSTANCE_ID"]
    bus = RpcClient(zctx, Endpoints(suite.base / "run").rpc("executor"),
                    wire.Stamper("test"), 10.0)
    try:
        await wait_ready(bus)
        lan = lans()
        name = f"oat-plc-{short_id()}"
        await create_ok(bus, name, [manual_vnic(lan, 27)])
        wait_for(lambda: lan.reach_https(lan.addr(27)), 30, "the LAN reaching the runtime")

        out = suite.ctl("restart", "executor")
        assert "executor: started" in out, out
        await wait_ready(bus)
        body = await wait_status(bus, name, lambda b: b.get("is_running") is True)
        assert body["networks"][next(iter(body["networks"]))]["ip_address"] == lan.addr(27)
        wait_for(lambda: https_ok(body["internal_ip"]), 20, "internal address answering")

        for method, state in (("stop_device", "exited"), ("start_device", "running"),
                              ("restart_device", "running")):
            result = await bus.call(method, {"device_id": name}, timeout=20)
            assert result == {"status": "success", "success": True, "device_id": name,
                              "container_status": state}, (method, result)
        ack = await bus.call("delete_device", {"device_id": name})
        assert ack["status"] == "deleting"
        body = await wait_status(bus, name, settled)
        assert body["status"] == "not_found"
        assert owned_objects(docker_client, instance) == ([], [])
        assert suite.status()["executor"][0] == "RUNNING"
    finally:
        with contextlib.suppress(Exception):
            bus.close()
