"""orchestrator-health without a running suite: unhealthy, with the reason, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from services.tap import health


def test_no_supervisord_is_unhealthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = health.main(["--run-dir", str(tmp_path), "--timeout", "1", "--window", "0.2"])
    assert code == health.EXIT_UNHEALTHY
    assert "supervisord does not answer" in capsys.readouterr().out


def test_silent_processes_are_named(tmp_path: Path) -> None:
    # Nothing publishes on this bus: every agent process is reported silent.
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    try:
        assert health.wait_beats(sock, tmp_path, ["gateway", "executor"], 0.3) == set()
    finally:
        sock.close(linger=0)
        ctx.term()


def test_bad_setting_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert health.main(["--log-level", "INFO", "--run-dir", "/" + "x" * 100]) == \
        health.EXIT_CONFIG
    assert "too long" in capsys.readouterr().err
