"""The serial keeper: adapters follow plug, unplug, replug and runtime restarts.

Once a second, for every runtime with serial configs, compare what should be at each
`container_path` (the adapter's current node, for the runtime's current process) with
what was put there, and act on the difference (`serial.py` explains how).  The result
per port is what `get_device_status` shows in `serial_ports`.

Single task on the executor's loop; the node work runs in short child processes, so a
stuck one costs at most its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from services.executor.engine.liveview import LiveView
from services.executor.runtime import serial
from services.executor.runtime.serial import SerialStore

log = logging.getLogger(__name__)


@dataclass
class Port:
    status: str = "unknown"  # connected | disconnected | error | unknown
    host_path: str | None = None
    applied: tuple[int, str, int] | None = None  # (pid, host node, rdev) in place
    error: str | None = None
    since: float = 0.0


class SerialKeeper:
    def __init__(self, store: SerialStore, view: LiveView, interval: float = serial.POLL
                 ) -> None:
        self.store = store
        self.view = view
        self.interval = interval
        self.ports: dict[str, dict[str, Port]] = {}
        self._wake = asyncio.Event()

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception:
                log.exception("serial keeper pass failed")
            self._wake.clear()
            # Without any serial port configured there is nothing to poll for (a new
            # configuration pokes): the idle process does not wake every second.
            wait = self.interval if self.store.devices() else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def sync(self) -> None:
        devices = set(self.store.devices())
        for gone in set(self.ports) - devices:
            self.ports.pop(gone, None)
        for device in sorted(devices):
            await self._sync_device(device)

    async def _sync_device(self, device: str) -> None:
        ports = self.ports.setdefault(device, {})
        configs = self.store.get(device)
        for name in set(ports) - {c["name"] for c in configs}:
            ports.pop(name, None)
        view = self.view.get(device)
        pid = view.pid if view is not None and view.running else 0
        for config in configs:
            port = ports.setdefault(config["name"], Port())
            if pid <= 0:
                port.status, port.applied, port.host_path = "unknown", None, None
                continue
            await self._sync_port(device, pid, config, port)

    async def _sync_port(self, device: str, pid: int, config: dict[str, Any],
                         port: Port) -> None:
        node = serial.host_node(config["device_id"])
        target = config["container_path"]
        if node is None:
            if port.applied is not None and port.applied[0] == pid:
                try:
                    await serial.node_op("detach", str(pid), target)
                except OSError as exc:
                    log.warning("%s: could not remove %s: %s", device, target, exc)
            if port.status != "disconnected":
                log.info("%s: serial port %s (%s) disconnected", device, config["name"],
                         config["device_id"])
            port.status, port.applied, port.host_path = "disconnected", None, None
            return
        wanted = (pid, node[0], node[1])
        if port.applied == wanted:
            return
        if port.status == "error" and port.applied is None and \
                time.monotonic() - port.since < 10 * self.interval:
            return  # a failing attach is retried every ten passes, not every pass
        try:
            await asyncio.to_thread(serial.allow, pid, node[1])
            await serial.node_op("attach", str(pid), node[0], target)
        except OSError as exc:
            port.status, port.applied, port.host_path = "error", None, node[0]
            port.error, port.since = str(exc), time.monotonic()
            log.warning("%s: serial port %s: cannot put %s at %s: %s", device,
                        config["name"], node[0], target, exc)
            return
        port.status, port.applied, port.host_path, port.error = "connected", wanted, \
            node[0], None
        log.info("%s: serial port %s: %s at %s", device, config["name"], node[0], target)

    def status(self, device: str) -> list[dict[str, Any]] | None:
        """`serial_ports` of `get_device_status`, None for a runtime without any."""
        configs = self.store.get(device)
        if not configs:
            return None
        ports = self.ports.get(device, {})
        view = self.view.get(device)
        pid = view.pid if view is not None and view.running else 0
        out = []
        for config in configs:
            port = ports.get(config["name"], Port())
            state = port.status
            if state == "connected" and (port.applied is None or port.applied[0] != pid):
                state = "unknown"  # a restarted runtime the keeper has not seen yet
            row: dict[str, Any] = {"name": config["name"], "device_id": config["device_id"],
                                   "container_path": config["container_path"],
                                   "status": state}
            if port.host_path and state in ("connected", "error"):
                row["current_host_path"] = port.host_path
            if state == "error" and port.error:
                row["error"] = port.error
            out.append(row)
        return out
