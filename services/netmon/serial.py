"""USB serial adapters, as the by-id directory shows them (`/dev/serial/by-id` by default).

Each entry of the directory is a stable symlink udev makes for an adapter
(`usb-FTDI_FT232R_A1-if00-port0 -> ../../ttyUSB0`); only adapters with such a link are
reported.  The USB facts come from sysfs when the node is a USB tty: the nearest ancestor
of `/sys/class/tty/<node>/device` that carries `idVendor` gives `vendor_id`,
`product_id`, `serial`, `manufacturer` and `product`.  A node without them (a
pseudo-terminal playing an adapter in tests, a platform UART) is reported with the two
paths only.

The directory is polled (once a second by default): udev creates it with the first
adapter and removes it with the last, which an inotify watch on it would not survive,
and a listing of a handful of links costs nothing.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.netmon.poll import PollWatch

log = logging.getLogger(__name__)

DEFAULT_POLL = 1.0
SYS_CLASS_TTY = Path("/sys/class/tty")
# sysfs attribute → reply key
USB_ATTRS = (("idVendor", "vendor_id"), ("idProduct", "product_id"), ("serial", "serial"),
             ("manufacturer", "manufacturer"), ("product", "product"))
_MAX_DEPTH = 8

Device = dict[str, Any]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip() or None
    except OSError:
        return None


def usb_facts(node: str, sys_tty: Path = SYS_CLASS_TTY) -> dict[str, str]:
    """The USB attributes of tty `node` (a basename), or {} when it has none."""
    try:
        current = (sys_tty / node / "device").resolve(strict=True)
    except OSError:
        return {}
    for _ in range(_MAX_DEPTH):
        if (current / "idVendor").exists():
            facts = {}
            for attr, key in USB_ATTRS:
                value = _read(current / attr)
                if value is not None:
                    facts[key] = value
            return facts
        if current.parent == current:
            break
        current = current.parent
    return {}


def scan(by_id_dir: Path, sys_tty: Path = SYS_CLASS_TTY) -> list[Device]:
    """The adapters behind the links of `by_id_dir`, sorted by `device_id`; links whose
    target is missing are skipped (an adapter being unplugged)."""
    try:
        entries = sorted(os.listdir(by_id_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        log.warning("cannot list %s: %s", by_id_dir, exc)
        return []
    devices: list[Device] = []
    for entry in entries:
        link = by_id_dir / entry
        try:
            target = link.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        device: Device = {"path": str(target), "device_id": str(link)}
        device.update(usb_facts(target.name, sys_tty))
        devices.append(device)
    return devices


class SerialWatch(PollWatch):
    """Poll `by_id_dir` and call `on_change(devices)` whenever the list changes."""

    def __init__(self, by_id_dir: Path, on_change: Callable[[list[Device]], None], *,
                 interval: float = DEFAULT_POLL, sys_tty: Path = SYS_CLASS_TTY) -> None:
        self.by_id_dir = by_id_dir
        super().__init__(functools.partial(scan, by_id_dir, sys_tty), on_change,
                         interval=interval, task_name="serial-watch")

    @property
    def devices(self) -> list[Device]:
        return self.items

    def start(self) -> None:
        log.info("watching %s for serial adapters (%d now)", self.by_id_dir,
                 len(self.devices))
        super().start()

    def changed(self, items: list[Device]) -> None:
        log.info("serial adapters: %s", ", ".join(d["device_id"] for d in items) or "none")
