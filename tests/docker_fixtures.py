"""Session fixtures for tests that need the Docker engine and the stand-in image.

Import them into a conftest: `from tests.docker_fixtures import docker_client, standin_image`.
The engine is started (or installed) when it does not answer, so a missing
engine is an error, not a silent skip.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker
import pytest

from testkit import dockerenv


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        dockerenv.ensure_engine()
    except dockerenv.DockerEnvError as exc:
        pytest.fail(f"Docker engine unavailable: {exc}", pytrace=False)
    dc = dockerenv.client()
    yield dc
    # What this session's tests and agents left behind (a test's own finalizers come
    # first; this catches what an interrupted or failed cleanup missed).
    try:
        dockerenv.remove_test_objects(dc, session=dockerenv.SESSION)
    finally:
        with contextlib.suppress(Exception):
            dc.close()


@pytest.fixture(scope="session")
def standin_image(docker_client: docker.DockerClient) -> str:
    """Tag of the runtime stand-in image, built if missing or stale."""
    try:
        return dockerenv.ensure_standin_image(docker_client)
    except dockerenv.DockerEnvError as exc:
        pytest.fail(str(exc), pytrace=False)
