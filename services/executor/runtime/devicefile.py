"""A per-device state file, `{"<device>": [ITEM, ...]}`, written with `common.atomicfile`.

The vNIC store and the network-event history keep the same shape with the same rules:
read once at start-up (a damaged file is logged and treated as empty rather than refusing
to start), mutated on the event loop, and handed as a `snapshot()` to a worker thread for
the blocking `write`.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from common.atomicfile import atomic_write_json, read_json, remove_stale_temps
from common.statepath import within


def read_state(path: Path, log: logging.Logger, fallback: str) -> Any | None:
    """Start-up read of a state file: stale temporaries removed, its JSON content, or None
    when it is missing or unreadable (logged on `log` with what happens instead)."""
    remove_stale_temps(path)
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        # The file is only ever replaced atomically, so this is outside damage; keep
        # going with what Docker knows rather than refusing to start.
        log.error("cannot read %s (%s); %s", path, exc, fallback)
        return None


class DeviceFile:
    """Subclasses name the file, the logger and fallback text for `load`, and optionally
    how many items per device are kept (the newest)."""

    FILE_NAME: str
    FALLBACK: str
    KEEP: int | None = None
    log: logging.Logger

    def __init__(self, state_dir: Path) -> None:
        self.path = within(Path(state_dir), self.FILE_NAME)
        self._data: dict[str, list[dict[str, Any]]] = {}

    def load(self) -> None:
        raw = read_state(self.path, self.log, self.FALLBACK)
        data: dict[str, list[dict[str, Any]]] = {}
        if isinstance(raw, dict):
            for device, items in raw.items():
                if isinstance(device, str) and isinstance(items, list):
                    kept = [i for i in items if isinstance(i, dict)]
                    data[device] = kept if self.KEEP is None else kept[-self.KEEP :]
        self._data = data

    def get(self, device: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self._data.get(device, []))

    def forget(self, device: str) -> dict[str, Any] | None:
        """Drop a device; the snapshot to write, or None when nothing changed."""
        if self._data.pop(device, None) is None:
            return None
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def write(self, snapshot: dict[str, Any]) -> None:
        """Blocking; run in a worker (state-io) thread."""
        atomic_write_json(self.path, snapshot)
