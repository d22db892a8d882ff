"""The live view: what the engine says about our runtime containers, kept current by the
engine's event stream, so `device_status` never scans the engine.

Concurrency: lives on the event loop.  Events arrive from the watcher thread through
`loop.call_soon_threadsafe(view.on_event, event)`; each marks a container dirty, and one
refresher task re-inspects dirty containers in the engine thread pool (many events for
one container cost one inspect).  Operations that just changed a container await
`refresh()` so the status they report next is already current.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import docker.errors

from common import labels
from services.executor.engine.docker_api import DockerApi
from services.executor.errors import DockerUnavailable
from services.executor.net import names

log = logging.getLogger(__name__)

# Events that say nothing about a container's state (health probes run as execs every
# few seconds; re-inspecting on them would cost far more than the view saves).
QUIET_ACTIONS = ("exec_", "attach", "top", "resize", "copy", "archive-path",
                 "extract-to-dir", "export", "commit")


def parse_time(text: str | None) -> float | None:
    """Engine timestamps carry nanoseconds and may be the zero time."""
    if not text or text.startswith("0001-"):
        return None
    stamp = text.rstrip("Z")
    if "." in stamp:
        head, frac = stamp.split(".", 1)
        stamp = f"{head}.{frac[:6]}"
    try:
        return dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class ContainerView:
    id: str
    name: str
    status: str
    running: bool
    pid: int
    started_at: float | None
    exit_code: int | None
    restart_count: int
    health: str | None
    internal_ip: str | None
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    oom_killed: bool = False
    finished_at: float | None = None
    restart_policy: str = ""
    seen_at: float = field(default_factory=time.monotonic)
    # The host's side of the internal network: never a run_command target.
    internal_gateway: str | None = None


def parse_inspect(attrs: dict[str, Any], instance: str,
                  adopted: Mapping[str, str] | None = None) -> ContainerView | None:
    """The view of one inspected container, or None when it is not ours (by our labels,
    or adopted from the original agent by id)."""
    config = attrs.get("Config") or {}
    container_labels = config.get("Labels") or {}
    if not labels.owned(container_labels, instance) and \
            str(attrs.get("Id", "")) not in (adopted or {}):
        return None
    name = str(attrs.get("Name", "")).lstrip("/")
    state = attrs.get("State") or {}
    networks: dict[str, dict[str, Any]] = {}
    internal_ip = internal_gateway = None
    for net_name, ep in ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).items():
        if net_name == names.internal_network(name):
            internal_ip = ep.get("IPAddress") or None
            internal_gateway = ep.get("Gateway") or None
            continue
        if names.is_internal_network(net_name):
            continue
        networks[net_name] = {
            "ip_address": ep.get("IPAddress") or None,
            "mac_address": ep.get("MacAddress") or None,
            "gateway": ep.get("Gateway") or None,
        }
    health = (state.get("Health") or {}).get("Status") or None
    return ContainerView(
        id=str(attrs.get("Id", "")),
        name=name,
        status=str(state.get("Status", "unknown")),
        running=bool(state.get("Running")),
        pid=int(state.get("Pid") or 0),
        started_at=parse_time(state.get("StartedAt")),
        exit_code=state.get("ExitCode"),
        restart_count=int(attrs.get("RestartCount") or 0),
        health=health,
        internal_ip=internal_ip,
        internal_gateway=internal_gateway,
        networks=networks,
        labels=dict(container_labels),
        oom_killed=bool(state.get("OOMKilled")),
        finished_at=parse_time(state.get("FinishedAt")),
        restart_policy=str(((attrs.get("HostConfig") or {}).get("RestartPolicy") or {})
                           .get("Name") or ""),
    )


def _inspect(api: Any, ident: str) -> dict[str, Any] | None:
    try:
        return api.inspect_container(ident)  # type: ignore[no-any-return]
    except docker.errors.NotFound:
        return None


def _list_ids(api: Any, instance: str, adopted: list[str]) -> list[str]:
    rows = api.containers(all=True, filters=labels.filters(instance, labels.KIND_RUNTIME))
    ids = [str(row["Id"]) for row in rows]
    if adopted:
        rows = api.containers(all=True, filters={"id": adopted})
        ids += [str(row["Id"]) for row in rows if row["Id"] in adopted]
    return ids


ChangeHook = Callable[[ContainerView | None, ContainerView | None], None]


class LiveView:
    def __init__(self, docker_api: DockerApi, instance: str) -> None:
        self.docker = docker_api
        self.instance = instance
        # Runtimes adopted from the original agent (`runtime/adopt.py`): id → name.
        self.adopted: dict[str, str] = {}
        self._by_name: dict[str, ContainerView] = {}
        self._by_id: dict[str, ContainerView] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self.synced = False
        # True while the view is rebuilt from the engine: changes seen then happened while
        # nobody was looking (the boot sync after it decides what to start).
        self.syncing = False
        self.hooks: list[ChangeHook] = []
        # Containers whose network connects and disconnects are being made by an operation
        # that refreshes them itself when done (re-homing): their network events would
        # only cost inspects while the engine is busiest.
        self.muted: set[str] = set()

    # --- queries ------------------------------------------------------------------------

    def get(self, name: str) -> ContainerView | None:
        return self._by_name.get(name)

    def all(self) -> list[ContainerView]:
        return list(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    # --- updates --------------------------------------------------------------------------

    def _apply(self, ident: str, view: ContainerView | None) -> None:
        old = self._by_id.get(ident) or self._by_name.get(ident)
        if old is not None:
            self._by_id.pop(old.id, None)
            if self._by_name.get(old.name) is old:
                self._by_name.pop(old.name, None)
        if view is not None:
            self._by_id[view.id] = view
            self._by_name[view.name] = view
        for hook in self.hooks:
            try:
                hook(old, view)
            except Exception:
                log.exception("live view hook failed")

    def forget(self, name: str) -> None:
        view = self._by_name.get(name)
        if view is not None:
            self._apply(view.id, None)

    def take_endpoints(self, network: str, inspected: dict[str, Any],
                       gone: Iterable[str] = ()) -> set[str]:
        """Our containers' endpoints on `network` from one inspection of the network, as
        an inspection of each container would show them (address, MAC, gateway), with the
        `gone` networks dropped; the names of the views updated.  The container shows the
        gateway of the network's configuration, so without one nothing is taken (the
        caller inspects the containers)."""
        config = ((inspected.get("IPAM") or {}).get("Config") or [{}])[0]
        gateway = config.get("Gateway") or None
        if gateway is None:
            return set()
        left = set(gone)
        updated = set()
        for ident, endpoint in (inspected.get("Containers") or {}).items():
            view = self._by_id.get(ident)
            if view is None:
                continue
            nets = {name: net for name, net in view.networks.items() if name not in left}
            nets[network] = {
                "ip_address": str(endpoint.get("IPv4Address") or "").split("/")[0] or None,
                "mac_address": endpoint.get("MacAddress") or None,
                "gateway": gateway,
            }
            self._apply(view.id, dataclasses.replace(view, networks=nets,
                                                     seen_at=time.monotonic()))
            updated.add(view.name)
        return updated

    async def refresh(self, ident: str) -> ContainerView | None:
        """Re-inspect one container (name or id) now and return its view."""
        attrs = await self.docker.call(_inspect, ident)
        view = parse_inspect(attrs, self.instance, self.adopted) if attrs else None
        if attrs is not None and view is None:
            # Exists but not ours: make sure no stale entry of ours shadows it.
            self._apply(ident, None)
            return None
        self._apply(view.id if view else ident, view)
        return view

    async def full_sync(self) -> None:
        """Rebuild the view from the engine (at start and after a reconnection)."""
        ids = await self.docker.call(_list_ids, self.instance, sorted(self.adopted))
        self.syncing = True
        try:
            for gone in set(self._by_id) - set(ids):
                self._apply(gone, None)
            results = await asyncio.gather(*(self.refresh(i) for i in ids),
                                           return_exceptions=True)
        finally:
            self.syncing = False
        for ident, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, DockerUnavailable):
                    raise result
                log.warning("inspect of %s failed: %s", ident[:12], result)
        self.synced = True
        log.info("live view synced: %d runtime(s)", len(self._by_name))

    def on_event(self, event: dict[str, Any]) -> None:
        """Called on the loop for every engine event that passed the label filter."""
        kind = event.get("Type")
        action = str(event.get("Action") or event.get("status") or "")
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        if kind == "container":
            ident = str(actor.get("ID") or event.get("id") or "")
            if not ident or action.startswith(QUIET_ACTIONS):
                return
            if action == "destroy":
                self._dirty.discard(ident)
                self._apply(ident, None)
                return
            self._mark(ident)
        elif kind == "network":
            container = attributes.get("container")
            if container and container in self._by_id and container not in self.muted:
                self._mark(container)

    def _mark(self, ident: str) -> None:
        self._dirty.add(ident)
        self._wake.set()

    async def run_refresher(self, stop: asyncio.Event) -> None:
        """Re-inspect dirty containers until `stop` is set."""
        while not stop.is_set():
            waiter = asyncio.create_task(self._wake.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            self._wake.clear()
            batch, self._dirty = self._dirty, set()
            if not batch:
                continue
            results = await asyncio.gather(*(self.refresh(i) for i in batch),
                                           return_exceptions=True)
            for ident, result in zip(batch, results, strict=True):
                if isinstance(result, DockerUnavailable):
                    # The resync after reconnection covers it.
                    break
                if isinstance(result, BaseException):
                    log.warning("refresh of %s failed: %s", ident[:12], result)
