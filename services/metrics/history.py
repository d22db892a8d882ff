"""Consumption history: the orchestrator's samples and each device's, one row per sample.

SQLite in WAL mode under the state directory, so the history survives restarts of the
metrics process and a kill -9 loses at most the sample being written.  Rows older than the
retention (48 h) are trimmed.  Not thread-safe: the service calls it from one worker thread.

Tables:

* `samples(ts, cpu, memory_mb)` — the host (`get_consumption_orchestrator`);
* `device_samples(device_id, ts, cpu, memory_mb)` — one runtime container each
  (`get_consumption_device`); CPU in percent of one CPU, memory in MB;
* `device_limits(device_id, memory_bytes, nano_cpus, updated)` — the last limits seen on
  a device's container, so a query can still be answered while the engine is away;
* `minutes(device_id, minute, cpu_sum, mem_sum, n, first_ts)` — per-minute sums of the
  same samples (the host under device_id ''), kept as samples are added: a series of
  minute-or-coarser buckets reads at most 2,880 rows for 48 h instead of 34,560, so a
  48 h answer stays within a few milliseconds with a hundred devices recorded.

Series are downsampled to at most `MAX_POINTS` points (`resolution`): each point is the
mean of the samples in its bucket, stamped with the first sample's time.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RETENTION_SECONDS = 48 * 3600
COLUMNS = ("cpu", "memory_mb")
_SUMS = {"cpu": "cpu_sum", "memory_mb": "mem_sum"}  # a column's total in `minutes`
Series = list[tuple[int, float]]
Usage = tuple[Series, Series]  # (cpu, memory_mb)
# Downsampling of the series a query returns: at most MAX_POINTS per series by default,
# in buckets of the finest step here that fits (samples are taken every 5 s).
MAX_POINTS = 360
SAMPLE_SECONDS = 5.0
STEPS = (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)

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
    "CREATE TABLE IF NOT EXISTS minutes (device_id TEXT NOT NULL, minute INTEGER NOT NULL,"
    " cpu_sum REAL NOT NULL, mem_sum REAL NOT NULL, n INTEGER NOT NULL,"
    " first_ts REAL NOT NULL, PRIMARY KEY (device_id, minute)) WITHOUT ROWID",
)
HOST = ""  # the host's key in `minutes`
_ROLL_UP = (
    "INSERT INTO minutes VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT(device_id, minute) DO UPDATE"
    " SET cpu_sum = cpu_sum + excluded.cpu_sum, mem_sum = mem_sum + excluded.mem_sum,"
    " n = n + 1, first_ts = MIN(first_ts, excluded.first_ts)")
# A history written before the `minutes` table existed gets it filled once, at open.
_BACKFILL = (
    "INSERT INTO minutes SELECT ?, CAST(ts / 60 AS INTEGER) * 60, SUM(cpu), SUM(memory_mb),"
    " COUNT(*), MIN(ts) FROM samples GROUP BY 2",
    "INSERT INTO minutes SELECT device_id, CAST(ts / 60 AS INTEGER) * 60, SUM(cpu),"
    " SUM(memory_mb), COUNT(*), MIN(ts) FROM device_samples GROUP BY 1, 2",
)


class History:
    def __init__(self, path: Path, retention: float = RETENTION_SECONDS,
                 interval: float = SAMPLE_SECONDS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.retention = retention
        self.interval = interval  # the finest bucket: one sample each
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # Queries read a few thousand rows at most: 1 MiB of page cache (2 MiB by default)
        # is plenty, and it is resident memory of a long-lived process.
        self.db.execute("PRAGMA cache_size=-1024")
        fresh = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'minutes'"
                                ).fetchone() is None
        for statement in _SCHEMA:
            self.db.execute(statement)
        if fresh:
            with self.db:
                self.db.execute("BEGIN")
                self.db.execute(_BACKFILL[0], (HOST,))
                self.db.execute(_BACKFILL[1])

    # --- the host ---------------------------------------------------------------------

    def add(self, ts: float, cpu: float, memory_mb: float) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO samples VALUES (?, ?, ?)", (ts, cpu, memory_mb))
            self.db.execute(_ROLL_UP, (HOST, _minute(ts), cpu, memory_mb, ts))

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def series(self, column: str, start: float, end: float,
               max_points: int = MAX_POINTS) -> list[tuple[int, float]]:
        """(timestamp, value) pairs in [start, end], downsampled (see `resolution`)."""
        return _pairs(self._series("samples", "", HOST, (column,), start, end, max_points))

    def usage(self, cpu_period: tuple[float, float], memory_period: tuple[float, float],
              max_points: int = MAX_POINTS) -> Usage:
        """The host's cpu and memory series, each over its own (start, end)."""
        return self._usage("samples", "", HOST, cpu_period, memory_period, max_points)

    # --- devices ----------------------------------------------------------------------

    def add_devices(self, rows: Iterable[tuple[str, float, float, float]]) -> None:
        """Insert (device_id, ts, cpu, memory_mb) rows in one transaction; a sample already
        recorded (same device and time) is kept, so the minute sums count it once."""
        with self.db:
            self.db.execute("BEGIN")
            for device, ts, cpu, memory_mb in rows:
                if self.db.execute("INSERT OR IGNORE INTO device_samples VALUES (?, ?, ?, ?)",
                                   (device, ts, cpu, memory_mb)).rowcount:
                    self.db.execute(_ROLL_UP, (device, _minute(ts), cpu, memory_mb, ts))

    def device_series(self, device: str, column: str, start: float, end: float,
                      max_points: int = MAX_POINTS) -> list[tuple[int, float]]:
        return _pairs(self._series("device_samples", "device_id = ? AND ", device, (column,),
                                   start, end, max_points))

    def device_usage(self, device: str, cpu_period: tuple[float, float],
                     memory_period: tuple[float, float], max_points: int = MAX_POINTS
                     ) -> Usage:
        """The device's cpu and memory series, each over its own (start, end)."""
        return self._usage("device_samples", "device_id = ? AND ", device, cpu_period,
                           memory_period, max_points)

    def _usage(self, table: str, where: str, key: str, cpu_period: tuple[float, float],
               memory_period: tuple[float, float], max_points: int) -> Usage:
        if cpu_period != memory_period:
            cpu = self._series(table, where, key, ("cpu",), *cpu_period, max_points)
            mem = self._series(table, where, key, ("memory_mb",), *memory_period, max_points)
            return _pairs(cpu), _pairs(mem)
        # The cloud asks both over the same period nearly always: one pass over the rows.
        rows = self._series(table, where, key, COLUMNS, *cpu_period, max_points)
        return ([(ts, cpu) for ts, cpu, _ in rows], [(ts, mem) for ts, _, mem in rows])

    def _series(self, table: str, where: str, key: str, columns: tuple[str, ...],
                start: float, end: float, max_points: int) -> list[tuple[Any, ...]]:
        """One aggregate query: buckets of `resolution(...)` seconds counted back from
        `end`, each the mean of its samples for every column, stamped with its first
        sample's time: rows of (timestamp, value per column).  Steps of a minute or more
        read the per-minute sums (buckets then hold whole minutes, and a minute cut by
        `start` is left out)."""
        if not columns or any(column not in COLUMNS for column in columns):
            raise ValueError(columns)
        step = resolution(start, end, max_points, self.interval)
        # [start, end] holds span/step + 1 sample times when both ends are samples: one
        # bucket more than the span needs, as long as the bound allows it.
        last = min(max(1, max_points), int((end - start) // step) + 1) - 1
        if step >= 60 and step % 60 == 0:
            means = ", ".join(f"SUM({_SUMS[column]}) / SUM(n)" for column in columns)
            rows = self.db.execute(
                f"SELECT MIN(first_ts), {means} FROM minutes"
                " WHERE device_id = ? AND minute >= ? AND minute <= ?"
                " GROUP BY MIN(CAST((? - minute) / ? AS INTEGER), ?) ORDER BY 1",
                (key, math.ceil(start / 60) * 60, end, _minute(end), step, last),
            ).fetchall()
        else:
            args = (key,) if where else ()
            means = ", ".join(f"AVG({column})" for column in columns)
            rows = self.db.execute(
                f"SELECT MIN(ts), {means} FROM {table}"
                f" WHERE {where}ts >= ? AND ts <= ?"
                " GROUP BY MIN(CAST((? - ts) / ? AS INTEGER), ?) ORDER BY 1",
                (*args, start, end, end, step, last),
            ).fetchall()
        return [(int(row[0]), *map(float, row[1:])) for row in rows]

    def device_count(self, device: str) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM device_samples WHERE device_id = ?",
                              (device,)).fetchone()
        return int(row[0])

    def known_devices(self) -> set[str]:
        """Devices with samples or remembered limits."""
        rows = self.db.execute("SELECT device_id FROM device_limits").fetchall()
        return {str(r[0]) for r in rows} | set(self._sampled_devices())

    def _sampled_devices(self) -> list[str]:
        """Devices with samples: one index seek per device (a skip scan), not a scan."""
        rows = self.db.execute(
            "WITH RECURSIVE d(id) AS (SELECT MIN(device_id) FROM device_samples UNION ALL"
            " SELECT (SELECT MIN(device_id) FROM device_samples WHERE device_id > d.id)"
            " FROM d WHERE d.id IS NOT NULL) SELECT id FROM d WHERE id IS NOT NULL"
        ).fetchall()
        return [str(r[0]) for r in rows]

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
            self.db.execute("DELETE FROM minutes WHERE device_id = ?", (device,))
            self.db.execute("DELETE FROM device_limits WHERE device_id = ?", (device,))
        return cur.rowcount

    # --- upkeep -----------------------------------------------------------------------

    def trim(self, now: float) -> int:
        cutoff = now - self.retention
        removed = self.db.execute("DELETE FROM samples WHERE ts < ?", (cutoff,)).rowcount
        # Per device, along the primary key: a range delete at the old end of each
        # device's rows instead of a scan of every row of every device.
        for device in self._sampled_devices():
            removed += self.db.execute(
                "DELETE FROM device_samples WHERE device_id = ? AND ts < ?",
                (device, cutoff)).rowcount
        self.db.execute("DELETE FROM minutes WHERE minute < ?", (_minute(cutoff),))
        return removed

    def close(self) -> None:
        self.db.close()


def _pairs(rows: list[tuple[Any, ...]]) -> Series:
    return [(ts, value) for ts, value in rows]


def _minute(ts: float) -> int:
    return int(ts // 60) * 60


def resolution(start: float, end: float, max_points: int = MAX_POINTS,
               finest: float = SAMPLE_SECONDS) -> float:
    """The bucket width for a series over [start, end]: the finest step — the sampling
    interval, then those of `STEPS` — that keeps the series within `max_points` (with 5 s
    samples: every sample up to 30 minutes, 10 s up to an hour, 10 min for 48 h), or the
    span over `max_points` beyond the ladder."""
    span = max(0.0, end - start)
    points = max(1, max_points)
    for step in (finest, *(s for s in STEPS if s > finest)):
        if math.ceil(span / step) <= points:
            return float(step)
    return span / points
