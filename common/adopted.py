"""Runtimes taken over from the original agent: `<state>/adopted.json`.

The original agent labels nothing, and labels cannot be added to an existing container, so
the executor records the runtimes it adopted (`services/executor/runtime/adopt.py`) here,
by container id and name::

    {"containers": {"<container id>": "<name>", ...}}

The executor writes it (atomically, before it acts on an adopted container); metrics only
reads it, so it counts adopted runtimes as it counts labelled ones.  No service imports
another: this file is what they share.
"""

from __future__ import annotations

import logging
from pathlib import Path

from common.atomicfile import atomic_write_json, read_json

log = logging.getLogger(__name__)

FILE_NAME = "adopted.json"


def path(state_dir: Path) -> Path:
    return Path(state_dir) / FILE_NAME


def read(state_dir: Path) -> dict[str, str]:
    """Container id → name; empty when nothing was adopted or the file is unreadable."""
    try:
        raw = read_json(path(state_dir))
    except (OSError, ValueError) as exc:
        log.error("cannot read %s (%s); no adopted runtimes", path(state_dir), exc)
        return {}
    containers = raw.get("containers") if isinstance(raw, dict) else None
    if not isinstance(containers, dict):
        return {}
    return {str(k): str(v) for k, v in containers.items() if isinstance(v, str)}


def write(state_dir: Path, containers: dict[str, str]) -> None:
    """Blocking; crash-safe (atomic rename)."""
    atomic_write_json(path(state_dir), {"containers": dict(sorted(containers.items()))})
