"""Fixtures for the image tests: both images built by install/build-images.sh, and
factories for labelled containers, volumes and bridges that are removed afterwards."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import docker.models.containers
import docker.models.networks
import pytest

from testkit import dockerenv
from tests.docker_fixtures import docker_client

__all__ = ["docker_client"]

AGENT_IMAGE = "orchestrator/agent:local"
NETMON_IMAGE = "orchestrator/netmon:local"
BUILD_SCRIPT = dockerenv.REPO / "install" / "build-images.sh"


def build_images() -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=1200,
                          check=False, cwd=dockerenv.REPO)


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> dict[str, str]:
    """Tags of the agent and netmon images, built (or confirmed up to date) once."""
    try:
        dockerenv.ensure_base_image(docker_client)
    except dockerenv.DockerEnvError as exc:
        pytest.fail(str(exc), pytrace=False)
    result = build_images()
    if result.returncode != 0:
        pytest.fail(f"build-images.sh failed:\n{result.stderr[-4000:]}", pytrace=False)
    return {"agent": AGENT_IMAGE, "netmon": NETMON_IMAGE}


def suffix() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def containers(docker_client: docker.DockerClient) -> Iterator[
        Callable[..., docker.models.containers.Container]]:
    """`run(image, **kwargs)`: a detached, labelled test container named oat-<random>."""
    made: list[docker.models.containers.Container] = []

    def run(image: str, **kwargs: Any) -> docker.models.containers.Container:
        kwargs.setdefault("name", f"oat-{image.split('/')[-1].split(':')[0]}-{suffix()}")
        container = docker_client.containers.run(
            image, detach=True, labels=dockerenv.TEST_LABELS, **kwargs)
        made.append(container)
        return container

    yield run
    for container in made:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


@pytest.fixture
def volume(docker_client: docker.DockerClient) -> Iterator[str]:
    """A labelled named volume; removed after the test's containers."""
    name = f"oat-state-{suffix()}"
    docker_client.volumes.create(name, labels=dockerenv.TEST_LABELS)
    yield name
    # Whatever the fixture order, the volume's test containers go first.
    _remove_containers(docker_client, {"volume": name})
    with contextlib.suppress(docker.errors.NotFound):
        docker_client.volumes.get(name).remove(force=True)


@pytest.fixture
def test_bridge(docker_client: docker.DockerClient) -> Iterator[docker.models.networks.Network]:
    network = dockerenv.create_test_bridge(docker_client, prefix="oat-img")
    yield network
    _remove_containers(docker_client, {"network": network.id})
    with contextlib.suppress(docker.errors.NotFound):
        network.remove()


def _remove_containers(docker_client: docker.DockerClient, filters: dict[str, str]) -> None:
    label = dockerenv.TEST_LABEL
    for container in docker_client.containers.list(all=True,
                                                    filters={**filters, "label": label}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
