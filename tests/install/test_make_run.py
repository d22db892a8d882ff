"""`make run` (install/run-local.sh) out of the box: the printed create, status poll and
run_command work as printed, against the stand-in runtime and the demo LAN, and the LAN
is gone after Ctrl-C.

The development cloud, state, bus and credentials go to private places and free ports
(the ORCH_DEVCLOUD_* settings), so a developer's own `make run` is not disturbed; the
demo LAN has fixed names, so this test holds the Docker lock like every other.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from testkit import dockerenv
from testkit.executor import cleanup_instance
from testkit.helpers import short_tmpdir, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

RUN_LOCAL = dockerenv.REPO / "install" / "run-local.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True,
                          check=False).returncode == 0


def netns_exists(name: str) -> bool:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         check=False).stdout
    return any(line.split()[0] == name for line in out.splitlines() if line.strip())


class RunLocal:
    def __init__(self, base: Path) -> None:
        self.env = {**os.environ,
                    "ORCH_STATE_DIR": str(base / "state"), "ORCH_RUN_DIR": str(base / "run"),
                    "ORCH_DEVCLOUD_DIR": str(base / "cloud"),
                    "ORCH_DEVCLOUD_MTLS_DIR": str(base / "mtls"),
                    "ORCH_DEVCLOUD_PORT": str(free_port()),
                    "ORCH_DEVCLOUD_PROVISION_PORT": str(free_port()),
                    "ORCH_DEVCLOUD_ADMIN_PORT": str(free_port())}
        self.env.pop("ORCH_CLOUD_URL", None)
        self.env.pop("ORCH_RUNTIME_IMAGE", None)
        self.proc = subprocess.Popen([str(RUN_LOCAL)], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, marker: str, timeout: float) -> list[str]:
        """Lines up to and including the first that contains `marker`."""
        deadline = timeout
        while True:
            try:
                line = self.lines.get(timeout=deadline)
            except queue.Empty:
                raise AssertionError(f"no {marker!r} in:\n" + "\n".join(self.seen)) from None
            self.seen.append(line)
            if marker in line:
                return self.seen

    def connected(self, agent_id: str) -> bool:
        result = subprocess.run([str(RUN_LOCAL), "cloud", "agents", "--json"], env=self.env,
                                text=True, capture_output=True, timeout=30, check=False)
        agents = json.loads(result.stdout) if result.returncode == 0 else []
        return any(a["id"] == agent_id and a["connected"] for a in agents)

    def cloud(self, command: str, timeout: float = 60) -> dict[str, Any]:
        """Run one printed `install/run-local.sh cloud send ...` line; its ack."""
        argv = shlex.split(command)
        assert argv[0] == "install/run-local.sh" and argv[1] == "cloud", command
        result = subprocess.run([str(RUN_LOCAL), *argv[1:]], env=self.env, text=True,
                                capture_output=True, timeout=timeout, check=False)
        assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
        ack: dict[str, Any] = json.loads(result.stdout)
        return ack

    def stop(self) -> int:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)


@pytest.fixture
def run_local(docker_client: docker.DockerClient, standin_image: str) -> Iterator[RunLocal]:
    with short_tmpdir("oatmr") as base:
        run = RunLocal(base)
        try:
            yield run
        finally:
            run.stop()
            instance = (base / "state" / "instance_id")
            if instance.exists():
                cleanup_instance(docker_client, instance.read_text().strip())


def test_make_run_examples_work_as_printed(run_local: RunLocal) -> None:
    lines = run_local.until("delete_device", 240)
    assert link_exists("oatdemo0") and netns_exists("oatdemo")
    device = f"oat-mkrun-{uuid.uuid4().hex[:6]}"
    printed = {name: next(ln.strip() for ln in lines if f" {name} " in ln)
               for name in ("create_new_runtime", "get_device_status", "run_command")}
    commands = {name: line.replace('"plc-1"', f'"{device}"') for name, line in printed.items()}
    assert '"parent_interface":"oatdemo0"' in commands["create_new_runtime"]

    agent_id = shlex.split(commands["create_new_runtime"])[3]
    wait_for(lambda: run_local.connected(agent_id), 60, interval=1, what="agent connected")
    ack = run_local.cloud(commands["create_new_runtime"])
    assert ack["status"] == "creating", ack

    def running() -> dict[str, Any] | None:
        status = run_local.cloud(commands["get_device_status"])
        return status if status.get("container_status") == "running" else None
    status = wait_for(running, 120, interval=2, what="the vPLC running")
    assert any(n.startswith("macvlan_oatdemo0_") for n in status["networks"]), status

    reply = run_local.cloud(commands["run_command"])
    assert reply["status"] == "success", reply
    assert reply["http_response"]["status_code"] == 200, reply

    assert run_local.stop() == 0
    assert not link_exists("oatdemo0") and not netns_exists("oatdemo")
