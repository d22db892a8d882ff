"""`dns` on a vNIC reaches the runtime's resolver, against the real engine: the
container's `Dns` setting and its `/etc/resolv.conf`, with one vNIC and with several,
after a restart by the executor and after one behind its back."""

from __future__ import annotations

from collections.abc import Callable

import docker
import pytest

from common.bus import RpcClient
from testkit.executor import Lan, create_ok, manual_vnic, short_id, wait_status
from testkit.helpers import wait_for

pytestmark = [pytest.mark.docker]


def nameservers(docker_client: docker.DockerClient, name: str) -> list[str]:
    result = docker_client.containers.get(name).exec_run(["cat", "/etc/resolv.conf"])
    assert result.exit_code == 0, result.output
    return [line.split()[1] for line in result.output.decode().splitlines()
            if line.startswith("nameserver ")]


async def test_resolv_conf_names_the_vnics_servers_across_restarts(
        bus: RpcClient, lans: Callable[[], Lan], docker_client: docker.DockerClient) -> None:
    first, second = lans(), lans()
    name = f"oat-plc-{short_id()}"
    vnics = [manual_vnic(first, 21, dns=["192.0.2.53", "192.0.2.54"]),
             manual_vnic(second, 21, name="eth1", dns=["192.0.2.54", "198.51.100.53"])]
    await create_ok(bus, name, vnics)
    wanted = ["192.0.2.53", "192.0.2.54", "198.51.100.53"]
    assert nameservers(docker_client, name) == wanted
    attrs = docker_client.api.inspect_container(name)
    assert attrs["HostConfig"]["Dns"] == wanted

    reply = await bus.call("restart_device", {"device_id": name}, timeout=30)
    assert reply["success"] is True, reply
    assert nameservers(docker_client, name) == wanted

    # A restart the executor did not ask for (as after a host reboot): the engine rebuilds
    # the file, the live view puts the servers back.
    docker_client.containers.get(name).restart(timeout=2)
    wait_for(lambda: nameservers(docker_client, name) == wanted, 20,
             "the dns servers back after an engine-side restart")


async def test_without_dns_the_engine_file_stays(
        bus: RpcClient, lans: Callable[[], Lan], docker_client: docker.DockerClient) -> None:
    lan = lans()
    name = f"oat-plc-{short_id()}"
    await create_ok(bus, name, [manual_vnic(lan, 22)])
    body = await wait_status(bus, name, lambda b: b.get("is_running") is True)
    assert body["status"] == "success"
    assert "192.0.2.53" not in nameservers(docker_client, name)
    assert not docker_client.api.inspect_container(name)["HostConfig"]["Dns"]
