"""delete_orchestrator: removes every managed runtime and network and the sidecar, reports
progress under `__orchestrator__`, leaves everything it does not own, and can be repeated.
(The executor runs on the host here, so there is no agent container to remove last.)"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import docker
import docker.errors
import pytest

from common import labels
from common.bus import RpcClient
from testkit.dockerenv import TEST_LABELS
from testkit.executor import (
    STANDIN_TAG,
    ExecutorProc,
    Lan,
    manual_vnic,
    owned_objects,
    settled,
    short_id,
    wait_status,
)

pytestmark = [pytest.mark.docker]

ORCH = "__orchestrator__"
NETMON_LABELS = {**TEST_LABELS, labels.COMPONENT: labels.NETMON_COMPONENT}


async def test_self_destruct_removes_only_what_is_ours(
        bus: RpcClient, executor: ExecutorProc, lans: Callable[[], Lan],
        docker_client: docker.DockerClient) -> None:
    assert (await bus.call("device_status", {"device_id": ORCH}))["status"] == "not_found"
    lan = lans()
    runtimes = [f"oat-sd-{short_id()}" for _ in range(2)]
    for i, name in enumerate(runtimes):
        vnics = [manual_vnic(lan, 30 + i)] if i == 0 else []
        ack = await bus.call("create_runtime", {"container_name": name, "vnic_configs": vnics,
                                                "runtime_version": STANDIN_TAG})
        assert ack["status"] == "creating"
    for name in runtimes:
        assert (await wait_status(bus, name, settled))["status"] == "success"
    sidecar = docker_client.containers.run(
        "orchestrator/openplc-standin:test", detach=True,
        name=executor.env["ORCH_SIDECAR_CONTAINER"], labels=NETMON_LABELS)
    user = docker_client.containers.run("orchestrator/openplc-standin:test", detach=True,
                                        name=f"oat-user-{short_id()}", labels=TEST_LABELS)
    user_net = docker_client.networks.create(f"oat-user-net-{short_id()}", internal=True,
                                             labels=TEST_LABELS)
    try:
        ack = await bus.call("delete_orchestrator", {})
        assert ack == {"status": "accepted",
                       "message": "Self-destruct initiated. Poll get_device_status with "
                                  "device_id='__orchestrator__' for progress.",
                       "poll_device_id": ORCH}
        again = await bus.call("delete_orchestrator", {})
        assert again == {"status": "error",
                         "error": "Self-destruct operation already in progress"}
        steps = set()

        def finished(body: dict) -> bool:
            if body["status"] == "deleting":
                steps.add(body["step"])
            return body["status"] in ("success", "error")
        body = await wait_status(bus, ORCH, finished, timeout=90)
        assert body["status"] == "success", body
        assert body["progress"]["runtimes_total"] == 2
        assert body["progress"]["runtimes_removed"] == 2
        assert body["progress"]["sidecar_removed"] is True
        assert steps <= {"waiting_for_operations", "removing_runtimes", "removing_networks",
                         "removing_sidecar", "removing_agent"}
        assert owned_objects(docker_client, executor.instance) == ([], [])
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(sidecar.id)
        user.reload()
        assert user.status == "running"
        user_net.reload()
        for name in runtimes:
            assert (await bus.call("device_status", {"device_id": name}))["status"] == \
                "not_found"
        assert json.loads((executor.state_dir / "runtime_vnics.json").read_text()) == {}
        # Safe to repeat: nothing left to remove, success again.
        assert (await bus.call("delete_orchestrator", {}))["status"] == "accepted"
        body = await wait_status(bus, ORCH, lambda b: b["status"] == "success"
                                 and b["progress"].get("runtimes_total") == 0, timeout=30)
        assert body["progress"]["sidecar_removed"] is False
    finally:
        for container in (sidecar, user):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            user_net.remove()


async def test_foreign_container_with_the_sidecar_name_is_left_alone(
        bus: RpcClient, executor: ExecutorProc, docker_client: docker.DockerClient) -> None:
    """A container that merely has the configured sidecar name (no netmon component label,
    on itself or its image) is not ours: self-destruct leaves it running and says so."""
    name = executor.env["ORCH_SIDECAR_CONTAINER"]
    foreign = docker_client.containers.run("orchestrator/openplc-standin:test", detach=True,
                                           name=name, labels=TEST_LABELS)
    try:
        assert (await bus.call("delete_orchestrator", {}))["status"] == "accepted"
        body = await wait_status(bus, ORCH, lambda b: b["status"] in ("success", "error"),
                                 timeout=60)
        assert body["status"] == "success", body
        assert body["progress"]["sidecar_removed"] is False
        assert body["progress"]["sidecar_foreign"] is True
        assert f"container {name} was left in place" in json.dumps(body), body
        foreign.reload()
        assert foreign.status == "running"
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            foreign.remove(force=True)
