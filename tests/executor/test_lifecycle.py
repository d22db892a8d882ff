"""Lifecycle and errors through the bus, against the real engine."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Callable

import docker
import docker.errors
import pytest

from common.bus import RpcClient
from testkit.dockerenv import TEST_LABELS
from testkit.executor import (
    STANDIN_TAG,
    ExecutorProc,
    Lan,
    create_runtime,
    https_ok,
    manual_vnic,
    owned_objects,
    settled,
    short_id,
    wait_status,
)
from testkit.helpers import wait_for

pytestmark = [pytest.mark.docker]


async def test_full_lifecycle(bus: RpcClient, executor: ExecutorProc, lans: Callable[[], Lan],
                              docker_client: docker.DockerClient) -> None:
    lan = lans()
    name = f"oat-plc-{short_id()}"
    ack = await create_runtime(bus, name, [manual_vnic(lan, 20)])
    assert ack == {"status": "creating", "container_id": name,
                   "message": f"Container creation started for {name}",
                   "serial_configs_count": 0}
    seen_steps = set()

    def done(body: dict[str, object]) -> bool:
        if body.get("status") == "creating":
            seen_steps.add(body.get("step"))
        return settled(body)
    body = await wait_status(bus, name, done)
    assert body["status"] == "success", body
    assert body["is_running"] is True and body["container_status"] == "running"
    assert body["restart_count"] == 0 and isinstance(body["uptime_seconds"], int)
    net_name = lan.network_name()
    assert set(body["networks"]) == {net_name}
    assert body["networks"][net_name]["ip_address"] == lan.addr(20)
    assert body["networks"][net_name]["gateway"] == lan.gateway
    assert seen_steps <= {"validating_config", "pulling_image", "creating_networks",
                          "creating_container"}
    wait_for(lambda: https_ok(body["internal_ip"]), 20, "the runtime answering on its internal IP")
    attrs = docker_client.api.inspect_container(name)
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"  # the agent restarts it
    assert "SYS_NICE" in attrs["HostConfig"]["CapAdd"]
    assert attrs["Config"]["Labels"]["orchestrator.managed"] == "true"
    assert attrs["Config"]["Labels"]["orchestrator.instance"] == executor.instance
    internal = docker_client.api.inspect_network(f"{name}_internal")
    assert internal["Internal"] is True
    assert internal["IPAM"]["Config"][0]["Subnet"].startswith("172.30.")
    assert internal["IPAM"]["Config"][0]["Subnet"].endswith("/28")

    command = {"device_id": name, "method": "GET", "api": "/api/version", "port": 8443,
               "headers": {}, "params": {}, "data": None, "files": {}}
    result = await bus.call("run_command", command)
    assert result["http_response"]["status_code"] == 200, result

    stopped = await bus.call("stop_device", {"device_id": name})
    assert stopped == {"status": "success", "success": True, "device_id": name,
                       "container_status": "exited"}
    body = await bus.call("device_status", {"device_id": name})
    assert body["is_running"] is False and "exit_code" in body and "uptime_seconds" not in body

    result = await bus.call("run_command", command)
    assert result == {"status": "error", "device_id": name,
                      "error": f"Device {name} is not running"}

    started = await bus.call("start_device", {"device_id": name})
    assert started["success"] is True and started["container_status"] == "running"
    restarted = await bus.call("restart_device", {"device_id": name})
    assert restarted["success"] is True and restarted["container_status"] == "running"
    body = await wait_status(bus, name, lambda b: b.get("is_running") is True)

    ack = await bus.call("delete_device", {"device_id": name})
    assert ack == {"status": "deleting", "device_id": name,
                   "message": f"Container deletion started for {name}"}
    body = await wait_status(bus, name, settled)
    assert body == {"status": "not_found", "device_id": name,
                    "message": f"Container {name} does not exist"}
    assert owned_objects(docker_client, executor.instance) == ([], [])
    vnics = (executor.state_dir / "runtime_vnics.json").read_text()
    assert name not in vnics


async def test_errors_answered_at_once_change_nothing(
        bus: RpcClient, executor: ExecutorProc, lans: Callable[[], Lan],
        docker_client: docker.DockerClient) -> None:
    lan = lans()
    name = f"oat-plc-{short_id()}"
    # An address in the other documentation range is outside the LAN whatever block it got.
    outside = "198.51.100.7" if lan.subnet.startswith("203.") else "203.0.113.7"
    assert ipaddress.IPv4Address(outside) not in ipaddress.IPv4Network(lan.subnet)
    cases = [
        ({"container_name": "-bad name"}, "not a valid container name"),
        ({"container_name": "x" * 60}, "longer than 54 characters"),
        ({"vnic_configs": [manual_vnic(lan, 20, ip_address=outside)]}, "outside"),
        ({"vnic_configs": [manual_vnic(lan, 20, mac_address="03:00:00:00:00:01")]},
         "multicast or broadcast"),
        ({"vnic_configs": [manual_vnic(lan, 20, mac_address="02:aa:00:00:00:01"),
                           {**manual_vnic(lan, 21, name="b", mac_address="02:aa:00:00:00:01"),
                            "parent_interface": "lo"}]}, "duplicate MAC"),
        ({"vnic_configs": [{**manual_vnic(lan, 20), "parent_interface": "oatmissing0"}]},
         "does not exist on the host"),
    ]
    for override, fragment in cases:
        params = {"container_name": name, "vnic_configs": [manual_vnic(lan, 20)],
                  "runtime_version": STANDIN_TAG, **override}
        result = await bus.call("create_runtime", params)
        assert result["status"] == "error", (override, result)
        assert fragment in result["error"], (override, result)
    body = await bus.call("device_status", {"device_id": name})
    assert body["status"] == "not_found"
    assert owned_objects(docker_client, executor.instance) == ([], [])


async def test_missing_image_fails_cleanly(bus: RpcClient, executor: ExecutorProc,
                                           lans: Callable[[], Lan],
                                           docker_client: docker.DockerClient) -> None:
    lan = lans()
    name = f"oat-plc-{short_id()}"
    ack = await bus.call("create_runtime", {"container_name": name,
                                            "vnic_configs": [manual_vnic(lan, 20)],
                                            "runtime_version": "no-such-tag"})
    assert ack["status"] == "creating"
    body = await wait_status(bus, name, settled)
    assert body["status"] == "error" and body["operation"] == "create"
    assert "could not be pulled" in body["error"] and "not available locally" in body["error"]
    assert body["message"] == f"Operation failed: {body['error']}"
    assert owned_objects(docker_client, executor.instance) == ([], [])


async def test_duplicate_create_is_busy_and_duplicate_mac_is_refused(
        bus: RpcClient, executor: ExecutorProc, lans: Callable[[], Lan],
        docker_client: docker.DockerClient) -> None:
    lan = lans()
    name = f"oat-plc-{short_id()}"
    params = {"container_name": name, "runtime_version": STANDIN_TAG,
              "vnic_configs": [manual_vnic(lan, 20, mac_address="02:42:00:aa:bb:01")]}
    first, second = await asyncio.gather(bus.call("create_runtime", params),
                                         bus.call("create_runtime", params))
    results = sorted([first, second], key=lambda r: r["status"])
    assert results[0]["status"] == "creating"
    assert results[1] == {"status": "error", "container_id": name,
                          "error": f"Container {name} already has a create operation in "
                                   "progress"}
    busy_delete = await bus.call("delete_device", {"device_id": name})
    assert busy_delete["status"] == "error"
    assert "already has a create operation in progress" in busy_delete["error"]
    body = await wait_status(bus, name, settled)
    assert body["status"] == "success", body
    assert body["networks"][next(iter(body["networks"]))]["mac_address"] == "02:42:00:aa:bb:01"
    # The same MAC for another runtime, and the same name again: refused at once.
    other = f"oat-plc-{short_id()}"
    clash = await bus.call("create_runtime", {
        "container_name": other, "runtime_version": STANDIN_TAG,
        "vnic_configs": [manual_vnic(lan, 21, mac_address="02:42:00:aa:bb:01")]})
    assert clash["status"] == "error" and "already used by runtime" in clash["error"]
    again = await bus.call("create_runtime", params)
    assert again["status"] == "error" and "already exists" in again["error"]


async def test_unmanaged_and_protected_containers_are_refused(
        bus: RpcClient, executor: ExecutorProc, docker_client: docker.DockerClient) -> None:
    name = f"oat-user-{short_id()}"
    sidecar = executor.env["ORCH_SIDECAR_CONTAINER"]
    mine = docker_client.containers.run("orchestrator/openplc-standin:test", detach=True,
                                        name=name, labels=TEST_LABELS)
    # The sidecar by name, even with our labels on it, is never a runtime.
    side = docker_client.containers.run(
        "orchestrator/openplc-standin:test", detach=True, name=sidecar,
        labels={**TEST_LABELS, "orchestrator.managed": "true",
                "orchestrator.instance": executor.instance})
    try:
        for device in (name, sidecar):
            result = await bus.call("delete_device", {"device_id": device})
            assert result["status"] == "error" and "not managed by this agent" in \
                result["error"], result
            for method in ("stop_device", "restart_device"):
                result = await bus.call(method, {"device_id": device})
                assert result["success"] is False and "not managed" in result["error"]
        for container in (mine, side):
            container.reload()
            assert container.status == "running"
        missing = f"oat-none-{short_id()}"
        result = await bus.call("stop_device", {"device_id": missing})
        assert result == {"status": "error", "success": False, "device_id": missing,
                          "error": f"Container {missing} not found"}
        ack = await bus.call("delete_device", {"device_id": missing})
        assert ack["status"] == "deleting"
        body = await wait_status(bus, missing, settled)
        assert body["status"] == "not_found"
        result = await bus.call("run_command", {"device_id": missing, "method": "GET",
                                                "api": "/api/version"})
        assert result == {"status": "error", "error": f"Device not found: {missing}"}
    finally:
        for container in (mine, side):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
