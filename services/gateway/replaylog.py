"""The replay cache's file: an append-only log of small records, each with a checksum.

One record per line: ``<crc32 of the JSON, 8 hex digits> <JSON>\\n``.  A record is either

* ``{"k": key, "t": topic, "c": correlation_id, "d": device, "at": wall time, "s": "started"}``
  — written **before** the command leaves the gateway;
* ``{"k": key, "s": "done", "a": ack}`` — its (shrunk) ack, once known;
* ``{"k": key, "s": "forget"}`` — the outcome proved the command never ran.

Crash safety: a record goes out in one ``write()`` on an ``O_APPEND`` descriptor, so a
``kill -9`` loses at most the record being written, and a torn last line fails its
checksum and is skipped on load.  Records are not fsynced one by one (a power cut may lose
the last few); the compacted file is written with :func:`common.atomicfile.atomic_write`
(fsync, rename, directory fsync).  Loading always compacts, so a torn tail never has a
record appended to it.

Bounds: the file is compacted when it grows past ``max_bytes``; compaction keeps only the
live entries the cache hands it, which it keeps under half of that.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from common.atomicfile import atomic_write

log = logging.getLogger(__name__)

Record = dict[str, Any]


def encode(record: Record) -> bytes:
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    body = text.encode("ascii")
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode(line: bytes) -> Record | None:
    """The record of one line, or None when it is torn or damaged."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:].rstrip(b"\n")
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("k"), str) else None


class ReplayLog:
    """The file under the state directory; every method swallows I/O errors after logging
    them once, since the cache still works in memory without its file."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.size = 0
        self._fd: int | None = None
        self._failing = False

    def load(self) -> Iterator[Record]:
        """Every intact record, in order; damaged lines are skipped."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self._failed("read", exc)
            return
        skipped = 0
        for line in data.splitlines(keepends=True):
            record = decode(line)
            if record is None:
                skipped += 1
                continue
            yield record
        if skipped:
            log.warning("replay log %s: skipped %d damaged record(s)", self.path, skipped)

    def rewrite(self, records: Iterable[Record]) -> None:
        """Replace the file with `records` atomically, then append to the new file."""
        data = b"".join(encode(r) for r in records)
        self.close()
        try:
            atomic_write(self.path, data, mode=0o600)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            self._failed("rewrite", exc)
            return
        self.size = len(data)
        self._failing = False

    def append(self, record: Record) -> bool:
        """Append one record; False when the file could not take it (or is over its
        bound: the caller then compacts)."""
        if self._fd is None:
            return False
        line = encode(record)
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            self._failed("append to", exc)
            return False
        if written != len(line):  # a short write to a regular file: disk full
            self._failed("append to", OSError("short write"))
            return False
        self.size += written
        return self.size <= self.max_bytes

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _failed(self, what: str, exc: OSError) -> None:
        if not self._failing:
            log.error("cannot %s the replay log %s (%s): repeats are recognised in memory "
                      "only until it works again", what, self.path, exc)
        self._failing = True
