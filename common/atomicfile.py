"""Crash-safe file replacement for state files.

A reader (or the process after a power cut) sees either the old content or the new one,
never an empty or torn file: the new content goes to a temporary file in the same
directory, is flushed to disk, renamed over the target (atomic on POSIX), and the
directory entry itself is flushed so the rename survives a crash too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def atomic_write(path: Path, data: bytes, mode: int = 0o644, sync_dir: bool = True) -> None:
    """Replace `path` with `data` atomically and durably (`sync_dir=False`: the caller
    flushes the directory itself, once for several files)."""
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def atomic_write_json(path: Path, obj: Any, mode: int = 0o644, sync_dir: bool = True) -> None:
    """`atomic_write` of `obj` as indented, key-sorted JSON (operators read these files)."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(path, text.encode("utf-8"), mode, sync_dir)


def remove_durably(path: Path) -> bool:
    """Delete `path` (if present) and flush the directory; True when it existed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(Path(path).parent)
    return True


def remove_stale_temps(path: Path) -> int:
    """Delete temporary files an interrupted `atomic_write` of `path` left behind (call at
    start-up, before any writer of `path` runs); returns how many were removed."""
    path = Path(path)
    removed = 0
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


def read_json(path: Path) -> Any | None:
    """The JSON content of `path`, or None when the file does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def load_json_dir(directory: Path, parse: Callable[[Path, dict[str, Any]], T],
                  what: str) -> list[T]:
    """Every ``*.json`` object in `directory` (created if missing) through `parse`, in
    name order, after removing the temporary files of writes a crash cut off.

    A file that cannot be read, is not a JSON object, or that `parse` refuses (ValueError
    or TypeError) is logged as an unreadable `what` and skipped: files are replaced
    atomically, so such a file is damage from outside, and one bad record must not stop
    the others from loading."""
    directory.mkdir(parents=True, exist_ok=True)
    for tmp in directory.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    records: list[T] = []
    for path in sorted(directory.glob("*.json")):
        try:
            raw = read_json(path)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            records.append(parse(path, raw))
        except (OSError, ValueError, TypeError) as exc:
            log.error("unreadable %s %s: %s; ignored", what, path.name, exc)
    return records
