"""The agent image: supervisord with the four programs, the tap, clean stop, FATAL exit."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import docker
import docker.models.containers
import docker.models.networks
import pytest

from common.version import __version__
from testkit import dockerenv
from testkit.helpers import wait_for
from testkit.suite import PROGRAMS
from tests.images.conftest import build_images

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]

Run = Callable[..., docker.models.containers.Container]
STOP_TIMEOUT = 20


def agent_kwargs(volume: str, **environment: str) -> dict[str, Any]:
    # Default bridge network: the agent never needs the host's.
    return {"volumes": {"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
                        volume: {"bind": "/var/orchestrator", "mode": "rw"}},
            "environment": environment, "stop_signal": "SIGTERM"}


def exec_out(container: docker.models.containers.Container, *cmd: str) -> tuple[int, str]:
    code, out = container.exec_run(list(cmd))
    return code, out.decode(errors="replace")


def wait_all_running(container: docker.models.containers.Container) -> str:
    def running() -> str | None:
        code, out = exec_out(container, "supervisorctl", "status")
        states = dict(line.split()[:2] for line in out.splitlines() if line.strip())
        return out if code == 0 and all(states.get(p) == "RUNNING" for p in PROGRAMS) else None
    return wait_for(running, 30, interval=0.5, what="all programs RUNNING", ignore=(Exception,))


def test_images_build_and_rebuild_idempotently(docker_client: docker.DockerClient,
                                               images: dict[str, str]) -> None:
    before = {k: docker_client.images.get(tag).id for k, tag in images.items()}
    result = build_images()
    assert result.returncode == 0, result.stderr
    assert {k: docker_client.images.get(tag).id for k, tag in images.items()} == before
    for component, tag in images.items():
        labels = docker_client.images.get(tag).labels
        assert labels["orchestrator.component"] == component
        assert labels["org.opencontainers.image.version"] == __version__
    agent = docker_client.images.get(images["agent"]).attrs["Config"]
    assert agent["StopSignal"] == "SIGTERM"
    assert {"ORCH_STATE_DIR=/var/orchestrator", "ORCH_RUN_DIR=/run/orchestrator"} <= set(
        agent["Env"])


def test_agent_runs_the_suite_and_the_tap_sees_the_bus(images: dict[str, str], containers: Run,
                                                       volume: str) -> None:
    agent = containers(images["agent"], **agent_kwargs(volume))
    status = wait_all_running(agent)
    assert "fatalwatch" in status
    agent.reload()
    assert agent.attrs["HostConfig"]["NetworkMode"] != "host"

    code, out = exec_out(agent, "orchestrator-tap", "--count", "5", "--json", "--seconds", "20")
    assert code == 0, out
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 5
    assert {r["source"] for r in records} <= set(PROGRAMS)
    assert all(r["topic"].count(".") >= 1 and isinstance(r["body"], dict) for r in records)

    # Root's, shared with the agent group only (setgid: sockets inherit the group).
    code, out = exec_out(agent, "stat", "-c", "%a %U %G", "/run/orchestrator")
    assert out.strip() == "2770 root orchestrator"
    # Logs land in the state volume.
    code, out = exec_out(agent, "sh", "-c", "cat /var/orchestrator/logs/orchestrator-logs-*.log")
    assert code == 0 and "netbridge 0" in out and "started" in out


def test_docker_stop_is_clean(images: dict[str, str], containers: Run, volume: str) -> None:
    agent = containers(images["agent"], **agent_kwargs(volume))
    wait_all_running(agent)
    started = time.monotonic()
    agent.stop(timeout=STOP_TIMEOUT)
    took = time.monotonic() - started
    agent.reload()
    state = agent.attrs["State"]
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 0, agent.logs()[-3000:]
    assert took < STOP_TIMEOUT, f"stop took {took:.1f}s: killed, not stopped"
    logs = agent.logs().decode(errors="replace")
    for program in PROGRAMS:
        assert f"stopped: {program} (exit status 0)" in logs, logs[-3000:]


def test_fatal_program_makes_the_container_exit(images: dict[str, str], containers: Run,
                                                volume: str) -> None:
    # Every program refuses a negative interval, so they all go FATAL after their retries.
    agent = containers(images["agent"], restart_policy={"Name": "unless-stopped"},
                       **agent_kwargs(volume, ORCH_METRICS_INTERVAL="-1"))

    def restarted() -> bool:
        agent.reload()
        return bool(agent.attrs["RestartCount"] >= 1)
    wait_for(restarted, 90, interval=0.5, what="the container to exit and restart",
             ignore=(Exception,))
    logs = agent.logs().decode(errors="replace")
    assert "is FATAL; stopping supervisord" in logs, logs[-3000:]
    assert "metrics_interval must be positive" in logs


def test_health_follows_the_supervised_programs(images: dict[str, str], containers: Run,
                                                volume: str) -> None:
    # The image's own health command, checked every 2 s instead of every 10 s.
    config = dockerenv.client().images.get(images["agent"]).attrs["Config"]["Healthcheck"]
    assert config["Test"][:2] == ["CMD", "orchestrator-health"]
    agent = containers(images["agent"], healthcheck={"interval": 2 * 10**9, "retries": 1},
                       **agent_kwargs(volume))

    def status() -> str:
        agent.reload()
        return str(agent.attrs["State"]["Health"]["Status"])

    def last_output() -> str:
        return str(agent.attrs["State"]["Health"]["Log"][-1]["Output"])

    wait_for(lambda: status() == "healthy", 60, interval=0.5, what="healthy")
    code, out = exec_out(agent, "orchestrator-health")
    assert code == 0 and out.startswith("healthy"), out

    code, out = exec_out(agent, "supervisorctl", "stop", "metrics")
    assert code == 0, out
    code, out = exec_out(agent, "orchestrator-health")
    assert code == 1 and "not RUNNING: metrics STOPPED" in out, out
    wait_for(lambda: status() == "unhealthy", 30, interval=0.5, what="unhealthy")
    # The check that turned it may have begun just before the stop: then it is the
    # missing beat that names metrics.
    assert "metrics" in last_output(), last_output()

    code, out = exec_out(agent, "supervisorctl", "start", "metrics")
    assert code == 0, out
    wait_for(lambda: status() == "healthy", 30, interval=0.5, what="healthy again")

PROCESS_USERS = ("sh", "-c", "for p in /proc/[0-9]*; do "
                 "echo \"$(stat -c %U $p) $(tr '\\0' ' ' < $p/cmdline)\"; done 2>/dev/null; true")


def program_users(container: docker.models.containers.Container) -> dict[str, str]:
    """Program name -> the user its process runs as."""
    code, out = exec_out(container, *PROCESS_USERS)
    assert code == 0, out
    users: dict[str, str] = {}
    for line in out.splitlines():
        user, _, command = line.partition(" ")
        for program in PROGRAMS:
            if f"orchestrator-{program}" in command:
                users[program] = user
    return users


def test_gateway_and_netbridge_run_unprivileged(images: dict[str, str], containers: Run,
                                                volume: str) -> None:
    """Only the programs that need the Docker socket (executor, metrics) run as root;
    the bus still works across the two users and the key check holds for the copy."""
    agent = containers(images["agent"], **agent_kwargs(volume))
    wait_all_running(agent)
    assert program_users(agent) == {"gateway": "orchestrator", "netbridge": "orchestrator",
                                    "executor": "root", "metrics": "root"}
    # The unprivileged user cannot reach the engine's socket.
    code, out = exec_out(agent, "su", "-s", "/bin/sh", "orchestrator", "-c",
                         "test -w /var/run/docker.sock && echo writable || echo refused")
    assert out.strip() == "refused", out
    # Every program reports on the bus, the unprivileged ones included.
    code, out = exec_out(agent, "orchestrator-tap", "--json", "--seconds", "10", "--count",
                         "40", "svc.")
    assert code == 0, out
    sources = {json.loads(line)["source"] for line in out.splitlines()}
    assert sources == set(PROGRAMS), out[-2000:]
    # ... and the unprivileged user reaches the root programs' sockets, as the gateway must.
    code, out = exec_out(agent, "su", "-s", "/bin/sh", "orchestrator", "-c",
                         "/opt/venv/bin/orchestrator-tap --json --seconds 10 --count 40 svc.")
    assert code == 0, out
    sources = {json.loads(line)["source"] for line in out.splitlines()}
    assert {"executor", "metrics"} <= sources, out[-2000:]
    code, out = exec_out(agent, "stat", "-c", "%U %a", "/var/orchestrator/gateway",
                         "/run/orchestrator/mtls")
    # (the copy inherits the run directory's setgid bit, harmless on a 0700 directory)
    assert out.split() == ["orchestrator", "700", "orchestrator", "2700"], out
    # Still RUNNING, not restarting: nothing failed on a permission after its start.
    status = wait_all_running(agent)
    assert "FATAL" not in status and "BACKOFF" not in status
    logs = agent.logs().decode(errors="replace")
    assert "Permission denied" not in logs and "refusing to start" not in logs, logs[-3000:]


def test_unprivileged_netbridge_reads_the_sidecar_socket(
        images: dict[str, str], containers: Run, volume: str,
        test_bridge: docker.models.networks.Network) -> None:
    """The sidecar's socket is 0660 with gid 10001; the agent's netbridge, running as
    `orchestrator` (gid 10001), connects and receives the discovery."""
    containers(images["netmon"], network=test_bridge.name,
               volumes={volume: {"bind": "/var/orchestrator", "mode": "rw"}})
    agent = containers(images["agent"], **agent_kwargs(volume))
    wait_all_running(agent)

    def connected() -> dict[str, Any] | None:
        code, out = exec_out(agent, "orchestrator-tap", "--json", "--seconds", "3",
                             "--count", "1", "svc.netbridge.alive")
        if code != 0 or not out.strip():
            return None
        counters = json.loads(out.splitlines()[0])["body"]["counters"]
        return counters if counters.get("netmon_discoveries", 0) >= 1 else None
    counters = wait_for(connected, 60, interval=1, what="netbridge holding a discovery",
                        ignore=(Exception,))
    assert counters["netmon_connects"] >= 1
    assert program_users(agent)["netbridge"] == "orchestrator"
