"""Consumption history: the orchestrator's samples and each device's, one row per sample.

SQLite in WAL mode under the state directory, so the history survives restarts of the
metrics process and a kill -9 loses at most the sample being written.  Rows older than the
retention (48 h) are trimmed.  Not thread-safe: the service calls it from one worker thread.

Tables:

* `samples(ts, cpu, memory_mb)` — the host (`get_consumption_orchestrator`);
* `device_samples(device_id, ts, cpu, memory_mb)` — one runtime container each
  (`get_consumption_device`); CPU in percent of one CPU, memory in MB;
* `device_limits(device_id, memory_bytes, nano_cpus, updated)` — the last limits seen on
  a device's container, so a query can still be answered while the engine is away.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

RETENTION_SECONDS = 48 * 3600
COLUMNS = ("cpu", "memory_mb")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS samples (ts REAL NOT NULL, cpu REAL NOT NULL,"
    " memory_mb REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS samples_ts ON samples(ts)",
    # Clustered on (device, time): queries are always one device over a time range, and
    # without a rowid table plus index the 48 h of fifty devices (860k rows) take about
    # half the space.  Trims by time scan the table, once every few minutes.
    "CREATE TABLE IF NOT EXISTS device_samples (device_id TEXT NOT NULL, ts REAL NOT NULL,"
    " cpu REAL NOT NULL, memory_mb REAL NOT NULL, PRIMARY KEY (device_id, ts)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS device_limits (device_id TEXT PRIMARY KEY,"
    " memory_bytes INTEGER NOT NULL, nano_cpus INTEGER NOT NULL, updated REAL NOT NULL)",
)


class History:
    def __init__(self, path: Path, retention: float = RETENTION_SECONDS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.retention = retention
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self.db.execute(statement)

    # --- the host ---------------------------------------------------------------------

    def add(self, ts: float, cpu: float, memory_mb: float) -> None:
        self.db.execute("INSERT INTO samples VALUES (?, ?, ?)", (ts, cpu, memory_mb))

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def series(self, column: str, start: float, end: float,
               max_points: int) -> list[tuple[int, float]]:
        """(timestamp, value) pairs in [start, end]; averaged into buckets when there are
        more than `max_points`, so a 48 h query stays a reasonable ack."""
        if column not in COLUMNS:
            raise ValueError(column)
        rows = self.db.execute(
            f"SELECT ts, {column} FROM samples WHERE ts >= ? AND ts <= ? ORDER BY ts",
            (start, end),
        ).fetchall()
        return _bucket(rows, max_points)

    # --- devices ----------------------------------------------------------------------

    def add_devices(self, rows: Iterable[tuple[str, float, float, float]]) -> None:
        """Insert (device_id, ts, cpu, memory_mb) rows in one transaction."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO device_samples VALUES (?, ?, ?, ?)",
                                rows)

    def device_series(self, device: str, column: str, start: float, end: float,
                      max_points: int) -> list[tuple[int, float]]:
        if column not in COLUMNS:
            raise ValueError(column)
        rows = self.db.execute(
            f"SELECT ts, {column} FROM device_samples"
            " WHERE device_id = ? AND ts >= ? AND ts <= ? ORDER BY ts",
            (device, start, end),
        ).fetchall()
        return _bucket(rows, max_points)

    def device_count(self, device: str) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM device_samples WHERE device_id = ?",
                              (device,)).fetchone()
        return int(row[0])

    def known_devices(self) -> set[str]:
        """Devices with samples or remembered limits."""
        rows = self.db.execute("SELECT DISTINCT device_id FROM device_samples"
                               " UNION SELECT device_id FROM device_limits").fetchall()
        return {str(r[0]) for r in rows}

    def has_device(self, device: str) -> bool:
        return self.db.execute(
            "SELECT 1 FROM device_limits WHERE device_id = ?"
            " UNION ALL SELECT 1 FROM device_samples WHERE device_id = ? LIMIT 1",
            (device, device)).fetchone() is not None

    def set_limits(self, device: str, memory_bytes: int, nano_cpus: int, now: float) -> None:
        self.db.execute(
            "INSERT INTO device_limits VALUES (?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE"
            " SET memory_bytes = excluded.memory_bytes, nano_cpus = excluded.nano_cpus,"
            " updated = excluded.updated",
            (device, memory_bytes, nano_cpus, now))

    def limits(self, device: str) -> tuple[int, int] | None:
        row = self.db.execute("SELECT memory_bytes, nano_cpus FROM device_limits"
                              " WHERE device_id = ?", (device,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def forget_device(self, device: str) -> int:
        with self.db:
            self.db.execute("BEGIN")
            cur = self.db.execute("DELETE FROM device_samples WHERE device_id = ?", (device,))
            self.db.execute("DELETE FROM device_limits WHERE device_id = ?", (device,))
        return cur.rowcount

    # --- upkeep -----------------------------------------------------------------------

    def trim(self, now: float) -> int:
        cutoff = now - self.retention
        removed = self.db.execute("DELETE FROM samples WHERE ts < ?", (cutoff,)).rowcount
        removed += self.db.execute("DELETE FROM device_samples WHERE ts < ?",
                                   (cutoff,)).rowcount
        return removed

    def close(self) -> None:
        self.db.close()


def _bucket(rows: list[tuple[float, float]], max_points: int) -> list[tuple[int, float]]:
    if len(rows) <= max_points:
        return [(int(ts), value) for ts, value in rows]
    size = -(-len(rows) // max_points)
    out = []
    for i in range(0, len(rows), size):
        chunk = rows[i : i + size]
        out.append((int(chunk[0][0]), sum(v for _, v in chunk) / len(chunk)))
    return out
