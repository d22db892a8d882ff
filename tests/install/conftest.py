"""Fixtures of the installer tests: a development cloud the agent container can reach,
private names for everything the installer makes, and test LANs.

The cloud listens on the address of Docker's default bridge (docker0), which both the
host and the agent container (on that bridge) reach; nothing listens on other host
interfaces.  Container and volume names carry a random `oat-inst-...-` prefix
(`--name-prefix`), so a real install on the same engine is never touched, and every
fixture removes what it made, also when the test failed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from testkit import dockerenv
from testkit.helpers import wait_for
from tests.docker_fixtures import docker_client, standin_image
from tests.images.conftest import images

__all__ = ["docker_client", "images", "standin_image"]

INSTALLER = dockerenv.REPO / "install" / "install.sh"


def bridge_gateway() -> str:
    """The host's address on docker0 (the default bridge's gateway)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "docker0"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[3].split("/")[0]


@dataclass
class Cloud:
    directory: Path
    info: dict[str, Any]

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def provision_url(self) -> str:
        return str(self.info["provision_url"])

    @property
    def ca(self) -> Path:
        return Path(self.info["ca_cert"])

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "devcloud", args[0], "--dir",
                               str(self.directory), *args[1:]],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def agent(self, agent_id: str) -> dict[str, Any] | None:
        result = self.cli("agents", "--json")
        agents = json.loads(result.stdout) if result.returncode == 0 else []
        return next((a for a in agents if a["id"] == agent_id), None)

    def send(self, agent_id: str, topic: str, payload: dict[str, Any],
             timeout: float = 30) -> dict[str, Any]:
        result = self.cli("send", agent_id, topic, json.dumps(payload), "--timeout",
                          str(timeout), timeout=timeout + 15)
        assert result.returncode == 0, f"{topic}: {result.stdout}{result.stderr}"
        ack: dict[str, Any] = json.loads(result.stdout)
        return ack


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    directory = tmp_path_factory.mktemp("cloud")
    host = bridge_gateway()
    subprocess.run([sys.executable, "-m", "devcloud", "init", "--dir", str(directory),
                    "--san", host], capture_output=True, check=True, timeout=60)
    log = open(directory / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "devcloud", "serve", "--dir", str(directory), "--host", host,
         "--san", host, "--port", "0", "--provision-port", "0", "--admin-port", "0"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def running() -> dict[str, Any] | None:
            assert proc.poll() is None, (directory / "serve.log").read_text()
            with contextlib.suppress(OSError, ValueError):
                info: dict[str, Any] = json.loads((directory / "run.json").read_text())
                if info.get("pid") == proc.pid:
                    return info
            return None
        yield Cloud(directory, wait_for(running, 30, interval=0.2, what="devcloud up"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


@dataclass
class Install:
    """Names of one test installation and how to run the installer for it."""

    prefix: str
    cloud: Cloud

    @property
    def agent(self) -> str:
        return f"{self.prefix}orchestrator_agent"

    @property
    def netmon(self) -> str:
        return f"{self.prefix}autonomy_netmon"

    @property
    def volume(self) -> str:
        return f"{self.prefix}orchestrator-shared"

    def args(self, *extra: str) -> list[str]:
        return [str(INSTALLER), "--name-prefix", self.prefix,
                "--cloud-url", self.cloud.url, "--provision-url", self.cloud.provision_url,
                "--ca-file", str(self.cloud.ca), "--no-build", *extra]

    def run(self, *extra: str, env: dict[str, str] | None = None, timeout: float = 300,
            bare: bool = False) -> subprocess.CompletedProcess[str]:
        """The installer with this install's options (`bare`: only `extra`)."""
        argv = [str(INSTALLER), "--name-prefix", self.prefix, *extra] if bare else \
            self.args(*extra)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})}, check=False)
        # Shown by pytest when the test fails.
        print(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}(exit {result.returncode})")
        return result


def instance_of(dc: docker.DockerClient, volume: str) -> str | None:
    with contextlib.suppress(docker.errors.NotFound, OSError):
        mount = dc.volumes.get(volume).attrs["Mountpoint"]
        return (Path(mount) / "instance_id").read_text().strip() or None
    return None


def sweep(dc: docker.DockerClient, install: Install) -> None:
    """Remove everything of this install: its vPLCs and networks, containers, volume."""
    instance = instance_of(dc, install.volume)
    if instance:
        wanted = {"label": [f"orchestrator.instance={instance}"]}
        for container in dc.containers.list(all=True, filters=wanted):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
    for container in dc.containers.list(all=True, filters={"name": install.prefix}):
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True, v=True)
    if instance:
        for network in dc.networks.list(filters={"label": [f"orchestrator.instance={instance}"]}):
            with contextlib.suppress(docker.errors.APIError):
                network.remove()
    with contextlib.suppress(docker.errors.NotFound):
        dc.volumes.get(install.volume).remove(force=True)


@pytest.fixture
def install(docker_client: docker.DockerClient, cloud: Cloud) -> Iterator[Install]:
    made = Install(f"oat-inst-{uuid.uuid4().hex[:6]}-", cloud)
    yield made
    sweep(docker_client, made)


@dataclass
class Lan:
    """A veth pair: `parent` on the host (a MACVLAN parent), its peer in namespace `ns`."""

    parent: str
    ns: str
    subnet: str

    def addr(self, n: int) -> str:
        return str(ipaddress.IPv4Network(self.subnet)[n])


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, text=True, check=True)


@pytest.fixture
def lans() -> Iterator[list[Lan]]:
    """Two test LANs on documentation blocks, removed afterwards."""
    tag = f"{os.getpid() % 10000}i"
    made = [Lan(f"oat{tag}{n}", f"oatns{tag}{n}", subnet)
            for n, subnet in enumerate(("192.0.2.0/26", "192.0.2.64/26"))]
    try:
        for lan in made:
            _ip("netns", "add", lan.ns)
            _ip("link", "add", lan.parent, "type", "veth", "peer", "name", f"{lan.parent}p")
            _ip("link", "set", f"{lan.parent}p", "netns", lan.ns)
            _ip("link", "set", lan.parent, "up")
            net = ipaddress.IPv4Network(lan.subnet)
            _ip("-n", lan.ns, "addr", "add", f"{lan.addr(1)}/{net.prefixlen}", "dev",
                f"{lan.parent}p")
            _ip("-n", lan.ns, "link", "set", f"{lan.parent}p", "up")
        yield made
    finally:
        for lan in made:
            subprocess.run(["ip", "link", "del", lan.parent], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", lan.ns], capture_output=True, check=False)
