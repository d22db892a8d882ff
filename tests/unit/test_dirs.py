"""Run and state directories that another local user prepared in advance are refused.

The attack: a user creates ``/tmp/orchestrator-<uid>`` (or makes it 0777) before the agent
first starts, then reads or replaces the bus sockets the agent binds there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import dirs
from testkit.helpers import short_tmpdir

OTHER_UID = 65534  # nobody
REPO = Path(__file__).resolve().parents[2]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


@pytest.fixture
def base() -> Iterator[Path]:
    with short_tmpdir() as path:
        yield path


def _made(path: Path, mode: int, uid: int | None = None) -> Path:
    path.mkdir()
    path.chmod(mode)
    if uid is not None:
        os.chown(path, uid, -1)
    return path


@needs_root
def test_run_dir_owned_by_another_user_is_refused(base: Path) -> None:
    run = _made(base / "run", 0o700, OTHER_UID)
    with pytest.raises(dirs.UnsafeDirectory, match=r"belongs to .*uid 65534.*in advance"):
        dirs.prepare_run_dir(run)
    # Refused, not taken over: still theirs, still their mode.
    assert run.stat().st_uid == OTHER_UID and (run.stat().st_mode & 0o777) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o755, 0o750, 0o701, 0o1777])
def test_run_dir_open_to_others_is_refused(base: Path, mode: int) -> None:
    run = _made(base / "run", mode)
    with pytest.raises(dirs.UnsafeDirectory, match=f"open to group or others.*{mode & 0o7777:04o}"):
        dirs.prepare_run_dir(run)
    assert (run.stat().st_mode & 0o7777) == mode


def test_run_dir_symlink_is_refused(base: Path) -> None:
    target = _made(base / "elsewhere", 0o700)
    (base / "run").symlink_to(target)
    with pytest.raises(dirs.UnsafeDirectory, match="symbolic link"):
        dirs.prepare_run_dir(base / "run")


def test_proper_run_dirs_are_accepted(base: Path) -> None:
    fresh = base / "a" / "run"
    dirs.prepare_run_dir(fresh)  # created, 0700, ours
    assert (fresh.stat().st_mode & 0o777) == 0o700 and fresh.stat().st_uid == os.geteuid()
    dirs.prepare_run_dir(fresh)  # and accepted as found the next time
    dirs.prepare_run_dir(_made(base / "existing", 0o700))


@needs_root
def test_state_dir_owned_by_another_user_is_refused(base: Path) -> None:
    state = _made(base / "state", 0o755, OTHER_UID)
    with pytest.raises(dirs.UnsafeDirectory, match=r"state directory .* belongs to"):
        dirs.prepare_state_dir(state)


def test_world_writable_state_dir_is_refused_a_private_one_accepted(base: Path) -> None:
    state = _made(base / "state", 0o777)
    with pytest.raises(dirs.UnsafeDirectory, match=r"writable by everyone.*0777"):
        dirs.prepare_state_dir(state)
    state.chmod(0o755)
    dirs.prepare_state_dir(state)
    dirs.prepare_state_dir(base / "new" / "state")
    assert (base / "new" / "state").is_dir()


def _env(base: Path, run: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ORCH_RUN_DIR=str(run), ORCH_STATE_DIR=str(base / "state"),
               ORCH_CLOUD_URL="https://127.0.0.1:9", ORCH_MTLS_DIR=str(base / "mtls"),
               PYTHONPATH=str(REPO))
    return env


@needs_root
@pytest.mark.parametrize("owner", ["another user", "mode 0777"])
def test_a_service_refuses_to_start_on_a_prepared_run_dir(base: Path, owner: str) -> None:
    run = (_made(base / "run", 0o700, OTHER_UID) if owner == "another user"
           else _made(base / "run", 0o777))
    # A refusal is immediate; a gateway that started instead would run until killed.
    done = subprocess.run([sys.executable, "-m", "services.gateway"], env=_env(base, run),
                          capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 3, done.stderr
    assert "refusing to start" in done.stderr and str(run) in done.stderr
    assert list(run.iterdir()) == [], "the service put something into the refused directory"
    assert not (base / "state" / "logs").exists()


def test_the_shell_entry_point_reports_like_the_services(base: Path) -> None:
    bad = _made(base / "run", 0o777)
    cli = [sys.executable, "-m", "common.dirs"]
    refused = subprocess.run([*cli, "run", str(bad)], capture_output=True, text=True,
                             timeout=60, check=False, cwd=REPO)
    assert refused.returncode == 1 and "open to group or others" in refused.stderr
    fine = subprocess.run([*cli, "run", str(base / "ok")], capture_output=True, text=True,
                          timeout=60, check=False, cwd=REPO)
    assert fine.returncode == 0 and (base / "ok").is_dir(), fine.stderr
    usage = subprocess.run([*cli, "bus", str(bad)], capture_output=True, text=True,
                           timeout=60, check=False, cwd=REPO)
    assert usage.returncode == 2


AGENT_GID = 64123  # the agent group of the shared layout; unused on the test host


def _shared(path: Path, mode: int, uid: int = 0, gid: int = AGENT_GID) -> Path:
    path.mkdir()
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


@needs_root
def test_shared_run_dir_rule(base: Path) -> None:
    """With the agent group: root- or self-owned, that group, nothing for others."""
    dirs.check_run_dir(_shared(base / "ok", 0o2770), AGENT_GID)
    for name, mode, uid, gid, words in [
        ("open", 0o2775, 0, AGENT_GID, "open to others"),
        ("group", 0o2770, 0, AGENT_GID + 1, "not the agent group"),
        ("owner", 0o2770, OTHER_UID, AGENT_GID, "neither root nor"),
    ]:
        with pytest.raises(dirs.UnsafeDirectory, match=words):
            dirs.check_run_dir(_shared(base / name, mode, uid, gid), AGENT_GID)
    # Without a group the strict rule stays: a group-shared directory is refused.
    with pytest.raises(dirs.UnsafeDirectory, match="open to group"):
        dirs.check_run_dir(base / "ok")


@needs_root
def test_shared_state_dir_rule(base: Path) -> None:
    dirs.check_state_dir(_shared(base / "ok", 0o750), AGENT_GID)
    with pytest.raises(dirs.UnsafeDirectory, match="writable by everyone"):
        dirs.check_state_dir(_shared(base / "open", 0o777), AGENT_GID)
    with pytest.raises(dirs.UnsafeDirectory, match="not the agent group"):
        dirs.check_state_dir(_shared(base / "group", 0o750, gid=0), AGENT_GID)
