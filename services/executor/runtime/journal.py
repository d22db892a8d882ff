"""The operations journal: one crash-safe JSON file per device under
`<state>/operations/`.

Each file holds the device's latest operation: what it is, its state (`in_progress`,
`success`, `error`), the current step, timestamps, the error, and what a restarted
executor needs to finish or roll it back (the resolved request, progress marks).
`device_status` reads it from memory; the files exist so that an executor restarted
after a crash (kill -9, power cut) neither forgets an operation nor its failure.

Mutations happen on the event loop; `Journal.write` (blocking) runs in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from common.atomicfile import atomic_write_json, fsync_dir, load_json_dir, remove_durably
from common.statepath import within

log = logging.getLogger(__name__)

DIR_NAME = "operations"
IN_PROGRESS, SUCCESS, ERROR = "in_progress", "success", "error"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def new_op_id() -> str:
    return os.urandom(6).hex()


@dataclass
class Operation:
    device_id: str
    operation: str  # create | delete | start | stop | restart | delete_orchestrator
    op_id: str = field(default_factory=new_op_id)
    state: str = IN_PROGRESS
    step: str | None = None
    started_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    error: str | None = None
    message: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)

    @property
    def in_progress(self) -> bool:
        return self.state == IN_PROGRESS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Operation:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def set_step(self, step: str) -> None:
        self.step = step
        self.updated_at = now_iso()

    def succeed(self, message: str | None = None) -> None:
        self.state = SUCCESS
        self.message = message
        self.updated_at = self.finished_at = now_iso()

    def fail(self, error: str) -> None:
        self.state = ERROR
        self.error = error
        self.updated_at = self.finished_at = now_iso()


def _parse_entry(path: Path, raw: dict[str, Any]) -> Operation:
    op = Operation.from_dict(raw)
    if op.device_id + ".json" != path.name:
        raise ValueError(f"names device {op.device_id!r}")
    return op


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / DIR_NAME
        self._ops: dict[str, Operation] = {}

    def load(self) -> None:
        loaded = load_json_dir(self.dir, _parse_entry, "journal entry")
        self._ops = {op.device_id: op for op in loaded}

    def get(self, device: str) -> Operation | None:
        return self._ops.get(device)

    def all(self) -> list[Operation]:
        return list(self._ops.values())

    def put(self, op: Operation) -> dict[str, Any]:
        """Record `op` in memory; returns the snapshot to write."""
        self._ops[op.device_id] = op
        return op.to_dict()

    def drop(self, device: str) -> None:
        self._ops.pop(device, None)

    def path(self, device: str) -> Path:
        return within(self.dir, device, ".json")

    def write_many(self, snapshots: list[tuple[str, dict[str, Any]]]) -> None:
        """Blocking: persist several entries, with one flush of the directory."""
        for device, snapshot in snapshots:
            atomic_write_json(self.path(device), snapshot, sync_dir=False)
        if snapshots:
            fsync_dir(self.dir)

    def write(self, device: str, snapshot: dict[str, Any] | None) -> None:
        """Blocking: persist a snapshot, or remove the entry when `snapshot` is None."""
        if snapshot is None:
            remove_durably(self.path(device))
        else:
            atomic_write_json(self.path(device), snapshot)
