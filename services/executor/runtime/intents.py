"""What each runtime should be doing: one crash-safe JSON file per device under
`<state>/lifecycle/`.

A record holds the desired state (`running` / `stopped`, why, since when), the guard
(`crash_loop` and since when) and the last unexpected exits (`{"at", "ts",
"exit_code", "oom_killed"}`, newest last).  A runtime without a record should run: every
create starts its runtime.  The files are what keeps a runtime the cloud stopped on
purpose stopped across executor restarts and host reboots, and a runtime left stopped by
the crash-loop guard stopped until the cloud starts it again.

Device ids are checked with the container-name rule before a path is built, and the path
must lie in the directory, so no id can name a file elsewhere.  Mutations happen on the
event loop; `write` (blocking) runs in the state-io thread.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from common import vnic_rules
from common.atomicfile import atomic_write_json, load_json_dir, remove_durably

log = logging.getLogger(__name__)

DIR_NAME = "lifecycle"
RUNNING, STOPPED = "running", "stopped"
KEEP_EXITS = 20
NAME_MAX = 250  # with ".json", within a file name's 255 bytes


def now_iso(stamp: float | None = None) -> str:
    moment = dt.datetime.fromtimestamp(time.time() if stamp is None else stamp, dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")


class BadDevice(ValueError):
    """A device id that cannot name a lifecycle record."""


@dataclass
class Intent:
    device: str
    desired: str = RUNNING
    reason: str = "created"
    changed_at: str = field(default_factory=now_iso)
    crash_loop: bool = False
    crash_loop_since: str | None = None
    exits: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Intent:
        known = {f.name for f in fields(cls)}
        intent = cls(**{k: v for k, v in raw.items() if k in known})
        if intent.desired not in (RUNNING, STOPPED):
            raise ValueError(f"desired state {intent.desired!r}")
        if not isinstance(intent.exits, list):
            raise ValueError("exits is not a list")
        return intent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def state(self) -> str:
        """What status shows: `running`, `stopped` or `crash_loop`."""
        return "crash_loop" if self.crash_loop else self.desired

    def recent(self, window: float, now: float | None = None) -> list[dict[str, Any]]:
        """The exits within the last `window` seconds."""
        limit = (time.time() if now is None else now) - window
        return [e for e in self.exits if float(e.get("ts") or 0) >= limit]

    def add_exit(self, exit_code: int | None, oom_killed: bool, at: float | None = None,
                 error: str | None = None) -> dict[str, Any]:
        stamp = time.time() if at is None else at
        entry: dict[str, Any] = {"at": now_iso(stamp), "ts": round(stamp, 3),
                                 "exit_code": exit_code, "oom_killed": oom_killed}
        if error:
            entry["error"] = error
        self.exits = [*self.exits, entry][-KEEP_EXITS:]
        return entry

    def public_exits(self, count: int) -> list[dict[str, Any]]:
        """The last `count` exits as status shows them (without the raw timestamp)."""
        return [{k: v for k, v in e.items() if k != "ts"} for e in self.exits[-count:]]


def check_device(device: str) -> str:
    if not isinstance(device, str) or len(device) > NAME_MAX:
        raise BadDevice(f"device id longer than {NAME_MAX} characters")
    try:
        return vnic_rules.device_id(device, {})
    except vnic_rules.Invalid as exc:
        raise BadDevice(exc.reason) from None


class IntentStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / DIR_NAME
        self._intents: dict[str, Intent] = {}

    def path(self, device: str) -> Path:
        path = self.dir / f"{check_device(device)}.json"
        if path.parent != self.dir:
            raise BadDevice(f"{device!r} does not name a file in the lifecycle directory")
        return path

    def load(self) -> None:
        # A damaged record is skipped: the runtime is then treated as one that should
        # run, which is what the engine's state then decides.
        loaded = load_json_dir(self.dir, self._parse, "lifecycle record")
        self._intents = {intent.device: intent for intent in loaded}

    def _parse(self, path: Path, raw: dict[str, Any]) -> Intent:
        intent = Intent.from_dict(raw)
        if self.path(intent.device) != path:
            raise ValueError(f"names device {intent.device!r}")
        return intent

    def get(self, device: str) -> Intent:
        """The device's record; a fresh one (should run) when there is none."""
        return self._intents.get(device) or Intent(device)

    def known(self, device: str) -> bool:
        return device in self._intents

    def devices(self) -> list[str]:
        return list(self._intents)

    def put(self, intent: Intent) -> dict[str, Any]:
        """Record `intent` in memory (its id checked); the snapshot to write."""
        self.path(intent.device)
        self._intents[intent.device] = intent
        return intent.to_dict()

    def drop(self, device: str) -> bool:
        return self._intents.pop(device, None) is not None

    def write(self, device: str, snapshot: dict[str, Any] | None) -> None:
        """Blocking: persist a snapshot, or remove the record when `snapshot` is None."""
        if snapshot is None:
            remove_durably(self.path(device))
        else:
            atomic_write_json(self.path(device), snapshot)
