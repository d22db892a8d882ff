"""load_json_dir: the loader of the executor's per-runtime record folders."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from common.atomicfile import atomic_write_json, load_json_dir


def _named(path: Path, raw: dict[str, Any]) -> str:
    if raw.get("name") != path.stem:
        raise ValueError(f"names {raw.get('name')!r}")
    return str(raw["name"])


def test_loads_in_name_order_and_sweeps_cut_off_writes(tmp_path: Path) -> None:
    folder = tmp_path / "records"
    atomic_write_json(folder / "b.json", {"name": "b"})
    atomic_write_json(folder / "a.json", {"name": "a"})
    (folder / ".a.json.1.dead.tmp").write_text("{")
    assert load_json_dir(folder, _named, "record") == ["a", "b"]
    assert not list(folder.glob(".*.tmp"))


def test_creates_a_missing_folder(tmp_path: Path) -> None:
    assert load_json_dir(tmp_path / "new", _named, "record") == []
    assert (tmp_path / "new").is_dir()


def test_damaged_records_are_skipped_and_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    atomic_write_json(tmp_path / "good.json", {"name": "good"})
    (tmp_path / "torn.json").write_text('{"name": ')
    atomic_write_json(tmp_path / "list.json", ["not", "an", "object"])
    atomic_write_json(tmp_path / "other.json", {"name": "elsewhere"})
    with caplog.at_level(logging.ERROR, logger="common.atomicfile"):
        assert load_json_dir(tmp_path, _named, "record") == ["good"]
    text = caplog.text
    assert "unreadable record torn.json" in text
    assert "unreadable record list.json: not a JSON object" in text
    assert "unreadable record other.json: names 'elsewhere'" in text
