"""install/install.sh on this machine's engine against a development cloud.

One scenario walks an installation through its life (fresh install, re-run, upgrade,
uninstall), since each step needs the previous one; the failure tests each start from
nothing and check that nothing is left behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.models.containers
import pytest

from testkit import dockerenv
from testkit.helpers import wait_for
from tests.install.conftest import Install, Lan, bridge_gateway

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

MACS = ("02:00:c0:00:02:0a", "02:00:c0:00:02:4a")


def container(dc: docker.DockerClient, name: str) -> docker.models.containers.Container | None:
    try:
        return dc.containers.get(name)
    except docker.errors.NotFound:
        return None


def volume_exists(dc: docker.DockerClient, name: str) -> bool:
    try:
        dc.volumes.get(name)
        return True
    except docker.errors.NotFound:
        return False


def health(c: docker.models.containers.Container) -> str:
    c.reload()
    return str(c.attrs["State"].get("Health", {}).get("Status", "none"))


def agent_id_of(result_out: str) -> str:
    line = next(ln for ln in result_out.splitlines() if "done: agent " in ln)
    return line.split("done: agent ")[1].split(",")[0]


def live_macs(c: docker.models.containers.Container) -> set[str]:
    code, out = c.exec_run(["sh", "-c", "cat /sys/class/net/*/address"])
    assert code == 0, out
    return set(out.decode().split())


def history(agent: docker.models.containers.Container, device: str) -> tuple[int, float]:
    """(rows, earliest timestamp) of the device's consumption history."""
    code, out = agent.exec_run(["python", "-c", (
        "import sqlite3,sys; db=sqlite3.connect('file:/var/orchestrator/consumption.sqlite3"
        "?mode=ro', uri=True); print(*db.execute('select count(*), coalesce(min(ts),0) from "
        "device_samples where device_id=?', (sys.argv[1],)).fetchone())"), device])
    assert code == 0, out
    rows, first = out.decode().split()
    return int(rows), float(first)


@pytest.fixture
def rebuilt_agent(docker_client: docker.DockerClient, images: dict[str, str]) -> Iterator[str]:
    """A rebuild of the agent image: same contents, another image id and tag."""
    tag = f"oat-inst-agent:{uuid.uuid4().hex[:8]}"
    dockerfile = f"FROM {images['agent']}\nLABEL orchestrator.test.rebuild={tag}\n"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag,
                               labels=dockerenv.TEST_LABELS, pull=False, rm=True)
    yield tag
    with contextlib.suppress(docker.errors.APIError):
        docker_client.images.remove(tag, force=True)


def wait_ready(dc: docker.DockerClient, install: Install) -> None:
    for name in (install.agent, install.netmon):
        c = container(dc, name)
        assert c is not None, name
        wait_for(lambda c=c: health(c) == "healthy", 90, interval=1, what=f"{name} healthy")


def create_vplc(install: Install, agent_id: str, lans: list[Lan]) -> str:
    device = f"{install.prefix}plc"
    vnics = [{"name": f"eth{n}", "parent_interface": lan.parent, "network_mode": "manual",
              "ip_address": lan.addr(10), "subnet": "255.255.255.192",
              "gateway": lan.addr(1), "mac_address": mac}
             for n, (lan, mac) in enumerate(zip(lans, MACS, strict=True))]
    ack = install.cloud.send(agent_id, "create_new_runtime", {
        "container_name": device, "runtime_version": "test", "vnic_configs": vnics})
    assert ack["status"] == "creating", ack

    def running() -> dict[str, Any] | None:
        status = install.cloud.send(agent_id, "get_device_status", {"device_id": device})
        return status if status.get("container_status") == "running" else None
    status = wait_for(running, 120, interval=2, what="vPLC running")
    assert len(status["networks"]) == 2, status
    return device


def test_install_rerun_upgrade_uninstall(docker_client: docker.DockerClient,
                                         images: dict[str, str], standin_image: str,
                                         lans: list[Lan], install: Install,
                                         rebuilt_agent: str) -> None:
    dc = docker_client
    options = ("--runtime-image", standin_image.split(":")[0],
               "--agent-env", "ORCH_PULL_POLICY=missing")

    # Fresh install: both containers up, healthy, connected and heartbeating.
    result = install.run(*options)
    assert result.returncode == 0
    agent_id = agent_id_of(result.stdout)
    wait_ready(dc, install)
    agent, netmon = container(dc, install.agent), container(dc, install.netmon)
    assert agent is not None and netmon is not None
    host = agent.attrs["HostConfig"]
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert host["PidMode"] == "host"
    assert {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_PTRACE"} <= {
        c if c.startswith("CAP_") else f"CAP_{c}" for c in host["CapAdd"]}
    assert "apparmor=unconfined" in (host.get("SecurityOpt") or [])
    assert "/var/run/docker.sock:/var/run/docker.sock" in host["Binds"]
    assert netmon.attrs["HostConfig"]["NetworkMode"] == "host"
    assert netmon.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    seen = install.cloud.agent(agent_id)
    assert seen is not None and seen["connected"]
    beats = seen["heartbeat_count"]
    wait_for(lambda: install.cloud.agent(agent_id)["heartbeat_count"] >= beats + 2,  # type: ignore[index]
             30, interval=1, what="two more heartbeats")

    # The identity lives in the volume: 0700 directory, 0600 files.
    mtls = Path(dc.volumes.get(install.volume).attrs["Mountpoint"]) / "mtls"
    assert stat.S_IMODE(mtls.stat().st_mode) == 0o700
    for name in ("client.key", "client.crt", "ca.crt"):
        assert stat.S_IMODE((mtls / name).stat().st_mode) == 0o600, name

    # A vPLC created from the cloud runs, with the requested MACs.
    device = create_vplc(install, agent_id, lans)
    plc = container(dc, device)
    assert plc is not None
    assert set(MACS) <= live_macs(plc)
    wait_for(lambda: history(agent, device)[0] >= 2, 60, interval=2, what="history rows")  # type: ignore[arg-type]
    rows_before, first_before = history(agent, device)

    # Re-run: nothing changes.
    before = {c.name: (c.id, c.attrs["State"]["StartedAt"]) for c in (agent, netmon)}
    result = install.run(*options)
    assert result.returncode == 0
    assert "already enrolled" in result.stdout and "up to date, running" in result.stdout
    for c in (agent, netmon):
        c.reload()
    assert {c.name: (c.id, c.attrs["State"]["StartedAt"]) for c in (agent, netmon)} == before

    # Upgrade to a rebuilt image: new agent container, same identity, vPLC, MACs, history.
    started = time.monotonic()
    result = install.run(*options, "--upgrade", "--agent-image", rebuilt_agent)
    print(f"upgrade took {time.monotonic() - started:.1f} s")
    assert result.returncode == 0
    assert agent_id_of(result.stdout) == agent_id
    upgraded = container(dc, install.agent)
    assert upgraded is not None and upgraded.id != agent.id
    assert upgraded.image.id == dc.images.get(rebuilt_agent).id
    assert health(upgraded) == "healthy"
    assert install.cloud.agent(agent_id)["connected"]  # type: ignore[index]
    plc.reload()
    assert plc.status == "running" and set(MACS) <= live_macs(plc)
    rows_after, first_after = history(upgraded, device)
    assert rows_after >= rows_before and first_after == first_before
    status = install.cloud.send(agent_id, "get_device_status", {"device_id": device})
    assert status["container_status"] == "running", status

    # Uninstall: agent and sidecar gone; the volume and the vPLC stay.
    result = install.run("--uninstall", bare=True)
    assert result.returncode == 0
    assert container(dc, install.agent) is None and container(dc, install.netmon) is None
    assert volume_exists(dc, install.volume)
    plc.reload()
    assert plc.status == "running"


def assert_nothing_left(dc: docker.DockerClient, install: Install) -> None:
    assert not dc.containers.list(all=True, filters={"name": install.prefix})
    assert not volume_exists(dc, install.volume)


def test_provisioning_down_fails_cleanly(docker_client: docker.DockerClient,
                                         images: dict[str, str], install: Install) -> None:
    result = install.run("--provision-url", "https://127.0.0.1:9", timeout=120)
    assert result.returncode == 1
    assert 'FAILED at step "mTLS identity"' in result.stderr
    assert "enrolment at https://127.0.0.1:9 failed" in result.stderr
    assert "what to do:" in result.stderr
    assert_nothing_left(docker_client, install)


def path_without_docker(tmp: Path) -> str:
    """A PATH of links to every program on the usual PATH except docker and dockerd."""
    for directory in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin",
                      "/bin"):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            link = tmp / entry.name
            if entry.name in ("docker", "dockerd") or link.exists() or link.is_symlink():
                continue
            link.symlink_to(entry.path)
    return str(tmp)


def test_docker_missing_fails_cleanly(docker_client: docker.DockerClient, install: Install,
                                      tmp_path: Path) -> None:
    # No docker on PATH, and a package installer that fails: nothing is installed.
    env = {"PATH": path_without_docker(tmp_path), "ORCH_INSTALL_APT_GET": "false"}
    result = install.run(env=env, timeout=60)
    assert result.returncode == 1
    assert 'FAILED at step "checking Docker"' in result.stderr
    assert "installing docker.io" in result.stderr
    assert_nothing_left(docker_client, install)


def test_no_macvlan_fails_cleanly(docker_client: docker.DockerClient, install: Install) -> None:
    result = install.run(env={"ORCH_INSTALL_ASSUME_NO_MACVLAN": "1"}, timeout=60)
    assert result.returncode == 1
    assert 'FAILED at step "checking the system"' in result.stderr
    assert "macvlan" in result.stderr and "CONFIG_MACVLAN" in result.stderr
    assert_nothing_left(docker_client, install)


def test_agent_that_never_connects_is_rolled_back(docker_client: docker.DockerClient,
                                                  images: dict[str, str],
                                                  install: Install) -> None:
    # Enrolment works, but the cloud link cannot come up: the containers this run started
    # and the volume it created are removed again.
    result = install.run("--cloud-url", f"https://{bridge_gateway()}:9", "--wait", "25",
                         timeout=180)
    assert result.returncode == 1
    assert 'FAILED at step "waiting for the agent' in result.stderr
    assert "cloud link not up" in result.stderr
    assert "rolled back: removed container" in result.stdout
    assert_nothing_left(docker_client, install)


def test_failed_upgrade_puts_the_previous_agent_back(docker_client: docker.DockerClient,
                                                     images: dict[str, str],
                                                     install: Install) -> None:
    assert install.run().returncode == 0
    before = container(docker_client, install.agent)
    assert before is not None
    # Every program refuses a negative interval: the new agent never becomes healthy.
    result = install.run("--upgrade", "--agent-env", "ORCH_METRICS_INTERVAL=-1",
                         "--wait", "20", timeout=180)
    assert result.returncode == 1
    assert 'FAILED at step "waiting for the agent' in result.stderr
    assert "runs its previous container again" in result.stdout
    after = container(docker_client, install.agent)
    assert after is not None and after.id == before.id and after.status == "running"
    assert container(docker_client, f"{install.agent}.previous") is None
    assert volume_exists(docker_client, install.volume)
