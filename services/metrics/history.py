"""The orchestrator's consumption history: CPU % and memory MB, one row per sample.

SQLite in WAL mode under the state directory, so the history survives restarts of the
metrics process and a kill -9 loses at most the sample being written.  Rows older than the
retention (48 h) are trimmed.  Not thread-safe: the service calls it from one worker thread.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

RETENTION_SECONDS = 48 * 3600


class History:
    def __init__(self, path: Path, retention: float = RETENTION_SECONDS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.retention = retention
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS samples ("
            " ts REAL NOT NULL, cpu REAL NOT NULL, memory_mb REAL NOT NULL)"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS samples_ts ON samples(ts)")

    def add(self, ts: float, cpu: float, memory_mb: float) -> None:
        self.db.execute("INSERT INTO samples VALUES (?, ?, ?)", (ts, cpu, memory_mb))

    def trim(self, now: float) -> int:
        cur = self.db.execute("DELETE FROM samples WHERE ts < ?", (now - self.retention,))
        return cur.rowcount

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def series(self, column: str, start: float, end: float,
               max_points: int) -> list[tuple[int, float]]:
        """(timestamp, value) pairs in [start, end]; averaged into buckets when there are
        more than `max_points`, so a 48 h query stays a reasonable ack."""
        if column not in ("cpu", "memory_mb"):
            raise ValueError(column)
        rows = self.db.execute(
            f"SELECT ts, {column} FROM samples WHERE ts >= ? AND ts <= ? ORDER BY ts",
            (start, end),
        ).fetchall()
        if len(rows) <= max_points:
            return [(int(ts), value) for ts, value in rows]
        size = -(-len(rows) // max_points)
        out = []
        for i in range(0, len(rows), size):
            chunk = rows[i : i + size]
            out.append((int(chunk[0][0]), sum(v for _, v in chunk) / len(chunk)))
        return out

    def close(self) -> None:
        self.db.close()
