"""The watcher's engine-side event filter, against the real engine: a runtime's health
probes (exec_create/exec_start/exec_die every probe) never reach the agent, while the
events the live view needs (create, start, health changes, destroy) do."""

from __future__ import annotations

import time

import docker

from common import labels
from services.executor.engine.events import event_filters
from testkit import dockerenv


def test_health_probe_execs_are_filtered_at_the_engine(docker_client: docker.DockerClient,
                                                       standin_image: str) -> None:
    instance = dockerenv.test_instance("ev")
    since = int(time.time()) - 1
    container = docker_client.containers.run(
        standin_image, detach=True,
        labels={**labels.runtime(instance, "ev-plc", [], "op"), **dockerenv.TEST_LABELS})
    try:
        # The stand-in probes every 5 s: wait for two probes and the change to healthy.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            container.reload()
            if (container.attrs["State"].get("Health") or {}).get("Status") == "healthy":
                break
            time.sleep(0.5)
        time.sleep(6)
    finally:
        container.remove(force=True)
    until = int(time.time()) + 1
    api = docker_client.api
    unfiltered = {labels.MANAGED: "true", labels.INSTANCE: instance}
    everything = [str(e.get("Action")) for e in api.events(
        since=since, until=until, decode=True,
        filters={"label": [f"{k}={v}" for k, v in unfiltered.items()]})]
    watched = [str(e.get("Action")) for e in api.events(
        since=since, until=until, decode=True, filters=event_filters(instance))]
    assert any(a.startswith("exec_") for a in everything), everything  # probes happened
    assert not any(a.startswith("exec_") for a in watched), watched
    for action in ("create", "start", "health_status: healthy", "destroy"):
        assert action in watched, watched
