"""netmon's command line on the shared configuration: flags, environment, log files."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from services.netmon.main import load
from tests.netmon.nsutil import REPO, NetmonProcess


def run_netmon(*args: str, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.netmon", *args], capture_output=True, text=True,
        timeout=30, check=False, cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **(env or {})})


def test_flags_override_environment() -> None:
    config, args = load(["--debounce", "0.5"])
    assert args.debounce == 0.5 and not args.check
    config, _ = load([])
    assert config.state_dir == Path("/var/orchestrator")


def test_environment_sets_state_dir_for_check(tmp_path: Path) -> None:
    result = run_netmon("--check", "--check-timeout", "1", env={"ORCH_STATE_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert str(tmp_path / "netmon.sock") in result.stderr
    assert not (tmp_path / "logs").exists(), "a healthcheck writes no log files"


@pytest.mark.parametrize(("args", "env"), [
    (["--debounce", "-1"], {}),
    ([], {"ORCH_LOG_LEVEL": "LOUD"}),
    ([], {"ORCH_BEAT_INTERVAL": "0"}),
    (["--no-such-flag"], {}),
])
def test_bad_settings_exit_2(args: list[str], env: dict[str, str], tmp_path: Path) -> None:
    result = run_netmon("--state-dir", str(tmp_path), *args, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr


def test_logs_go_to_the_daily_files_of_the_state_dir(netmon: NetmonProcess,
                                                     state_dir: Path) -> None:
    assert netmon.terminate() == 0
    today = dt.date.today().isoformat()
    main_log = state_dir / "logs" / f"orchestrator-logs-{today}.log"
    debug_log = state_dir / "debug" / f"orchestrator-debug-{today}.log"
    assert " netmon[" in main_log.read_text(), "records carry the process name"
    assert "stopping" in main_log.read_text()
    assert debug_log.stat().st_size >= main_log.stat().st_size
