"""install/docker-engine.sh against fake docker, dockerd and apt-get programs.

The real engine on a test machine serves other tests, so the install and
fallback paths are exercised with stand-ins on PATH: a `dockerd` that fails
unless given the storage driver the test allows, a `docker` whose `info`
succeeds once that daemon runs, and an `apt-get` that "installs" dockerd.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.dockerenv import REPO
from testkit.helpers import wait_for

SCRIPT = REPO / "install" / "docker-engine.sh"

FAKE_DOCKERD = """#!/bin/bash
# Runs only with the allowed storage driver ("" = engine default).
driver=""
pidfile=""
for arg in "$@"; do
  case "$arg" in
    --storage-driver=*) driver="${arg#--storage-driver=}" ;;
    --pidfile=*) pidfile="${arg#--pidfile=}" ;;
  esac
done
echo "fake dockerd driver=[$driver]"
if [ "$driver" != "$(cat "$FAKE_STATE/allowed")" ]; then
  echo "error initializing graphdriver: driver not supported"; exit 1
fi
echo $$ > "$pidfile"
echo "${driver:-overlay2}" > "$FAKE_STATE/running"
trap 'rm -f "$FAKE_STATE/running"; exit 0' TERM
for _ in $(seq 600); do sleep 0.1; done
rm -f "$FAKE_STATE/running"
"""

FAKE_DOCKER = """#!/bin/bash
[ -f "$FAKE_STATE/running" ] || exit 1
case "$1" in
  info) [ "$2" = --format ] && cat "$FAKE_STATE/running"; exit 0 ;;
  version) echo fake; exit 0 ;;
esac
exit 0
"""

FAKE_APT = """#!/bin/bash
echo "apt-get $*" >> "$FAKE_STATE/apt.log"
if [ "$1" = install ]; then cp "$FAKE_STATE/dockerd.pending" "$FAKE_BIN/dockerd"; fi
exit 0
"""


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("the script refuses to run without root")
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    _write(bin_dir / "dockerd", FAKE_DOCKERD)
    _write(state / "dockerd.pending", FAKE_DOCKERD)
    _write(bin_dir / "docker", FAKE_DOCKER)
    _write(bin_dir / "apt-get", FAKE_APT)
    (state / "allowed").write_text("")
    env = {
        # No /usr/sbin or /usr/local/bin: only the fakes provide docker programs.
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_STATE": str(state),
        "FAKE_BIN": str(bin_dir),
        "ORCH_DOCKERD_LOG": str(state / "dockerd.log"),
        "ORCH_DOCKERD_PIDFILE": str(state / "docker.pid"),
        "ORCH_DOCKER_WAIT": "10",
    }
    yield env
    pidfile = state / "docker.pid"
    if pidfile.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_starts_engine_with_default_driver(fakes: dict[str, str]) -> None:
    result = _run(fakes)
    assert result.returncode == 0, result.stderr
    assert "engine ready" in result.stderr and "overlay2" in result.stderr
    state = Path(fakes["FAKE_STATE"])
    assert "fake dockerd" in (state / "dockerd.log").read_text()
    # Second run: engine answers, nothing started again.
    again = _run(fakes)
    assert again.returncode == 0 and "already answering" in again.stderr


def test_falls_back_to_vfs(fakes: dict[str, str]) -> None:
    (Path(fakes["FAKE_STATE"]) / "allowed").write_text("vfs")
    result = _run(fakes)
    assert result.returncode == 0, result.stderr
    assert "retrying with vfs" in result.stderr
    assert "WARNING: storage driver is vfs" in result.stderr


def test_installs_when_dockerd_missing(fakes: dict[str, str]) -> None:
    (Path(fakes["FAKE_BIN"]) / "dockerd").unlink()
    result = _run(fakes)
    assert result.returncode == 0, result.stderr
    apt_log = (Path(fakes["FAKE_STATE"]) / "apt.log").read_text().splitlines()
    assert apt_log[0].startswith("apt-get update")
    assert "install" in apt_log[1] and "docker.io" in apt_log[1]


def test_clear_failure_when_engine_cannot_start(fakes: dict[str, str]) -> None:
    (Path(fakes["FAKE_STATE"]) / "allowed").write_text("nothing-works")
    result = _run(fakes)
    assert result.returncode != 0
    assert "ERROR: dockerd failed to start with vfs too" in result.stderr


def test_forced_driver_is_not_second_guessed(fakes: dict[str, str]) -> None:
    env = {**fakes, "ORCH_DOCKER_STORAGE_DRIVER": "btrfs"}
    result = _run(env)
    assert result.returncode != 0
    assert "retrying with vfs" not in result.stderr
    log = Path(fakes["FAKE_STATE"]) / "dockerd.log"
    wait_for(lambda: "driver=[btrfs]" in log.read_text(), 5, what="dockerd log written",
             ignore=(OSError,))
