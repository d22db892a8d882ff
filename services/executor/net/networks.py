"""Internal and MACVLAN networks: get-or-create, removal, garbage collection.

* `<device>_internal` — an internal-only bridge per runtime (no route off the host),
  subnet from our own allocator (`ipam.py`).  The agent reaches the runtime through it.
* `macvlan_<parent>_<subnet>` — one MACVLAN network per parent interface and subnet,
  shared by every runtime on that LAN.  Get-or-create:
  - a network of that name with the same parent and subnet is reused;
  - one of ours that is unused but configured differently (another gateway, a leftover
    of an interrupted run) is stale: it is removed and created afresh;
  - Docker's "Pool overlaps" means a MACVLAN network for that LAN exists under another
    name (created by an older agent or by hand): reused when its parent and subnet match,
    otherwise a clear error.
* A MACVLAN network is removed once no container (ours or not, running or stopped) is
  configured with it, and only when it is ours.

Concurrency: engine calls run in the pool; `NetworkLocks` serialises everything that
touches one network name on the loop, so a create that has made (or found) a MACVLAN
network holds it until its container is connected, and garbage collection never removes a
network between those two moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import docker.errors
import docker.types

from common import labels
from services.executor.engine.docker_api import DockerApi
from services.executor.errors import Conflict, OperationFailed
from services.executor.net import ipam, names

log = logging.getLogger(__name__)


class NetworkLocks:
    """Two kinds of lock per network name.

    `hold()`: an operation that needs a network to exist while it works (a create, a
    move, a connect with a lease) holds it; a network is only removed by its holder.

    `lane()`: one change of the network's endpoints (a connect, a disconnect) at a time.
    Docker 20.10 counts each network's endpoints apart from the endpoints and updates the
    count racily when two changes on one network overlap; a count left too high makes
    the network unremovable until the engine restarts ("has active endpoints", none
    listed), so the next move off it fails.  In sequence the engine's connects were
    faster here than eight at a time, and its disconnects about as fast
    (docs/performance.md, "Re-homing of 20, fourth round")."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._lanes: dict[str, asyncio.Lock] = {}

    def busy(self, name: str) -> bool:
        lock = self._locks.get(name)
        return lock is not None and lock.locked()

    @contextlib.asynccontextmanager
    async def hold(self, names_: Iterable[str]) -> AsyncIterator[None]:
        # Sorted, so two holders of overlapping sets cannot deadlock.
        wanted = sorted(set(names_))
        locks = [self._locks.setdefault(n, asyncio.Lock()) for n in wanted]
        acquired: list[asyncio.Lock] = []
        try:
            for lock in locks:
                await lock.acquire()
                acquired.append(lock)
            yield
        finally:
            for lock in reversed(acquired):
                lock.release()

    @contextlib.asynccontextmanager
    async def lane(self, name: str) -> AsyncIterator[None]:
        lock = self._lanes.setdefault(name, asyncio.Lock())
        async with lock:
            yield


@dataclass(frozen=True)
class NetworkRef:
    name: str
    id: str
    created: bool


# --- blocking helpers (run in the engine pool) ---------------------------------------------


def find_network(api: Any, name: str) -> dict[str, Any] | None:
    """The inspected network called exactly `name`, or None."""
    for row in api.networks(names=[name]):
        if row.get("Name") == name:
            try:
                return api.inspect_network(row["Id"])  # type: ignore[no-any-return]
            except docker.errors.NotFound:
                return None  # removed meanwhile
    return None


def inspect_network(api: Any, ident: str) -> dict[str, Any] | None:
    """The inspected network (with its endpoints, `Containers`), or None when it is gone."""
    try:
        return api.inspect_network(ident)  # type: ignore[no-any-return]
    except docker.errors.NotFound:
        return None


def network_subnets(net: dict[str, Any]) -> list[str]:
    return [c["Subnet"] for c in (net.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")]


def network_gateway(net: dict[str, Any]) -> str | None:
    for cfg in (net.get("IPAM") or {}).get("Config") or []:
        if cfg.get("Gateway"):
            return str(cfg["Gateway"])
    return None


def users(api: Any, network: dict[str, Any]) -> list[str]:
    """Names of every container configured with the network, running or not.

    Asked by name and by id: a container connected before its first start carries the
    network by name only (its endpoint, and so the id, comes at start)."""
    # One listing: the engine ORs the values of one filter key.
    rows = api.containers(all=True, filters={"network": [network["Name"], network["Id"]]})
    return sorted({str((row.get("Names") or ["?"])[0]).lstrip("/") for row in rows})


def _same_subnet(a: str, b: str) -> bool:
    return ipaddress.IPv4Network(a, strict=False) == ipaddress.IPv4Network(b, strict=False)


def matches_macvlan(net: dict[str, Any], parent: str, subnet: str) -> bool:
    return (net.get("Driver") == "macvlan"
            and (net.get("Options") or {}).get("parent") == parent
            and any(_same_subnet(s, subnet) for s in network_subnets(net)))


def create_macvlan(api: Any, name: str, parent: str, subnet: str, gateway: str | None,
                   network_labels: dict[str, str], reserved: str | None = None) -> str:
    # The host's own address on the LAN is reserved, so the engine never hands it out.
    aux = {"host": reserved} if reserved and reserved != gateway else None
    pool = docker.types.IPAMPool(subnet=subnet, gateway=gateway, aux_addresses=aux)
    result = api.create_network(
        name, driver="macvlan", options={"parent": parent, "macvlan_mode": "bridge"},
        ipam=docker.types.IPAMConfig(pool_configs=[pool]), labels=network_labels,
        check_duplicate=True)
    return str(result["Id"])


def ensure_macvlan(api: Any, instance: str, parent: str, subnet: str, gateway: str | None,
                   network_labels: dict[str, str], reserved: str | None = None,
                   fresh: bool = False) -> NetworkRef:
    """Get or create the MACVLAN network of `subnet` on `parent`.  `fresh`: the caller
    saw no network of that name a moment ago, so it is created at once and looked for
    only when the engine says it exists."""
    name = names.macvlan_network(parent, subnet)
    existing = None if fresh else find_network(api, name)
    if existing is not None:
        ours = labels.owned(existing.get("Labels"), instance)
        fits = matches_macvlan(existing, parent, subnet)
        gateway_fits = gateway is None or network_gateway(existing) in (None, gateway)
        if fits and gateway_fits:
            return NetworkRef(name, existing["Id"], False)
        in_use = users(api, existing)
        if ours and not in_use:
            log.info("removing stale network %s (parent %s, subnets %s, gateway %s)", name,
                     (existing.get("Options") or {}).get("parent"), network_subnets(existing),
                     network_gateway(existing))
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_network(existing["Id"])
        elif fits:
            # In use with another gateway: the runtimes on it agree on one; keep it.
            log.warning("network %s has gateway %s, not the requested %s; reusing it", name,
                        network_gateway(existing), gateway)
            return NetworkRef(name, existing["Id"], False)
        else:
            raise OperationFailed(f"Network {name} exists with a different configuration "
                                  f"(driver {existing.get('Driver')}, subnets "
                                  f"{network_subnets(existing)}) and cannot be replaced")
    try:
        return NetworkRef(name, create_macvlan(api, name, parent, subnet, gateway,
                                               network_labels, reserved), True)
    except docker.errors.APIError as exc:
        text = str(exc.explanation or exc)
        lowered = text.lower()
        if "pool overlaps" in lowered or "overlap" in lowered:
            reused = _overlapping_macvlan(api, parent, subnet)
            if reused is not None:
                log.info("subnet %s on %s already has MACVLAN network %s; reusing it", subnet,
                         parent, reused["Name"])
                return NetworkRef(reused["Name"], reused["Id"], False)
            raise OperationFailed(f"Subnet {subnet} overlaps an existing Docker network that is "
                                  f"not a MACVLAN network on {parent}: {text}") from None
        if "already exists" in lowered:
            if fresh:
                return ensure_macvlan(api, instance, parent, subnet, gateway, network_labels,
                                      reserved)
            again = find_network(api, name)
            if again is not None and matches_macvlan(again, parent, subnet):
                return NetworkRef(name, again["Id"], False)
        if "already using parent interface" in lowered:
            holder = macvlans_on_parent(api, parent)
            held = ", ".join(f"{n['Name']} ({', '.join(network_subnets(n))})" for n in holder)
            raise OperationFailed(f"Parent interface {parent} already carries the MACVLAN "
                                  f"network {held or '?'}; the engine allows one MACVLAN "
                                  f"network per parent, so {subnet} cannot be added") from None
        if "subinterface" in lowered or "not found" in lowered or "no such" in lowered:
            raise OperationFailed(f"Parent interface {parent} was not found on the host "
                                  f"(Docker: {text})") from None
        raise OperationFailed(f"Creating network {name} failed: {text}") from None


def _overlapping_macvlan(api: Any, parent: str, subnet: str) -> dict[str, Any] | None:
    for row in api.networks(filters={"driver": "macvlan"}):
        try:
            net = api.inspect_network(row["Id"])
        except docker.errors.NotFound:
            continue
        if matches_macvlan(net, parent, subnet):
            return net  # type: ignore[no-any-return]
    return None


def all_macvlans(api: Any) -> list[dict[str, Any]]:
    """Every MACVLAN network of the engine with its options, IPAM and labels: the
    engine's listing carries all of an inspection but the endpoints (`Containers`)."""
    return list(api.networks(filters={"driver": "macvlan"}))


def macvlans_on_parent(api: Any, parent: str) -> list[dict[str, Any]]:
    """Every MACVLAN network on `parent` (the engine allows one per parent)."""
    return [n for n in all_macvlans(api) if (n.get("Options") or {}).get("parent") == parent]


def disconnect(api: Any, container: str, network: str) -> bool:
    """Disconnect a container from a network; False when it was not connected (or either
    is gone)."""
    try:
        api.disconnect_container_from_network(container, network, force=True)
        return True
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        text = str(exc.explanation or exc).lower()
        if "not connected" in text or "no such" in text or "not found" in text:
            return False
        raise


def connect(api: Any, container: str, network: str, ip: str | None, mac: str | None) -> None:
    """Connect with an optional static IP and (engines >= 1.44) the endpoint's MAC."""
    api.connect_container_to_network(container, network, ipv4_address=ip, mac_address=mac)


def create_internal(api: Any, name: str, pool: str, prefix: int, instance: str,
                    network_labels: dict[str, str]) -> NetworkRef:
    """Get or create `<device>_internal` on the first free block of our pool."""
    # Blocks the engine refused although no listed network had them: taken meanwhile by
    # another creator, or just released and not yet free in the engine's allocator (seen
    # under create/delete churn).  Never tried twice, so each attempt moves on.
    refused: list[str] = []
    for _attempt in range(8):
        # One listing answers both questions: does the name exist, which blocks are taken.
        listed = api.networks()
        existing = next((r for r in listed if r.get("Name") == name), None)
        if existing is not None:
            if labels.owned(existing.get("Labels"), instance) and existing.get("Internal"):
                return NetworkRef(name, existing["Id"], False)
            raise Conflict(f"Network {name} already exists and is not managed by this agent")
        subnet = ipam.pick_subnet(pool, prefix, [*ipam.subnets_of(listed), *refused])
        ipam_config = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
        try:
            result = api.create_network(name, driver="bridge", internal=True, ipam=ipam_config,
                                        labels=network_labels, check_duplicate=True)
            return NetworkRef(name, str(result["Id"]), True)
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc).lower()
            if "overlap" in text or "already exists" in text:
                log.info("network %s: block %s refused (%s); trying another", name, subnet,
                         exc.explanation or exc)
                refused.append(subnet)
                continue  # the name taken meanwhile shows in the next listing
            raise OperationFailed(f"Creating network {name} failed: "
                                  f"{exc.explanation or exc}") from None
    raise OperationFailed(f"Creating network {name} failed: no free subnet after 8 attempts")


def remove_network(api: Any, name_or_id: str, disconnect: str | None = None) -> bool:
    """Remove a network (disconnecting `disconnect` first); False when it was absent."""
    if disconnect:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            api.disconnect_container_from_network(disconnect, name_or_id, force=True)
    try:
        api.remove_network(name_or_id)
        return True
    except docker.errors.NotFound:
        return False


def remove_left(api: Any, ident: str, wait: float = 1.0, pause: float = 0.05) -> bool:
    """Remove a network whose endpoints were all just disconnected; False when it was
    absent.

    Docker 20.10 keeps a count of each network's endpoints apart from the endpoints
    themselves, and may refuse the removal with "has active endpoints" right after the
    last disconnect although it lists none: asked again a moment later it removes the
    network.  That is retried for up to `wait` seconds while no endpoint is listed; an
    endpoint that is listed (something connected meanwhile) ends it at once, and so
    does a refusal that outlasts the wait (the count of that engine can also stay
    wrong, and then only an engine restart clears it)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            api.remove_network(ident)
            return True
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if "active endpoints" not in str(exc.explanation or exc).lower():
                raise
            listed = (inspect_network(api, ident) or {}).get("Containers") or {}
            if listed or time.monotonic() >= deadline:
                names = ", ".join(sorted(str(e.get("Name")) for e in listed.values()))
                why = (f"still used by {names}" if names
                       else "it counts endpoints it does not list")
                raise OperationFailed(f"the engine refuses to remove network {ident[:12]}: "
                                      f"{why}") from None
            log.debug("network %s: engine still counting endpoints; removing again", ident[:12])
            time.sleep(pause)


def owned_networks(api: Any, instance: str, kind: str | None = None) -> list[dict[str, Any]]:
    return list(api.networks(filters=labels.filters(instance, kind)))


def remove_if_unused(api: Any, network: dict[str, Any]) -> bool:
    if users(api, network):
        return False
    try:
        api.remove_network(network["Id"])
        return True
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        # An endpoint appeared meanwhile (a container outside our locks): keep it.
        log.info("network %s kept: %s", network["Name"], exc.explanation or exc)
        return False


# --- the async manager -------------------------------------------------------------------------


class Networks:
    def __init__(self, docker_api: DockerApi, instance: str, pool: str, prefix: int,
                 agent_container: str | None) -> None:
        self.docker = docker_api
        self.instance = instance
        self.pool = pool
        self.prefix = prefix
        self.agent = agent_container
        self.locks = NetworkLocks()
        self._alloc = asyncio.Lock()

    async def ensure_internal(self, device: str, op_id: str) -> NetworkRef:
        name = names.internal_network(device)
        async with self._alloc:
            return await self.docker.call(create_internal, name, self.pool, self.prefix,
                                          self.instance,
                                          labels.internal(self.instance, device, op_id))

    async def ensure_macvlan(self, device: str, vnic: dict[str, Any], op_id: str,
                             fresh: bool = False) -> NetworkRef:
        """Caller holds the lock of `vnic['network']`."""
        parent, subnet = vnic["parent_interface"], vnic["parent_subnet"]
        network_labels = labels.macvlan(self.instance, device, vnic["name"], parent, subnet,
                                        op_id)
        return await self.docker.call(ensure_macvlan, self.instance, parent, subnet,
                                      vnic.get("parent_gateway"), network_labels,
                                      vnic.get("parent_address"), fresh)

    async def connect(self, container: str, network: str, ip: str | None,
                      mac: str | None) -> None:
        """Connect `container` to `network`, one endpoint change at a time on it
        (`NetworkLocks.lane`)."""
        async with self.locks.lane(network):
            await self.docker.call(connect, container, network, ip, mac)

    async def disconnect(self, container: str, network: str) -> bool:
        """`disconnect` through the network's lane; False when it was not connected."""
        async with self.locks.lane(network):
            return await self.docker.call(disconnect, container, network)

    async def remove_internal(self, device: str, unlabelled: bool = False) -> bool:
        """Remove `<device>_internal`: ours by labels, or (`unlabelled`, an adopted
        runtime's) one without any ownership labels."""
        name = names.internal_network(device)
        net = await self.docker.call(find_network, name)
        if net is None:
            return False
        found = net.get("Labels") or {}
        if unlabelled and not found.get(labels.MANAGED):
            return await self.docker.call(remove_network, net["Id"], self.agent)
        if not labels.owned(found, self.instance):
            log.warning("network %s is not ours; left in place", name)
            return False
        return await self.docker.call(remove_network, net["Id"], self.agent)

    async def collect_macvlans(self, only: Iterable[str] | None = None) -> list[str]:
        """Remove our MACVLAN networks that no container uses; returns their names."""
        nets = await self.docker.call(owned_networks, self.instance, labels.KIND_MACVLAN)
        wanted = set(only) if only is not None else None
        removed = []
        for net in nets:
            if wanted is not None and net["Name"] not in wanted:
                continue
            if self.locks.busy(net["Name"]):
                continue  # a create holds it until its container is connected: in use
            async with self.locks.hold([net["Name"]]):
                if await self.docker.call(remove_if_unused, net):
                    log.info("removed unused network %s", net["Name"])
                    removed.append(net["Name"])
        return removed
