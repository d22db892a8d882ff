"""The test session's sweep removes what tests and their agents made, and nothing else:
not a container made from the stand-in image by a person (`make run`)."""

from __future__ import annotations

import contextlib
import uuid

import docker
import docker.errors
import pytest

from testkit import dockerenv

pytestmark = [pytest.mark.docker]

MANAGED = "orchestrator.managed"


def test_standin_image_carries_no_test_label(docker_client: docker.DockerClient,
                                             standin_image: str) -> None:
    labels = docker_client.images.get(standin_image).labels
    assert dockerenv.TEST_LABEL not in labels
    assert labels.get(dockerenv.STANDIN_HASH_LABEL) == dockerenv.standin_sources_hash()


def test_sweep_spares_what_tests_did_not_create(docker_client: docker.DockerClient,
                                                standin_image: str) -> None:
    # A session of its own, so this sweep reaches no other test's objects.
    session = f"z{uuid.uuid4().hex[:5]}"
    tag = uuid.uuid4().hex[:6]
    made: list[docker.models.containers.Container] = []

    def container(name: str, labels: dict[str, str]) -> str:
        made.append(docker_client.containers.create(standin_image, name=f"oat-{name}-{tag}",
                                                    labels=labels))
        return str(made[-1].id)

    # As `make run` would: a person's own container, and a runtime of a person's agent.
    person = container("person", {})
    persons_runtime = container("persons-rt", {MANAGED: "true",
                                               dockerenv.INSTANCE_LABEL: uuid.uuid4().hex[:16]})
    # Made by a test, by a test's agent, and by a test of another session.
    by_test = container("by-test", {dockerenv.TEST_LABEL: session})
    by_agent = container("by-agent", {MANAGED: "true", dockerenv.INSTANCE_LABEL:
                                      f"{dockerenv.TEST_INSTANCE_PREFIX}{session}x{tag}"})
    other_session = container("other", {dockerenv.TEST_LABEL: f"{session}o"})
    network = docker_client.networks.create(f"oat-sweep-{tag}", internal=True,
                                            labels={dockerenv.TEST_LABEL: session})
    try:
        dockerenv.remove_test_objects(docker_client, session=session)
        left = {c.id for c in docker_client.containers.list(all=True)}
        assert {person, persons_runtime, other_session} <= left
        assert not {by_test, by_agent} & left
        with pytest.raises(docker.errors.NotFound):
            docker_client.networks.get(network.id)
    finally:
        for item in made:
            with contextlib.suppress(docker.errors.NotFound):
                item.remove(force=True, v=True)
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()
