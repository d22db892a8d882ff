"""The lease keeper for a real runtime container: the stand-in image on a MACVLAN network
whose parent is the test LAN's veth, dnsmasq serving that LAN.  The engine gives the
container an IPAM address; the keeper replaces it with the lease, from the host, with
nothing inside the image.

Needs root (namespaces, veth, MACVLAN) and dnsmasq, which `install/test-env.sh` installs.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Callable

import docker
import docker.errors
import pytest

from services.executor.dhcp import LeaseKeeper, VnicTarget
from testkit.dockerenv import TEST_LABELS
from testkit.executor import https_ok_from
from testkit.helpers import wait_for
from testkit.movinglan import free_blocks, host
from tests.dhcp.lan import DhcpLan

pytestmark = [pytest.mark.docker, pytest.mark.netns, pytest.mark.timeout(180)]

MAC = "02:0d:c6:33:64:21"


def container_addresses(pid: int, mac: str) -> list[str]:
    out = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-o", "-4", "addr"],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    links = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-o", "link"],
                           capture_output=True, text=True, check=True, timeout=10).stdout
    name = next(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
                if mac in line)
    return [line.split()[3] for line in out.splitlines() if line.split()[1] == name]


def container_links(pid: int) -> str:
    """`ip -o link` inside the container's namespace (MACs in lower case)."""
    return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-o", "link"],
                          capture_output=True, text=True, check=True, timeout=10).stdout


def test_keeper_leases_for_a_runtime_container(
        lans: Callable[..., DhcpLan], keepers: Callable[..., LeaseKeeper],
        docker_client: docker.DockerClient, standin_image: str) -> None:
    block = free_blocks(docker_client, 1, set())[0]  # a /27 no engine network overlaps
    lan = lans(router=host(block, 1), dns=host(block, 29), prefixlen=27,
               pool=(host(block, 16), host(block, 24)))
    lan.start_server()
    name = f"oat-dhcp-{uuid.uuid4().hex[:8]}"
    network = docker_client.networks.create(
        name, driver="macvlan", options={"parent": lan.parent}, labels=TEST_LABELS,
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
            subnet=block, gateway=host(block, 1))]))
    container = None
    try:
        container = docker_client.containers.run(
            standin_image, detach=True, name=name, labels=TEST_LABELS, network=name,
            mac_address=MAC, hostname=name)
        container.reload()
        pid = int(container.attrs["State"]["Pid"])
        ipam_ip = container.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
        assert container_addresses(pid, MAC) == [f"{ipam_ip}/27"]
        keeper = keepers()
        keeper.attach(VnicTarget(name, "eth0", MAC, f"/proc/{pid}/ns/net", hostname=name,
                                 resolv_conf=container.attrs["ResolvConfPath"]))
        status = keeper.wait(name, "eth0", lambda s: s["state"] == "bound", 20)
        leased = status["ip_address"]
        assert leased != ipam_ip and status["gateway"] == host(block, 1)
        # The engine's address is gone: the interface carries only what the server leased.
        assert container_addresses(pid, MAC) == [f"{leased}/27"]
        assert lan.leases() == {MAC: leased}
        resolv = container.exec_run(["cat", "/etc/resolv.conf"]).output.decode()
        assert f"nameserver {host(block, 29)}" in resolv
        # The stand-in may still be starting its server: a bounded wait.
        wait_for(lambda: https_ok_from(lan.ns, leased, timeout=3), 30, interval=0.5,
                 what="HTTPS from the LAN to the leased address")
        assert keeper.release(name, "eth0")
        assert container_addresses(pid, MAC) == []
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
        with contextlib.suppress(docker.errors.APIError):
            network.remove()
