"""Leases and their files: `<state>/dhcp/<device>@<vnic>.json`, one per dhcp vNIC.

A file holds the last lease the vNIC was given (address, prefix, router, DNS, server,
lease start and times) and its state, so a restarted executor resumes where it stopped:
it asks for the same address first (INIT-REBOOT) and `status` has something to show.
Written with `common.atomicfile` (old or new content after a crash, never torn).  Device
and vNIC names are checked before they become a file name, so no name can lead outside
the directory.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.atomicfile import atomic_write_json, read_json, remove_durably

log = logging.getLogger(__name__)

DIR_NAME = "dhcp"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass
class Lease:
    ip_address: str
    prefixlen: int
    server: str
    start: float  # wall clock (epoch seconds) when the request that got it was sent
    lease_time: int
    t1: float
    t2: float
    gateway: str | None = None
    dns: list[str] | None = None
    domain: str | None = None

    @property
    def renew_at(self) -> float:
        return self.start + self.t1

    @property
    def rebind_at(self) -> float:
        return self.start + self.t2

    @property
    def expires_at(self) -> float:
        return self.start + self.lease_time

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Lease:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def file_name(device: str, vnic: str) -> str:
    for what, name in (("device", device), ("vnic", vnic)):
        if not _NAME.fullmatch(name) or ".." in name:
            raise ValueError(f"{what} name {name!r} cannot name a lease file")
    return f"{device}@{vnic}.json"


class LeaseStore:
    """The lease files of one state directory.  Blocking; called from the keeper's loop."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / DIR_NAME

    def _path(self, device: str, vnic: str) -> Path:
        path = self.dir / file_name(device, vnic)
        if path.parent != self.dir:  # belt and braces: the name check already ensures it
            raise ValueError(f"lease file of {device}/{vnic} would leave {self.dir}")
        return path

    def save(self, device: str, vnic: str, record: dict[str, Any]) -> None:
        atomic_write_json(self._path(device, vnic), record)

    def load(self, device: str, vnic: str) -> dict[str, Any] | None:
        try:
            raw = read_json(self._path(device, vnic))
        except (OSError, ValueError) as exc:
            log.warning("lease file of %s/%s unreadable, starting afresh: %s",
                        device, vnic, exc)
            return None
        return raw if isinstance(raw, dict) else None

    def remove(self, device: str, vnic: str) -> None:
        remove_durably(self._path(device, vnic))

    def keys(self) -> list[tuple[str, str]]:
        """(device, vnic) of every lease file."""
        out = []
        if self.dir.is_dir():
            for path in sorted(self.dir.glob("*@*.json")):
                device, _, vnic = path.name[:-len(".json")].partition("@")
                out.append((device, vnic))
        return out


def lease_record(lease: Lease | None) -> dict[str, Any] | None:
    return None if lease is None else asdict(lease)
