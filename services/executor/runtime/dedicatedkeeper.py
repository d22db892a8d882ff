"""The dedicated-NIC keeper: each NIC on record is where its runtime's state says.

A running runtime has its NICs inside its namespace (pinned, configured); a stopped,
removed or deleted one has them on the host.  The keeper compares that with where each
NIC actually is — looked up every time, never assumed, so an executor killed at any
step finds its way on the next pass — and moves it (`dedicatednet.py`):

* on the host, wanted in: record the host facts (durably, first), pin the runtime's
  namespace, move in, configure;
* in a pinned namespace that is not the runtime's current one (stopped, restarted,
  removed by hand), or the runtime is gone: move out, restore the host facts, unpin;
* in the runtime's current namespace but not pinned (the executor restarted in another
  mount namespace): pin it;
* anywhere else: `missing` (a stale pin is released).

Runs once a second and when poked (view changes, create, lifecycle commands); one pass
at a time (a lock), the blocking work in worker threads.  States for `get_device_status`:
`in_runtime`, `on_host`, `missing`, `error` (with the reason), `unknown` (not looked yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from services.executor.dhcp.netns import NetnsError
from services.executor.engine.liveview import LiveView
from services.executor.runtime import dedicatednet as net
from services.executor.runtime.dedicated import DedicatedStore

log = logging.getLogger(__name__)

POLL = 1.0
Writer = Callable[[Callable[..., Any], Any], Awaitable[Any]]
FAULTS = (net.DedicatedError, NetnsError, OSError)


class DedicatedKeeper:
    def __init__(self, store: DedicatedStore, view: LiveView, run_dir: Path, host_ns: str,
                 interval: float = POLL) -> None:
        self.store = store
        self.view = view
        self.pins = Path(run_dir) / "netns"
        self.host_ns = host_ns
        self.interval = interval
        self.states: dict[str, tuple[str, str | None]] = {}
        self._configured: dict[str, int] = {}  # interface → namespace inode configured
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.write: Writer | None = None  # the context's state-io runner

    def poke(self) -> None:
        self._wake.set()

    def ref(self, interface: str) -> str:
        return str(self.pins / interface)

    async def _save(self, snapshot: dict[str, Any] | None) -> None:
        if snapshot is None:
            return
        if self.write is not None:
            await self.write(self.store.write, snapshot)
        else:
            await asyncio.to_thread(self.store.write, snapshot)

    # --- the record ------------------------------------------------------------------------

    async def claim(self, device: str, items: list[dict[str, Any]]) -> None:
        async with self._lock:
            await self._save(self.store.set(device, items))
        self._wake.set()  # the keeper may be waiting with nothing on record

    async def release(self, device: str) -> bool:
        """The runtime is gone: every NIC of it back to the host and off the record.  False
        when a NIC could not be returned yet (the keeper keeps trying)."""
        async with self._lock:
            for item in self.store.get(device):
                await self._save(self.store.update(device, item["interface"], released=True))
            return await self._sync_device(device)

    # --- passes --------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                async with self._lock:
                    for device in self.store.devices():
                        await self._sync_device(device)
            except Exception:
                log.exception("dedicated-NIC keeper pass failed")
            self._wake.clear()
            # With no dedicated NIC on record there is nothing to poll for (a claim
            # wakes the keeper): the idle executor does not wake every second for it.
            wait = self.interval if self.store.devices() else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def sync_device(self, device: str) -> bool:
        async with self._lock:
            return await self._sync_device(device)

    async def _sync_device(self, device: str) -> bool:
        """One device's NICs where they belong now; True when all are."""
        view = self.view.get(device)
        pid = view.pid if view is not None and view.running else 0
        ok = True
        for item in self.store.get(device):
            name = str(item["interface"])
            want = pid if pid > 0 and not item.get("released") else 0
            try:
                state = await self._place(device, item, want)
                self._set_state(device, name, state, None)
            except FAULTS as exc:
                self._set_state(device, name, "error", str(exc))
                ok = False
                continue
            if item.get("released") and state in ("on_host", "missing"):
                self.states.pop(name, None)
                self._configured.pop(name, None)
                await self._save(self.store.drop(device, name))
                log.info("%s: dedicated interface %s is off the record (%s)", device, name,
                         state)
            ok = ok and state == ("in_runtime" if want else "on_host")
        return ok

    def _set_state(self, device: str, name: str, state: str, error: str | None) -> None:
        if self.states.get(name) != (state, error):
            level = logging.WARNING if error else logging.INFO
            log.log(level, "%s: dedicated interface %s %s%s", device, name, state,
                    f": {error}" if error else "")
        self.states[name] = (state, error)

    async def _place(self, device: str, item: dict[str, Any], pid: int) -> str:
        name = str(item["interface"])
        ref = self.ref(name)
        target = net.ns_ino(pid) if pid else None
        for _ in range(2):  # out of an old namespace, then into the new one
            pinned = await asyncio.to_thread(net.pinned_ino, ref)
            if await asyncio.to_thread(net.in_netns, self.host_ns, name):
                if pinned is not None:
                    await asyncio.to_thread(net.unpin, ref)
                if target is None:
                    return "on_host"
                await self._move_in(device, item, pid, ref)
                return "in_runtime"
            if pinned is not None and await asyncio.to_thread(net.in_netns, ref, name):
                if target is not None and pinned == target:
                    await self._configure(item, ref, pinned)
                    return "in_runtime"
                await self._move_out(device, item, ref)
                continue
            if pinned is not None:
                await asyncio.to_thread(net.unpin, ref)  # holds nothing of ours
            if target is not None and await asyncio.to_thread(
                    net.in_netns, f"/proc/{pid}/ns/net", name):
                ino = await asyncio.to_thread(net.pin, pid, ref)
                await self._configure(item, ref, ino)
                return "in_runtime"
            return "missing"
        return "on_host"

    async def _move_in(self, device: str, item: dict[str, Any], pid: int, ref: str) -> None:
        name = str(item["interface"])
        facts = await asyncio.to_thread(net.host_facts, self.host_ns, name)
        host = dataclasses.asdict(facts)
        # Durable before the move: a crash right after it must still know what to restore.
        await self._save(self.store.update(device, name, host=host))
        item["host"] = host
        ino = await asyncio.to_thread(net.pin, pid, ref)
        try:
            await asyncio.to_thread(net.move_in, self.host_ns, name, ref)
        except BaseException:
            await asyncio.to_thread(net.unpin, ref)
            raise
        log.info("%s: dedicated interface %s moved into the runtime", device, name)
        await self._configure(item, ref, ino)

    async def _configure(self, item: dict[str, Any], ref: str, ino: int) -> None:
        name = str(item["interface"])
        if self._configured.get(name) == ino:
            return
        want = net.Addressing(item.get("ip_address"), item.get("prefixlen"),
                              item.get("gateway"))
        changed = await asyncio.to_thread(net.configure, ref, name, want)
        if changed:
            log.info("dedicated interface %s in the runtime: %s", name, ", ".join(changed))
        self._configured[name] = ino

    async def _move_out(self, device: str, item: dict[str, Any], ref: str) -> None:
        name = str(item["interface"])
        await asyncio.to_thread(net.move_out, self.host_ns, ref, name)
        self._configured.pop(name, None)
        await asyncio.to_thread(net.restore_host, self.host_ns, name, item.get("host") or {})
        await asyncio.to_thread(net.unpin, ref)
        log.info("%s: dedicated interface %s returned to the host", device, name)
