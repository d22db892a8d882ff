"""The netmon image on a test bridge: healthcheck, discovery over the shared socket."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.models.containers
import docker.models.networks
import pytest

from services.netbridge.netmon_client import NetmonClient
from testkit import dockerenv
from testkit.helpers import async_wait_for, short_tmpdir, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

Run = Callable[..., docker.models.containers.Container]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """The state directory the sidecar and this test share (a bind mount)."""
    with short_tmpdir("oatnm") as path:
        yield path


async def read_cache(path: Path, timeout: float) -> dict[str, dict[str, Any]]:
    """Run the netbridge's own client against the socket until it holds a discovery."""
    client = NetmonClient(path, backoff_max=0.5)
    task = asyncio.create_task(client.run())
    try:
        await async_wait_for(lambda: not client.stale, timeout, "a discovery from netmon")
        return dict(client.interfaces)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_netmon_image_healthy_and_reports_its_eth0(
        images: dict[str, str], containers: Run, shared_dir: Path,
        test_bridge: docker.models.networks.Network) -> None:
    netmon = containers(images["netmon"], network=test_bridge.name,
                        volumes={str(shared_dir): {"bind": "/var/orchestrator", "mode": "rw"}})

    def health() -> bool:
        netmon.reload()
        state = netmon.attrs["State"]
        assert state["Status"] == "running", netmon.logs()[-2000:]
        return bool(state["Health"]["Status"] == "healthy")
    wait_for(health, 60, interval=0.5, what="netmon healthy", ignore=(Exception,))
    assert netmon.attrs["HostConfig"]["NetworkMode"] == test_bridge.name

    # Open to the agent image's group (gid 10001) only, not to everyone (docs/netmon.md).
    info = (shared_dir / "netmon.sock").stat()
    assert (info.st_mode & 0o777, info.st_gid) == (0o660, 10001)
    cache = asyncio.run(read_cache(shared_dir / "netmon.sock", 10))
    assert "eth0" in cache, cache
    eth0 = cache["eth0"]
    test_bridge.reload()
    ipam = test_bridge.attrs["IPAM"]["Config"][0]
    endpoint = netmon.attrs["NetworkSettings"]["Networks"][test_bridge.name]
    (addr,) = eth0["ipv4_addresses"]
    assert addr["address"] == endpoint["IPAddress"]
    assert addr["subnet"] == str(ipaddress.ip_network(ipam["Subnet"]))
    assert eth0["gateway"] == endpoint["Gateway"]
    assert eth0["operstate"] == "UP"

    # Its logs land in the shared state directory, next to the agent's.
    (log_file,) = (shared_dir / "logs").glob("orchestrator-logs-*.log")
    assert " netmon[" in log_file.read_text()

    netmon.stop(timeout=20)
    netmon.reload()
    assert netmon.attrs["State"]["ExitCode"] == 0
    assert not (shared_dir / "netmon.sock").exists(), "a clean stop removes the socket"


def test_netmon_image_carries_only_what_netmon_needs(docker_client: docker.DockerClient,
                                                     images: dict[str, str]) -> None:
    def python(code: str) -> bytes:
        out: bytes = docker_client.containers.run(
            images["netmon"], ["python", "-c", code], remove=True,
            labels=dockerenv.TEST_LABELS, network_disabled=True)
        return out
    assert python("import pyroute2, services.netmon.main; print('ok')").strip() == b"ok"
    missing = python(
        "import importlib.util as u; "
        "print(sorted(m for m in ('zmq', 'docker', 'cryptography', 'supervisor', "
        "'services.gateway', 'services.netbridge') if u.find_spec(m)))")
    assert missing.strip() == b"[]"
