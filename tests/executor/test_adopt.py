"""Taking over a device that ran the original agent, against the real engine.

The original's runtimes are laid out as it leaves them: stand-in containers with no
labels of ours (only the tests' session label, so the sweep finds them), on
`<name>_internal` and `macvlan_<parent>_<subnet>`, named in `runtime_vnics.json` and
`data/clients.json` in the state directory.  The executor adopts exactly those, and a
container not named there stays untouched."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import docker.types
import pytest
import zmq.asyncio

from common.bus import RpcClient
from testkit.dockerenv import TEST_LABELS
from testkit.executor import (
    STANDIN_REPO,
    STANDIN_TAG,
    ExecutorProc,
    Lan,
    https_ok,
    short_id,
    wait_ready,
    wait_status,
)
from testkit.helpers import wait_for

pytestmark = [pytest.mark.docker]

IMAGE = f"{STANDIN_REPO}:{STANDIN_TAG}"


class Original:
    """What the original agent leaves: containers, networks, its two files."""

    def __init__(self, dc: docker.DockerClient) -> None:
        self.dc = dc
        self.containers: list[str] = []
        self.networks: list[str] = []

    def network(self, name: str, **kw: Any) -> str:
        self.dc.networks.create(name, labels=TEST_LABELS, check_duplicate=True, **kw)
        self.networks.append(name)
        return name

    def runtime(self, name: str, lan: Lan | None = None, ip: str | None = None) -> None:
        internal = self.network(f"{name}_internal", driver="bridge", internal=True)
        container = self.dc.containers.create(IMAGE, name=name, labels=TEST_LABELS,
                                              network=internal, detach=True,
                                              restart_policy={"Name": "unless-stopped"})
        self.containers.append(name)
        if lan is not None:
            macvlan = lan.network_name()
            if macvlan not in self.networks:
                ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                    subnet=lan.subnet, gateway=lan.gateway)])
                self.network(macvlan, driver="macvlan", options={"parent": lan.parent},
                             ipam=ipam)
            self.dc.networks.get(macvlan).connect(container, ipv4_address=ip)
        container.start()

    def cleanup(self) -> None:
        for name in self.containers:
            with contextlib.suppress(docker.errors.NotFound):
                self.dc.containers.get(name).remove(force=True)
        for name in reversed(self.networks):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                self.dc.networks.get(name).remove()


@pytest.fixture
def original(docker_client: docker.DockerClient) -> Iterator[Original]:
    made = Original(docker_client)
    yield made
    made.cleanup()


def lay_out_files(executor: ExecutorProc, vnics: dict[str, list[dict[str, Any]]],
                  clients: dict[str, str]) -> None:
    (executor.state_dir / "runtime_vnics.json").write_text(json.dumps(vnics, indent=2))
    (executor.state_dir / "data").mkdir(exist_ok=True)
    (executor.state_dir / "data" / "clients.json").write_text(json.dumps(
        {name: {"ip": ip, "name": name} for name, ip in clients.items()}, indent=2))


async def test_runtimes_of_the_original_are_adopted_and_managed(
        make_executor: Callable[..., ExecutorProc], original: Original,
        lans: Callable[[], Lan], docker_client: docker.DockerClient,
        zctx: zmq.asyncio.Context) -> None:
    lan = lans()
    tag = short_id()
    plc_a, plc_b = f"oat-orig-a-{tag}", f"oat-orig-b-{tag}"
    missing, stranger = f"oat-orig-gone-{tag}", f"oat-user-{tag}"
    original.runtime(plc_a, lan, lan.addr(40))
    original.runtime(plc_b)
    original.runtime(stranger)  # named nowhere: never touched
    vnic_a = {"name": "eth0", "parent_interface": lan.parent, "network_mode": "static",
              "ip": f"{lan.addr(40)}/{lan.subnet.split('/')[1]}", "gateway": lan.gateway}
    executor = make_executor()
    lay_out_files(executor, {plc_a: [vnic_a], missing: []},
                  {plc_a: "172.30.0.2", plc_b: "172.30.1.2"})
    executor.start()
    bus = executor.client(zctx)
    try:
        await wait_ready(bus)
        await drive(bus, executor, docker_client, lan, plc_a, plc_b, stranger)
    finally:
        bus.close()


async def drive(bus: RpcClient, executor: ExecutorProc, dc: docker.DockerClient, lan: Lan,
                plc_a: str, plc_b: str, stranger: str) -> None:
    body = await wait_status(bus, plc_a, lambda b: b["status"] == "success", timeout=20)
    mac = dc.api.inspect_container(plc_a)["NetworkSettings"]["Networks"][
        lan.network_name()]["MacAddress"]
    assert body["is_running"] is True
    assert body["networks"] == {lan.network_name(): {
        "ip_address": lan.addr(40), "mac_address": mac, "gateway": lan.gateway}}
    assert body["internal_ip"]
    adopted = json.loads((executor.state_dir / "adopted.json").read_text())["containers"]
    assert sorted(adopted.values()) == sorted([plc_a, plc_b])
    stored = json.loads((executor.state_dir / "runtime_vnics.json").read_text())
    (vnic,) = stored[plc_a]
    assert vnic["ip_address"] == lan.addr(40) and vnic["mac_address"] == mac
    assert vnic["network"] == lan.network_name() and vnic["subnet"] == lan.subnet
    assert "Adopted runtime" in executor.output() or "adopted runtime" in executor.output()
    assert "no such container exists; skipped" in executor.output()

    # The stranger is not ours: refused and untouched.
    refused = await bus.call("stop_device", {"device_id": stranger}, timeout=20)
    assert refused["success"] is False and "not managed" in refused["error"]
    assert (await bus.call("device_status", {"device_id": stranger}))["status"] == "not_found"

    reply = await bus.call("run_command", {"device_id": plc_a, "method": "GET",
                                           "api": "/api/version"}, timeout=40)
    assert reply["http_response"]["status_code"] == 200, reply
    wait_for(lambda: https_ok(body["internal_ip"]), 20, "the adopted runtime answering")

    stopped = await bus.call("stop_device", {"device_id": plc_b}, timeout=30)
    assert stopped["success"] is True and stopped["container_status"] == "exited"
    started = await bus.call("start_device", {"device_id": plc_b}, timeout=30)
    assert started["success"] is True and started["container_status"] == "running"
    restarted = await bus.call("restart_device", {"device_id": plc_a}, timeout=30)
    assert restarted["success"] is True

    ack = await bus.call("delete_device", {"device_id": plc_b})
    assert ack["status"] == "deleting"
    gone = await wait_status(bus, plc_b, lambda b: b["status"] in ("not_found", "error"))
    assert gone["status"] == "not_found", gone
    with pytest.raises(docker.errors.NotFound):
        dc.networks.get(f"{plc_b}_internal")
    adopted = json.loads((executor.state_dir / "adopted.json").read_text())["containers"]
    assert list(adopted.values()) == [plc_a]
    assert dc.containers.get(stranger).status == "running"
    assert dc.containers.get(plc_a).status == "running"


async def test_adoption_is_idempotent_across_restarts(
        make_executor: Callable[..., ExecutorProc], original: Original,
        docker_client: docker.DockerClient, zctx: zmq.asyncio.Context) -> None:
    name = f"oat-orig-c-{short_id()}"
    original.runtime(name)
    executor = make_executor()
    lay_out_files(executor, {}, {name: "172.30.2.2"})
    for _round in range(2):
        executor.start()
        bus = executor.client(zctx)
        try:
            await wait_ready(bus)
            body = await wait_status(bus, name, lambda b: b["status"] == "success", timeout=20)
            assert body["is_running"] is True
        finally:
            bus.close()
        executor.stop()
    adopted = json.loads((executor.state_dir / "adopted.json").read_text())["containers"]
    assert adopted == {docker_client.containers.get(name).id: name}
    assert executor.output().count(f"adopted runtime {name}") == 1


async def test_self_destruct_removes_adopted_runtimes_and_nothing_else(
        make_executor: Callable[..., ExecutorProc], original: Original,
        docker_client: docker.DockerClient, zctx: zmq.asyncio.Context) -> None:
    tag = short_id()
    name, stranger = f"oat-orig-d-{tag}", f"oat-user-{tag}"
    original.runtime(name)
    original.runtime(stranger)
    executor = make_executor()
    lay_out_files(executor, {name: []}, {})
    executor.start()
    bus = executor.client(zctx)
    try:
        await wait_ready(bus)
        await wait_status(bus, name, lambda b: b["status"] == "success", timeout=20)
        ack = await bus.call("delete_orchestrator", {})
        assert ack["status"] == "accepted"
        body = await wait_status(bus, "__orchestrator__",
                                 lambda b: b["status"] in ("success", "error"), timeout=60)
        assert body["status"] == "success", body
        assert body["progress"]["runtimes_removed"] == 1
    finally:
        bus.close()
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(name)
    with pytest.raises(docker.errors.NotFound):
        docker_client.networks.get(f"{name}_internal")
    assert docker_client.containers.get(stranger).status == "running"
    docker_client.networks.get(f"{stranger}_internal")  # still there
