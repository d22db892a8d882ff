"""Wireless vNICs made by the agent container, installed by install/install.sh with its
flags (default bridge network, `--pid host`, the capabilities) and driven from the
development cloud.  A veth end the test made plays the WiFi interface
(`ORCH_WIRELESS_INTERFACES`), its peer in a test namespace the WiFi LAN (router, LAN
client, dnsmasq); the netmon sidecar reports the parent as it would a real one.

The executor runs in a network namespace of its own, so everything on the link's host
side must be put in the host's (found through the engine's container shim, not
`/proc/1/ns/net`, which some hosts do not let even root open): the host's end of the
pair, the proxy entries on the parent, the /32 routes, the DHCP exchanges on the parent
and the DOCKER-USER rules (by the image's iptables).  The LAN client reaches a static and
a dhcp vPLC over HTTPS; when the station joins another subnet both follow it (re-homing)
and are reached there; delete removes every host-side piece.  A dhcp vNIC on the same
LAN as a MACVLAN parent (not wireless) leases first through a link made in the host's
namespace too.

Needs root (namespaces, veth), the engine, iptables and dnsmasq.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.models.containers
import pytest

from services.executor.net import wifi
from testkit.executor import https_ok_from
from testkit.helpers import wait_for
from testkit.movinglan import LOWEST_PRIORITY, free_blocks, host
from tests.dhcp.lan import DhcpLan, make_lan, sh
from tests.dhcp.wifilan import forward_rules, lan_neighbour, parent_mac, proxies, wifi_lan
from tests.install.conftest import Install
from tests.install.test_installer import agent_id_of, container, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.netns, pytest.mark.timeout(600)]


@pytest.fixture
def links() -> Iterator[list[str]]:
    """Host ends of the links a test made: their forwarding rules are removed afterwards
    (after the installation's sweep, which this fixture outlives), in case a failed test
    left them; the pairs go with the runtimes, the proxy entries with the parent."""
    made: list[str] = []
    yield made
    for name in made:
        wifi.forbid_forwarding(name)


def join(lan: DhcpLan, block: str, old: str | None = None) -> None:
    """The station joins the WiFi LAN on `block` (leaving `old`): the LAN side renumbered
    with a fresh dnsmasq, the station's address and its default route through the LAN's
    router (the worst metric there is: it never carries the host's own traffic; the
    sidecar reports a gateway only from a default route) changed in one batch."""
    lan.stop_server()
    lan.leasefile.unlink(missing_ok=True)
    wifi_lan(lan, block, station=False)
    batch = [f"addr del {host(old, 2)}/27 dev {lan.parent}"] if old else []
    batch += [f"addr add {host(block, 2)}/27 dev {lan.parent}",
              f"route replace default via {host(block, 1)} dev {lan.parent} "
              f"metric {LOWEST_PRIORITY}"]
    subprocess.run(["ip", "-batch", "-"], input="\n".join(batch) + "\n", text=True,
                   check=True, capture_output=True, timeout=20)
    lan.pool = (host(block, 16), host(block, 24))
    lan.start_server()


@pytest.fixture
def wlan(docker_client: docker.DockerClient, tmp_path: Path
         ) -> Iterator[tuple[DhcpLan, list[str]]]:
    """The WiFi LAN on the first of two free blocks (the second for the move); deleting
    the veth takes the station's address and default route with it."""
    blocks = free_blocks(docker_client, 2, set())
    lan = make_lan(tmp_path, ping=False)
    try:
        join(lan, blocks[0])
        yield lan, blocks
    finally:
        lan.close()


def status_row(install: Install, agent_id: str, device: str, network: str,
               block: str) -> Callable[[], dict[str, Any] | None]:
    """The vNIC's status row once it shows an address in `block` (a dhcp one: bound)."""
    def row() -> dict[str, Any] | None:
        body = install.cloud.send(agent_id, "get_device_status", {"device_id": device})
        found: dict[str, Any] = (body.get("networks") or {}).get(network) or {}
        ip, lease = found.get("ip_address"), found.get("dhcp")
        if not ip or ipaddress.IPv4Address(ip) not in ipaddress.IPv4Network(block):
            return None
        return found if lease is None or lease.get("state") == "bound" else None
    return row


def in_agent(agent: docker.models.containers.Container, *cmd: str) -> tuple[int, str]:
    code, out = agent.exec_run(list(cmd))
    return code, out.decode(errors="replace")


def host_side(lan: DhcpLan, link: str, ip: str) -> dict[str, bool]:
    """Which pieces of the link's host side for `ip` are in the host's namespace."""
    return {"end": wifi.exists(link), "proxy": f"{ip} " in f"{proxies(lan)} ",
            "route": f"{ip} " in sh("ip", "route", "show", "table", "main"),
            "rules": len(forward_rules(link)) == 2}


IN_PLACE = {"end": True, "proxy": True, "route": True, "rules": True}


def reached(lan: DhcpLan, ip: str, what: str) -> None:
    wait_for(lambda: https_ok_from(lan.ns, ip), 30, interval=0.5,
             what=f"HTTPS from the WiFi LAN to {what} at {ip}")
    assert lan_neighbour(lan, ip) == parent_mac(lan)  # the station's MAC only


def installed(install: Install, docker_client: docker.DockerClient, standin_image: str,
              request: pytest.FixtureRequest, *env: str
              ) -> tuple[str, docker.models.containers.Container, Callable[[], str]]:
    """Install the agent (extra `--agent-env` settings `env`): its id, its container, and
    its log (printed when the test ends)."""
    args = ["--runtime-image", standin_image.split(":")[0],
            "--agent-env", "ORCH_PULL_POLICY=missing"]
    for setting in env:
        args += ["--agent-env", setting]
    result = install.run(*args)
    assert result.returncode == 0
    agent_id = agent_id_of(result.stdout)
    wait_ready(docker_client, install)
    agent = container(docker_client, install.agent)
    assert agent is not None and agent.attrs["HostConfig"]["NetworkMode"] != "host"

    def agent_log() -> str:
        return in_agent(agent, "sh", "-c",
                        "cat /var/orchestrator/logs/orchestrator-logs-*.log")[1]
    request.addfinalizer(lambda: print("--- agent log (tail) ---\n" + agent_log()[-8000:]))
    assert "host-side network work runs in that of process" in agent_log()
    return agent_id, agent, agent_log


def reported(install: Install, agent_id: str, lan: DhcpLan, block: str
             ) -> Callable[[], bool]:
    """The sidecar reports the parent on `block` with its gateway (a dhcp vNIC takes its
    parent's subnet and gateway from there)."""
    def check() -> bool:
        ack = install.cloud.send(agent_id, "get_host_interfaces", {})
        return any(row.get("name") == lan.parent and row.get("subnet") == block
                   and row.get("gateway") == host(block, 1)
                   for row in ack.get("interfaces") or [])
    return check


def test_wireless_vnics_from_the_agent_container(
        links: list[str], wlan: tuple[DhcpLan, list[str]], docker_client: docker.DockerClient,
        images: dict[str, str], standin_image: str, install: Install,
        request: pytest.FixtureRequest) -> None:
    lan, (block, new) = wlan
    agent_id, agent, _log = installed(install, docker_client, standin_image, request,
                                      f"ORCH_WIRELESS_INTERFACES={lan.parent}")
    wait_for(reported(install, agent_id, lan, block), 60, interval=1,
             what=f"{lan.parent} reported on {block}")

    static, dyn = f"{install.prefix}ws", f"{install.prefix}wd"
    net_s, net_d = f"wifi_{lan.parent}_wlan0", f"wifi_{lan.parent}_eth0"
    link_s, link_d = wifi.host_end(static, "wlan0"), wifi.host_end(dyn, "eth0")
    links.extend((link_s, link_d))
    ip = host(block, 10)
    for device, vnic in ((static, {"name": "wlan0", "network_mode": "manual", "ip_address": ip,
                                   "subnet": block, "gateway": host(block, 1)}),
                         (dyn, {"name": "eth0", "network_mode": "dhcp"})):
        ack = install.cloud.send(agent_id, "create_new_runtime", {
            "container_name": device, "runtime_version": "test",
            "vnic_configs": [{**vnic, "parent_interface": lan.parent}]})
        assert ack["status"] == "creating", ack

    # Static: in place with its forwarding rules (no error on the row), reached.
    row = wait_for(status_row(install, agent_id, static, net_s, block), 120, interval=1,
                   what="the static wireless vNIC in place")
    assert row["ip_address"] == ip and row["gateway"] == host(block, 1)
    assert "error" not in row, row
    reached(lan, ip, "the static vPLC")
    # Every host-side piece is in the host's namespace, none in the agent container's.
    assert host_side(lan, link_s, ip) == IN_PLACE
    assert in_agent(agent, "ip", "link", "show", link_s)[0] != 0
    assert ip not in in_agent(agent, "ip", "neigh", "show", "proxy")[1]

    # dhcp: dnsmasq on the WiFi LAN leases through the parent in the host's namespace.
    row = wait_for(status_row(install, agent_id, dyn, net_d, block), 90, interval=1,
                   what="a lease for the dhcp wireless vNIC")
    leased = str(row["ip_address"])
    assert row["gateway"] == host(block, 1) and "error" not in row, row
    assert lan.leases() == {row["mac_address"]: leased}
    reached(lan, leased, "the dhcp vPLC")
    assert host_side(lan, link_d, leased) == IN_PLACE

    # The station joins another subnet: the dhcp vNIC leases from the new LAN's server,
    # the static one (no longer fitting) gets the lowest free address; the old addresses'
    # host side goes.
    join(lan, new, old=block)
    wait_for(reported(install, agent_id, lan, new), 60, interval=1,
             what=f"{lan.parent} reported on {new}")
    moved_s = host(new, 3)  # .1 the router, .2 the station
    row = wait_for(status_row(install, agent_id, static, net_s, new), 60, interval=1,
                   what="the static wireless vNIC re-homed")
    assert row["ip_address"] == moved_s and row["gateway"] == host(new, 1), row
    row = wait_for(status_row(install, agent_id, dyn, net_d, new), 60, interval=1,
                   what="the dhcp wireless vNIC leased on the new LAN")
    moved_d = str(row["ip_address"])
    assert lan.leases() == {row["mac_address"]: moved_d}
    for address, what in ((moved_s, "the re-homed static vPLC"),
                          (moved_d, "the re-homed dhcp vPLC")):
        reached(lan, address, what)
    assert host_side(lan, link_s, moved_s) == IN_PLACE
    assert host_side(lan, link_d, moved_d) == IN_PLACE
    for old in (ip, leased):
        assert f"{old} " not in f"{proxies(lan)} "
        assert f"{old} " not in sh("ip", "route", "show", "table", "main")

    # Delete: every host-side piece goes; the dhcp vNIC's lease is released.
    for device in (static, dyn):
        ack = install.cloud.send(agent_id, "delete_device", {"device_id": device})
        assert ack["status"] == "deleting", ack
    for device in (static, dyn):
        wait_for(lambda d=device: install.cloud.send(  # type: ignore[misc]
            agent_id, "get_device_status", {"device_id": d}).get("status") == "not_found",
            60, interval=1, what=f"{device} deleted")
    gone = dict.fromkeys(IN_PLACE, False)
    assert host_side(lan, link_s, moved_s) == gone
    assert host_side(lan, link_d, moved_d) == gone
    wait_for(lambda: lan.leases() == {}, 10, "dnsmasq's lease file without the release")


def test_dhcp_macvlan_vnic_leases_first_from_the_agent_container(
        wlan: tuple[DhcpLan, list[str]], docker_client: docker.DockerClient,
        images: dict[str, str], standin_image: str, install: Install,
        request: pytest.FixtureRequest) -> None:
    """The lease-first link of a dhcp vNIC on a MACVLAN parent (docs/dhcp.md) is made on
    the parent in the host's namespace: the runtime is created with the lease as its
    endpoint's fixed address, never with one the engine chose."""
    lan, (block, _new) = wlan
    agent_id, _agent, agent_log = installed(install, docker_client, standin_image, request)
    wait_for(reported(install, agent_id, lan, block), 60, interval=1,
             what=f"{lan.parent} reported on {block}")
    device = f"{install.prefix}md"
    network = f"macvlan_{lan.parent}_{block.replace('/', '_')}"
    ack = install.cloud.send(agent_id, "create_new_runtime", {
        "container_name": device, "runtime_version": "test",
        "vnic_configs": [{"name": "eth0", "parent_interface": lan.parent,
                          "network_mode": "dhcp"}]})
    assert ack["status"] == "creating", ack
    row = wait_for(status_row(install, agent_id, device, network, block), 90, interval=1,
                   what="the dhcp MACVLAN vNIC leased")
    leased = str(row["ip_address"])
    assert lan.leases() == {row["mac_address"]: leased}
    endpoint = docker_client.api.inspect_container(device)["NetworkSettings"]["Networks"][
        network]
    assert (endpoint.get("IPAMConfig") or {}).get("IPv4Address") == leased, endpoint
    assert "no lease before the start" not in agent_log()
    wait_for(lambda: https_ok_from(lan.ns, leased), 30, interval=0.5,
             what="HTTPS from the LAN to the dhcp vPLC")

    ack = install.cloud.send(agent_id, "delete_device", {"device_id": device})
    assert ack["status"] == "deleting", ack
    wait_for(lambda: install.cloud.send(agent_id, "get_device_status", {
        "device_id": device}).get("status") == "not_found", 60, interval=1,
        what=f"{device} deleted")
    wait_for(lambda: lan.leases() == {}, 10, "dnsmasq's lease file without the release")
