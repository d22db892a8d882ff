"""The consumption history store: persistence, 48 h trim, bucketing."""

from __future__ import annotations

from pathlib import Path

from services.metrics.history import RETENTION_SECONDS, History


def test_rows_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = History(path)
    for i in range(10):
        store.add(1000.0 + i * 5, float(i), 100.0 + i)
    store.close()
    reopened = History(path)
    assert reopened.count() == 10
    assert reopened.series("cpu", 1000, 1045, 100)[-1] == (1045, 9.0)
    reopened.close()


def test_trim_keeps_exactly_48_hours(tmp_path: Path) -> None:
    store = History(tmp_path / "h.sqlite3")
    now = 1_000_000.0
    store.add(now - RETENTION_SECONDS - 5, 1.0, 1.0)   # too old
    store.add(now - RETENTION_SECONDS + 5, 2.0, 2.0)   # just inside
    store.add(now, 3.0, 3.0)
    assert store.trim(now) == 1
    assert [v for _, v in store.series("cpu", 0, now, 10)] == [2.0, 3.0]
    assert store.trim(now) == 0
    store.close()


def test_series_window_and_bucketing(tmp_path: Path) -> None:
    store = History(tmp_path / "h.sqlite3", interval=1.0)  # one sample a second
    for i in range(100):
        store.add(float(i), float(i), float(2 * i))
    assert [ts for ts, _ in store.series("cpu", 10, 19, 100)] == list(range(10, 20))
    buckets = store.series("memory_mb", 0, 99, 10)
    assert len(buckets) == 10
    assert buckets[0] == (0, sum(2.0 * i for i in range(10)) / 10)
    store.close()
