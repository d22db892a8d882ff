"""The config object and the daily log files."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from common import logs
from common.config import Config, ConfigError
from common.logs import DailyFileHandler, setup_logging


def test_environment_then_flags_override_defaults(tmp_path: Path) -> None:
    env = {"ORCH_STATE_DIR": str(tmp_path), "ORCH_LOG_LEVEL": "debug",
           "ORCH_HEARTBEAT_INTERVAL": "2.5", "ORCH_CA_FILE": "", "HOME": "/home/someone"}
    config, _ = Config.load([], env)
    assert config.state_dir == tmp_path and config.log_level == "DEBUG"
    assert config.heartbeat_interval == 2.5 and config.ca_file is None
    assert config.cloud_url == "https://api.getedge.me"
    flagged, _ = Config.load(["--log-level", "warning", "--state-dir", "/x"], env)
    assert flagged.log_level == "WARNING" and flagged.state_dir == Path("/x")


@pytest.mark.parametrize(("env", "message"), [
    ({"ORCH_METRICS_INTERVAL": "-1"}, "metrics_interval"),
    ({"ORCH_HEARTBEAT_INTERVAL": "soon"}, "ORCH_HEARTBEAT_INTERVAL"),
    ({"ORCH_LOG_LEVEL": "LOUD"}, "log level"),
    ({"ORCH_DHCP_LEASE_CAP": "-5"}, "dhcp_lease_cap"),
    ({"ORCH_RUN_DIR": "/" + "x" * 100}, "too long"),
])
def test_bad_settings_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.load([], env)


def test_config_is_frozen() -> None:
    config, _ = Config.load([], {})
    with pytest.raises(AttributeError):
        config.log_level = "DEBUG"  # type: ignore[misc]


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("t", level, __file__, 1, message, None, None)


def test_daily_file_appends_and_retention_prunes(tmp_path: Path) -> None:
    today = dt.date.today()
    old = tmp_path / f"orchestrator-logs-{today - dt.timedelta(days=20)}.log"
    recent = tmp_path / f"orchestrator-logs-{today - dt.timedelta(days=2)}.log"
    unrelated = tmp_path / "notes.log"
    for path in (old, recent, unrelated):
        path.write_text("x\n")
    current = tmp_path / f"orchestrator-logs-{today}.log"
    current.write_text("from an earlier run\n")
    handler = DailyFileHandler(tmp_path, "orchestrator-logs", 14, 1 << 20)
    handler.emit(_record("hello"))
    handler.close()
    assert current.read_text().splitlines() == ["from an earlier run", "hello"]
    assert not old.exists() and recent.exists() and unrelated.exists()


def test_size_cap_stops_a_runaway_log(tmp_path: Path) -> None:
    handler = DailyFileHandler(tmp_path, "orchestrator-debug", 14, 2000)
    for i in range(500):
        handler.emit(_record(f"line {i} " + "x" * 40))
    handler.close()
    path = tmp_path / f"orchestrator-debug-{dt.date.today()}.log"
    text = path.read_text()
    assert path.stat().st_size < 2200 and "size cap reached" in text


def test_setup_logging_writes_both_files_at_their_levels(tmp_path: Path) -> None:
    config, _ = Config.load([], {"ORCH_STATE_DIR": str(tmp_path), "ORCH_LOG_LEVEL": "INFO"})
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        setup_logging(config, "unit")
        logging.getLogger("unit.test").debug("only in debug")
        logging.getLogger("unit.test").info("in both")
        for handler in root.handlers:
            handler.flush()
        day = dt.date.today()
        main = (tmp_path / "logs" / f"orchestrator-logs-{day}.log").read_text()
        debug = (tmp_path / "debug" / f"orchestrator-debug-{day}.log").read_text()
        assert "in both" in main and "only in debug" not in main
        assert "in both" in debug and "only in debug" in debug
        assert "unit[" in main  # process name and pid on every line
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_a_record_is_formatted_once_for_all_its_handlers(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    formatter = logs.OnceFormatter(logs.FORMAT)
    stamps = []
    real = formatter.formatTime
    monkeypatch.setattr(formatter, "formatTime",
                        lambda record, datefmt=None: stamps.append(1) or real(record, datefmt))
    record = _record("hello")
    lines = {formatter.format(record) for _ in range(3)}
    assert len(lines) == 1 and lines.pop().endswith("t: hello") and len(stamps) == 1
    # Another formatter (another format) does not take the first one's line.
    other = logs.OnceFormatter("%(levelname)s|%(message)s")
    assert other.format(record) == "INFO|hello"


def test_size_cap_counts_what_other_processes_append(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    handler = DailyFileHandler(tmp_path, "orchestrator-logs", 14, 2000)
    handler.emit(_record("first"))
    path = tmp_path / f"orchestrator-logs-{dt.date.today()}.log"
    with path.open("a") as other:  # another program's lines, filling the file to the cap
        other.write("y" * 1990 + "\n")
    monkeypatch.setattr(logs, "SIZE_RECHECK", 0.0)  # the recheck period has passed
    handler.emit(_record("second"))
    handler.close()
    text = path.read_text()
    assert "second" not in text and "size cap reached" in text
