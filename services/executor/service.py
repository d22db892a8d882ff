"""The executor service object: request methods on the bus, the engine watcher, the
live-view refresher, reconciliation.

Concurrency: asyncio on the bus loop; every blocking engine call in the bounded engine
pool (`engine/docker_api.py`); state-file writes in one dedicated thread (so writes to one file
never interleave); the engine's event stream in one watcher thread (`engine/events.py`).
Operations on different devices run concurrently as tasks; one device has at most one
operation at a time (`runtime/registry.py`).

Request methods (params → result; see docs/bus.md):
* `create_runtime` `{container_name, vnic_configs, runtime_version}` → the
  `create_new_runtime` ack body (`creating`), or `{"status": "error", "error": ...}`;
* `delete_device` `{device_id}` → `deleting` ack body, or an error body;
* `start_device` / `stop_device` / `restart_device` `{device_id}` → the ack body, when done;
* `device_status` `{device_id}` → the `get_device_status` body;
* `run_command` `{device_id, method, api, ...}` → the `run_command` ack body;
* `delete_orchestrator` `{}` → the `accepted` ack body.
When the engine is unavailable every method fails with error kind `docker_unavailable`
("Docker unavailable: ..."), in time — except `device_status`, which answers the original's
`Failed to retrieve container status: <reason>` body, its reason "Docker unavailable: ...".
A method that fails with `docker_unavailable` has changed nothing (the gateway lets a
resend run again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import labels, vnic_rules
from common.atomicfile import atomic_write
from common.bus import RemoteError
from common.service import Peers, Runtime
from common.statepath import within
from services.executor.context import Context
from services.executor.dhcp import wiring as dhcp_wiring
from services.executor.engine import selfinfo
from services.executor.engine.docker_api import DockerApi
from services.executor.engine.events import Watcher
from services.executor.engine.liveview import ContainerView, LiveView
from services.executor.errors import DockerUnavailable, ExecutorError
from services.executor.net import hostns, wifi
from services.executor.net.hostnets import HostNetworks
from services.executor.net.netevents import NetEvents
from services.executor.net.netinfo import InterfaceCache
from services.executor.net.networks import Networks
from services.executor.proxy.forward import internal_limits, proxy
from services.executor.rehome.watch import TOPICS, NetWatch
from services.executor.runtime import (
    adopt,
    create,
    dedicated,
    lifecycle,
    live,
    selfdestruct,
    status,
    unleased,
)
from services.executor.runtime.bootsync import boot_sync
from services.executor.runtime.dedicated import DedicatedStore
from services.executor.runtime.dedicatedkeeper import DedicatedKeeper
from services.executor.runtime.intents import IntentStore
from services.executor.runtime.journal import Journal
from services.executor.runtime.reconcile import reconcile
from services.executor.runtime.registry import OperationRegistry
from services.executor.runtime.serial import SerialStore
from services.executor.runtime.serialkeeper import SerialKeeper
from services.executor.runtime.vnic_store import VnicStore
from services.executor.runtime.watchdog import Watchdog
from services.executor.runtime.wifilinks import WifiLinks

log = logging.getLogger(__name__)

INSTANCE_FILE = labels.INSTANCE_FILE
READY_WAIT = 5.0
# Asks netbridge for interfaces (netinfo, netwatch) and hears its events (netwatch).
PEERS = Peers(calls=("netbridge",), hears=("netbridge",), topics=TOPICS)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def instance_id(configured: str, state_dir: Path) -> str:
    """The agent instance id on our labels: configured, or generated once and kept."""
    if configured:
        return configured
    path = within(state_dir, INSTANCE_FILE)
    try:
        text = path.read_text().strip()
        if text:
            return text
    except FileNotFoundError:
        pass
    value = os.urandom(8).hex()
    atomic_write(path, (value + "\n").encode())
    return value


class ExecutorService:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._since = time.monotonic()  # the boot sync's clock starts with the process
        cfg = runtime.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.instance = instance_id(cfg.instance_id, cfg.state_dir)
        self.docker = DockerApi(cfg.docker_host, cfg.docker_timeout, cfg.docker_workers)
        journal = Journal(cfg.state_dir)
        journal.load()
        vnics = VnicStore(cfg.state_dir)
        vnics.load()
        hostnets = HostNetworks(cfg.state_dir)
        hostnets.load()
        netevents = NetEvents(cfg.state_dir)
        netevents.load()
        intents = IntentStore(cfg.state_dir)
        intents.load()
        view = LiveView(self.docker, self.instance)
        serials = SerialStore(cfg.state_dir)
        serials.load()
        host = hostns.locate()
        log.info("host-side network work runs in %s network namespace", host.describe())
        wifi_links = WifiLinks(wifi.forced_list(cfg.wireless_interfaces), host)
        self.ctx = Context(
            config=cfg, instance=self.instance, docker=self.docker, view=view,
            journal=journal, vnics=vnics,
            networks=Networks(self.docker, self.instance, cfg.internal_pool,
                              cfg.internal_prefix, None),
            ifaces=InterfaceCache(runtime.clients["netbridge"]),
            ops=OperationRegistry(),
            io=ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-io"),
            hostnets=hostnets, netevents=netevents, intents=intents,
            publish=runtime.publisher.publish, serials=SerialKeeper(serials, view),
            wifi=wifi_links, hostns=host)
        dedicated = DedicatedStore(cfg.state_dir)
        dedicated.load()
        self.ctx.dedicated = DedicatedKeeper(dedicated, view, cfg.run_dir, host.ns_file)
        self.ctx.dedicated.write = self.ctx.io_call
        adopt.load(self.ctx)
        if cfg.dhcp_leases:
            self.ctx.dhcp = dhcp_wiring.DhcpWiring(cfg.state_dir, cfg.dhcp_no_offer_after,
                                                   cfg.dhcp_lease_cap or None,
                                                   on_address=wifi_links.leased)
        self.netwatch = NetWatch(runtime, self.ctx)
        self.watchdog = Watchdog(self.ctx)
        view.hooks.append(self._on_view_change)
        view.hooks.append(self.watchdog.on_view_change)
        self._sync_lock = asyncio.Lock()
        self._boot_lock = asyncio.Lock()
        self._boots = 0
        self._detected = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.watcher: Watcher | None = None
        for method, handler in (
            ("create_runtime", self.create_runtime),
            ("delete_device", self.delete_device),
            ("start_device", self.start_device),
            ("stop_device", self.stop_device),
            ("restart_device", self.restart_device),
            ("device_status", self.device_status),
            ("run_command", self.run_command),
            ("delete_orchestrator", self.delete_orchestrator),
        ):
            runtime.rpc.register(method, self._edge(method, handler))
        log.info("executor instance %s, engine %s", self.instance, cfg.docker_host)

    # --- loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.ctx.dhcp is not None:
            self.ctx.dhcp.start()
        self.watcher = Watcher(self.docker, self.instance, loop, self.ctx.view.on_event,
                               self._on_connected)
        self.watcher.adopted = lambda: frozenset(self.ctx.view.adopted)
        self.watcher.start()
        refresher = asyncio.create_task(self.ctx.view.run_refresher(self.rt.stop))
        netwatch = asyncio.create_task(self.netwatch.run(), name="netwatch")
        assert self.ctx.serials is not None
        keeper = asyncio.create_task(self.ctx.serials.run(), name="serial-keeper")
        assert self.ctx.dedicated is not None
        nics = asyncio.create_task(self._keep_nics(self.ctx.dedicated), name="dedicated-keeper")
        try:
            await self.rt.stop.wait()
        finally:
            refresher.cancel()
            netwatch.cancel()
            keeper.cancel()
            nics.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await netwatch
            self.watchdog.close()
            await self.ctx.ops.cancel_all(2.0)
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            if self.ctx.dhcp is not None:
                await asyncio.to_thread(self.ctx.dhcp.stop)

    async def _keep_nics(self, keeper: DedicatedKeeper) -> None:
        # Not before the live view is whole: an empty view would read as "no runtime
        # runs" and take every NIC out of its running runtime at each executor start.
        await self.ctx.ready.wait()
        await keeper.run()

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_connected(self) -> None:
        self.rt.counters["docker_connected"] += 1
        self._spawn(self._resync(time.monotonic()), "resync")

    async def _resync(self, connected_at: float) -> None:
        if await self._reconcile():
            self._spawn(self._boot_sync(connected_at), "boot-sync")

    async def _boot_sync(self, connected_at: float) -> None:
        """After every (re)connection: start what should run (runtime/bootsync.py)."""
        async with self._boot_lock:
            first = self._boots == 0
            self._boots += 1
            try:
                await boot_sync(self.ctx, self.netwatch.full_pass,
                                "start" if first else "reconnect",
                                self._since if first else connected_at)
                self.rt.counters["boot_syncs"] += 1
            except DockerUnavailable as exc:
                self._boots -= int(first)
                log.warning("boot sync postponed: %s", exc.text)
            except Exception:
                log.exception("boot sync failed")

    async def _reconcile(self) -> bool:
        async with self._sync_lock:
            try:
                if not self._detected:
                    await self._detect_self()
                await adopt.adopt_original(self.ctx, lifecycle.protected_names(self.ctx))
                await self.ctx.view.full_sync()
                self.ctx.ready.set()
                await reconcile(self.ctx)
                await dhcp_wiring.resync(self.ctx)
                unleased.resync(self.ctx)  # dhcp vNICs still waiting for a lease
                self.netwatch.poke()  # interrupted moves, and subnets that changed meanwhile
                return True
            except DockerUnavailable as exc:
                log.warning("resync postponed: %s", exc.text)
            except Exception:
                log.exception("resync failed")
            return False

    async def _detect_self(self) -> None:
        cfg = self.rt.config
        agent = await self.docker.call(selfinfo.detect_own_container, cfg.agent_container)
        self.ctx.agent_container = agent
        self.ctx.on_host = agent is None
        self.ctx.networks.agent = agent
        if agent:
            attrs = await self.docker.call(lambda api: api.inspect_container(agent))
            self.ctx.agent_name = str(attrs.get("Name", "")).lstrip("/") or None
            log.info("the agent runs in container %s (%s)", self.ctx.agent_name, agent[:12])
        else:
            log.info("the agent runs on the host; runtimes are reached through their "
                     "internal bridge")
        self._detected = True

    def _on_view_change(self, old: ContainerView | None, new: ContainerView | None) -> None:
        if self.ctx.dedicated is not None:
            self.ctx.dedicated.poke()  # a stop or a removal by hand brings its NICs home
            if old is not None and new is None and self.ctx.ops.current(old.name) is None:
                # Removed behind our back: its NICs go home and leave the record.
                self._spawn(dedicated.release(self.ctx, old.name), f"nics-{old.name}")
        if self.ctx.dhcp is not None and old is not None and old.running and \
                (new is None or not new.running):
            self._spawn(self._dhcp_stopped(old.name, gone=new is None), f"dhcp-{old.name}")
        if new is None and old is not None:
            self.ctx.start_work.pop(old.name, None)  # gone: its last start's record too
        if old is not None and new is None and self.ctx.wifi is not None:
            self._spawn(self._links_gone(old.name), f"wifi-{old.name}")
        # Interfaces and the resolver file are re-created at every start: re-apply the MACs
        # the engine cannot set and the vNICs' dns servers.
        if new is None or not new.running or (old is not None and old.pid == new.pid):
            return
        if self.ctx.ops.current(new.name) is not None:
            return  # the operation applies them itself
        if self.ctx.vnics.get(new.name):
            self._spawn(live.after_start(self.ctx, new.name), f"macs-{new.name}")

    async def _links_gone(self, device: str) -> None:
        """Removed behind our back: its wireless links' host side goes now (a delete
        removes them itself)."""
        if self.ctx.wifi is not None and self.ctx.ops.current(device) is None:
            await self.ctx.wifi.forget(device, self.ctx.vnics.get(device))

    async def _dhcp_stopped(self, device: str, gone: bool) -> None:
        if gone and self.ctx.ops.current(device) is None:
            await dhcp_wiring.gone(self.ctx, device)  # removed behind our back
        else:
            await dhcp_wiring.stopped(self.ctx, device)

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.docker.close()
        self.ctx.io.shutdown(wait=True)

    # --- request edges -------------------------------------------------------------------------

    def _edge(self, method: str, handler: Handler) -> Handler:
        """Count the call; the engine being gone becomes error kind `docker_unavailable`."""
        async def edge(params: dict[str, Any]) -> Any:
            self.rt.counters[f"calls_{method}"] += 1
            try:
                return await handler(params)
            except DockerUnavailable as exc:
                raise RemoteError(exc.kind, exc.text) from None
        return edge

    async def _ready(self) -> None:
        """Wait (briefly) for the first view of the engine after a start."""
        self.ctx.require_docker()
        if not self.ctx.ready.is_set():
            try:
                await asyncio.wait_for(self.ctx.ready.wait(), READY_WAIT)
            except TimeoutError:
                self.ctx.require_docker()
                raise RemoteError("unavailable", "the executor is still reading the engine's "
                                  "state; retry shortly") from None

    @staticmethod
    def _device(params: dict[str, Any]) -> str:
        """The request's device id, checked with the gateway's rule: the executor does not
        rely on the gateway, and ids end up in state file names."""
        device = params.get("device_id")
        if not isinstance(device, str) or not device:
            raise RemoteError("invalid", "device_id must be a non-empty string")
        try:
            return vnic_rules.device_id_or_orchestrator(device, {})
        except vnic_rules.Invalid as exc:
            raise RemoteError("invalid", f"device_id: {exc.reason}") from None

    @staticmethod
    async def _answer(work: Awaitable[dict[str, Any]], **ids: Any) -> dict[str, Any]:
        """The reply of a request: its own, or an error body naming the device.  The
        engine being gone is not an answer but error kind `docker_unavailable` (`_edge`)."""
        try:
            return await work
        except DockerUnavailable:
            raise
        except ExecutorError as exc:
            return {"status": "error", **ids, "error": exc.text}

    async def create_runtime(self, params: dict[str, Any]) -> dict[str, Any]:
        await self._ready()
        name = params.get("container_name")
        ids = {"container_id": name} if isinstance(name, str) else {}
        return await self._answer(create.start_create(self.ctx, params), **ids)

    async def delete_device(self, params: dict[str, Any]) -> dict[str, Any]:
        device = self._device(params)
        await self._ready()
        return await self._answer(lifecycle.start_delete(self.ctx, device), device_id=device)

    async def start_device(self, params: dict[str, Any]) -> dict[str, Any]:
        await self._ready()
        return await lifecycle.control(self.ctx, self._device(params), "start")

    async def stop_device(self, params: dict[str, Any]) -> dict[str, Any]:
        await self._ready()
        return await lifecycle.control(self.ctx, self._device(params), "stop")

    async def restart_device(self, params: dict[str, Any]) -> dict[str, Any]:
        await self._ready()
        return await lifecycle.control(self.ctx, self._device(params), "restart")

    async def device_status(self, params: dict[str, Any]) -> dict[str, Any]:
        """The engine being gone is an answer here, in the original's shape: an error
        body that keeps `device_id` (a read; nothing to deduplicate or retry), whose
        reason says plainly "Docker unavailable: ..."."""
        device = self._device(params)
        try:
            if device != selfdestruct.DEVICE:
                op = self.ctx.journal.get(device)
                if op is None or not op.in_progress:
                    await self._ready()
            return status.device_status(self.ctx, device)
        except DockerUnavailable as exc:
            return status.engine_failed(device, exc.text)

    async def delete_orchestrator(self, params: dict[str, Any]) -> dict[str, Any]:
        await self._ready()
        return await selfdestruct.start_self_destruct(self.ctx)

    async def run_command(self, params: dict[str, Any]) -> dict[str, Any]:
        device = self._device(params)
        await self._ready()
        view = self.ctx.view.get(device)
        if view is None:
            return {"status": "error", "error": f"Device not found: {device}"}
        if not view.running or not view.internal_ip:
            return {"status": "error", "device_id": device,
                    "error": f"Device {device} is not running"}
        adopted = view.internal_ip if view.id in self.ctx.view.adopted else None
        limits = internal_limits(self.ctx.config.internal_pool, view.internal_gateway,
                                 adopted_address=adopted)
        return await proxy(view.internal_ip, params, limits=limits, runtime=view.id)
