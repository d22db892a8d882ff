"""What every executor operation shares: the engine, the views, the stores, the settings.

Built once by the service; handed to `create`, `lifecycle`, `status`, `selfdestruct` and
`reconcile`, which are plain async functions over it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.config import Config
from common.messages import Message
from services.executor.engine.docker_api import DockerApi
from services.executor.engine.liveview import LiveView
from services.executor.errors import DockerUnavailable
from services.executor.net.hostnets import HostNetworks
from services.executor.net.hostns import OWN, HostNetns
from services.executor.net.netevents import NetEvents
from services.executor.net.netinfo import InterfaceCache
from services.executor.net.networks import Networks
from services.executor.runtime.dedicatedkeeper import DedicatedKeeper
from services.executor.runtime.intents import Intent, IntentStore
from services.executor.runtime.journal import Journal, Operation
from services.executor.runtime.registry import OperationRegistry
from services.executor.runtime.serialkeeper import SerialKeeper
from services.executor.runtime.vnic_store import VnicStore
from services.executor.runtime.wifilinks import WifiLinks

if TYPE_CHECKING:
    from services.executor.dhcp.wiring import DhcpWiring

log = logging.getLogger(__name__)

# Budget for the engine calls a quick command makes before it answers: the cloud waits
# about 10 s for an ack, and the gateway needs a moment of its own.
QUICK = 6.0


def _report_failed_write(written: asyncio.Future[None]) -> None:
    if not written.cancelled() and written.exception() is not None:
        log.error("journal entry not written: %s", written.exception())


@dataclass
class Context:
    config: Config
    instance: str
    docker: DockerApi
    view: LiveView
    journal: Journal
    vnics: VnicStore
    networks: Networks
    ifaces: InterfaceCache
    ops: OperationRegistry
    io: ThreadPoolExecutor
    hostnets: HostNetworks
    netevents: NetEvents
    intents: IntentStore
    publish: Callable[[Message], None] = lambda message: None
    agent_container: str | None = None  # the agent's own container id, if any
    agent_name: str | None = None
    on_host: bool = True
    # The host's network namespace (net/hostns.py): the executor's own on the host.
    hostns: HostNetns = OWN
    rt_refused: bool = False
    destroying: bool = False
    # device → (pid, {network: mac}) for MACs set in a container's namespace (macfix.py)
    applied_macs: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    # device → (pid, the work after that start): done once per start (runtime/live.py)
    start_work: dict[str, tuple[int, asyncio.Future[None]]] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    dhcp: DhcpWiring | None = None  # the lease keeper of dhcp vNICs; None when DHCP is off
    serials: SerialKeeper | None = None  # serial passthrough (runtime/serial.py)
    dedicated: DedicatedKeeper | None = None  # dedicated NICs (runtime/dedicated.py)
    wifi: WifiLinks | None = None  # vNICs on wireless parents (runtime/wifilinks.py)

    async def save_serials(self, device: str, configs: list[dict[str, Any]]) -> None:
        if self.serials is None:
            return
        store = self.serials.store
        if configs:
            await self._io(store.write, store.set(device, configs))
        else:
            snapshot = store.forget(device)
            if snapshot is not None:
                await self._io(store.write, snapshot)
        self.serials.poke()

    def require_docker(self) -> None:
        if not self.docker.available:
            raise DockerUnavailable(self.docker.last_error or "not connected")

    async def _io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    async def io_call(self, fn: Any, *args: Any) -> Any:
        """Run a blocking state-file write in the state-io thread (writes never interleave)."""
        return await self._io(fn, *args)

    async def save_op(self, op: Operation) -> None:
        snapshot = self.journal.put(op)
        await self._io(self.journal.write, op.device_id, snapshot)

    async def save_ops(self, ops: list[Operation]) -> None:
        """`save_op` of several entries in one write job (one directory flush)."""
        snapshots = [(op.device_id, self.journal.put(op)) for op in ops]
        await self._io(self.journal.write_many, snapshots)

    def note_op(self, op: Operation) -> None:
        """Record `op` and write it without waiting: for a step whose loss in a crash only
        means the restart finds an earlier step (a create found there is rolled back).
        Writes keep their order (one state-io thread); the next awaited write of the
        entry is on disk after this one."""
        snapshot = self.journal.put(op)
        written = asyncio.get_running_loop().run_in_executor(
            self.io, self.journal.write, op.device_id, snapshot)
        written.add_done_callback(_report_failed_write)

    async def forget_op(self, device: str) -> None:
        self.journal.drop(device)
        await self._io(self.journal.write, device, None)

    async def save_vnics(self, device: str, vnics: list[dict[str, Any]]) -> None:
        await self._io(self.vnics.write, self.vnics.set(device, vnics))

    async def forget_vnics(self, device: str) -> None:
        if self.wifi is not None:  # the links live outside the engine: removed here
            await self.wifi.forget(device, self.vnics.get(device))
        snapshot = self.vnics.forget(device)
        if snapshot is not None:
            await self._io(self.vnics.write, snapshot)
        events = self.netevents.forget(device)
        if events is not None:
            await self._io(self.netevents.write, events)

    async def save_intent(self, intent: Intent) -> None:
        await self._io(self.intents.write, intent.device, self.intents.put(intent))

    async def forget_intent(self, device: str) -> None:
        if self.intents.drop(device):
            await self._io(self.intents.write, device, None)

    async def add_net_event(self, device: str, event: dict[str, Any]) -> None:
        await self._io(self.netevents.write, self.netevents.add(device, event))

    async def remember_subnets(self, parent: str, subnets: list[str]) -> None:
        snapshot = self.hostnets.remember(parent, subnets)
        if snapshot is not None:
            await self._io(self.hostnets.write, snapshot)
