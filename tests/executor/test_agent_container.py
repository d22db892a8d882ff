"""The in-container paths, with a stand-in "agent container" named in the configuration
(the executor itself runs on the host here): the agent joins each runtime's internal
network and reaches it there, leaves it before the network is removed, cannot be deleted
as a device, and is removed last by self-destruct."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import docker
import docker.errors
import pytest
import zmq.asyncio

from testkit.dockerenv import TEST_LABELS
from testkit.executor import (
    STANDIN_TAG,
    ExecutorProc,
    Lan,
    create_ok,
    manual_vnic,
    owned_objects,
    settled,
    short_id,
    wait_ready,
    wait_status,
)
from testkit.helpers import wait_for

pytestmark = [pytest.mark.docker]

PROBE = ("import ssl,sys,http.client as h\n"
         "c=ssl.create_default_context();c.check_hostname=False;c.verify_mode=ssl.CERT_NONE\n"
         "k=h.HTTPSConnection(sys.argv[1],8443,timeout=3,context=c)\n"
         "k.request('GET','/api/version');sys.exit(0 if k.getresponse().status==200 else 1)\n")


def networks_of(container: docker.models.containers.Container) -> set[str]:
    container.reload()
    return set(container.attrs["NetworkSettings"]["Networks"])


async def test_agent_container_joins_and_leaves_internal_networks(
        make_executor: Callable[..., ExecutorProc], zctx: zmq.asyncio.Context,
        lans: Callable[[], Lan], docker_client: docker.DockerClient) -> None:
    agent = docker_client.containers.run("orchestrator/openplc-standin:test", detach=True,
                                         name=f"oat-agent-{short_id()}", labels=TEST_LABELS)
    try:
        executor = make_executor(ORCH_AGENT_CONTAINER=agent.name).start()
        bus = executor.client(zctx)
        await wait_ready(bus)
        assert f"the agent runs in container {agent.name}" in executor.output()
        lan = lans()
        name = f"oat-plc-{short_id()}"
        body = await create_ok(bus, name, [manual_vnic(lan, 28)])
        assert f"{name}_internal" in networks_of(agent)
        wait_for(lambda: agent.exec_run(["python3", "-c", PROBE, body["internal_ip"]]).exit_code
             == 0, 20, "the agent container reaching the runtime's internal address")

        refused = await bus.call("delete_device", {"device_id": agent.name})
        assert refused["status"] == "error" and "not managed" in refused["error"]
        assert (await bus.call("stop_device", {"device_id": agent.name}))["success"] is False

        await bus.call("delete_device", {"device_id": name})
        assert (await wait_status(bus, name, settled))["status"] == "not_found"
        assert f"{name}_internal" not in networks_of(agent)

        other = f"oat-plc-{short_id()}"
        await bus.call("create_runtime", {"container_name": other, "vnic_configs": [],
                                          "runtime_version": STANDIN_TAG})
        assert (await wait_status(bus, other, settled))["status"] == "success"
        assert (await bus.call("delete_orchestrator", {}))["status"] == "accepted"
        body = await wait_status(bus, "__orchestrator__",
                                 lambda b: b["status"] in ("success", "error"), timeout=60)
        assert body["status"] == "success", body
        assert "removing the agent container" in body["message"]
        wait_for(lambda: not docker_client.containers.list(all=True, filters={"id": agent.id}),
             20, "the agent container removed")
        assert owned_objects(docker_client, executor.instance) == ([], [])
        bus.close()
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            agent.remove(force=True)
