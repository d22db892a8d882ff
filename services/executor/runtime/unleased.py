"""dhcp vNICs that had no lease at create: connected to their network once leased.

A dhcp vNIC that got no lease within the bound at create is not connected to its MACVLAN
network at all (the engine would give it an address of its own choosing, docs/dhcp.md):
the runtime starts without it, and the keeper goes on asking (with its backoff) through a
MACVLAN link with the vNIC's MAC in a namespace of our own.  Once a lease comes, that link
is deleted and the container — running or stopped — is connected to the network with the
lease as its fixed address; a running runtime gets its MACs (older engines) and the
keeper's `attach`, which resumes the lease on the interface.

Crash-safe without a file of its own: the pending state is derived at every resync from
the stored vNICs against the container's networks (a stored dhcp vNIC whose network the
container lacks is pending); the lease itself is on file in the keeper's store.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import docker.errors

from services.executor.context import Context
from services.executor.dhcp import wiring as dhcp_wiring
from services.executor.dhcp.keeper import DhcpError
from services.executor.dhcp.lease import Lease
from services.executor.dhcp.netns import NetnsError
from services.executor.engine import containers
from services.executor.errors import DockerUnavailable, OperationFailed, error_text
from services.executor.runtime import live

log = logging.getLogger(__name__)

POLL = 0.5  # how often a pending vNIC's lease is looked at (the keeper's record)
LINK_RETRY = (1.0, 60.0)  # backoff while the private link cannot be made: first, max


def is_pending(ctx: Context, device: str, vnic: dict[str, Any]) -> bool:
    """A stored dhcp vNIC the container is not connected to (wireless ones have no
    engine network)."""
    view = ctx.view.get(device)
    return (view is not None and dhcp_wiring.is_dhcp(vnic) and not vnic.get("wifi")
            and bool(vnic.get("mac_address")) and bool(vnic.get("network"))
            and vnic["network"] not in view.networks)


def follow(ctx: Context, device: str, name: str) -> None:
    """Connect `device`'s vNIC `name` once it is leased, in the background."""
    wiring = ctx.dhcp
    key = (device, name)
    if wiring is None or key in wiring.pending:
        return
    task = ctx.ops.spawn(_follow(ctx, device, name), f"dhcp-connect-{device}-{name}")
    wiring.pending[key] = task
    task.add_done_callback(lambda t: wiring.pending.pop(key, None)
                           if wiring.pending.get(key) is t else None)


def follow_all(ctx: Context, device: str) -> None:
    """After a create: every vNIC of `device` left unconnected for want of a lease."""
    for vnic in ctx.vnics.get(device):
        if is_pending(ctx, device, vnic):
            follow(ctx, device, str(vnic["name"]))


def resync(ctx: Context) -> None:
    """Executor start, engine reconnection: pending vNICs derived from the stored vNICs
    against each container's networks."""
    if ctx.dhcp is None:
        return
    for view in ctx.view.all():
        if ctx.ops.current(view.name) is None:
            follow_all(ctx, view.name)


def _vnic(ctx: Context, device: str, name: str) -> dict[str, Any] | None:
    for vnic in ctx.vnics.get(device):
        if vnic.get("name") == name:
            return vnic
    return None


async def _follow(ctx: Context, device: str, name: str) -> None:
    wiring = ctx.dhcp
    assert wiring is not None
    key = (device, name)
    host = ctx.hostns.path
    retry = LINK_RETRY[0]
    while True:
        if ctx.ops.current(device) is not None:
            # An operation (the create, a re-homing) decides the vNIC's network first.
            await asyncio.sleep(POLL)
            continue
        vnic = _vnic(ctx, device, name)
        if vnic is None or not is_pending(ctx, device, vnic):
            await wiring.close_private(key)
            return  # deleted, or connected by someone else
        if key not in wiring.private:
            try:
                await wiring.open_private(device, vnic, host)
                retry = LINK_RETRY[0]
            except (NetnsError, OSError, DhcpError, TimeoutError) as exc:
                log.warning("%s/%s: cannot lease through a link of our own (%s); again "
                            "in %g s", device, name, exc, retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, LINK_RETRY[1])
                continue
        found = wiring.keeper.status(device, name) or {}
        ip = found.get("ip_address") if found.get("state") == "bound" else None
        # No await between this check and _connect's claim.
        free = ctx.ops.current(device) is None
        if ip and free and dhcp_wiring.fits(str(ip), vnic) and await _connect(
                ctx, device, vnic, str(ip)):
            return
        await asyncio.sleep(POLL)


async def _connect(ctx: Context, device: str, vnic: dict[str, Any], ip: str) -> bool:
    """Claim the device, connect the vNIC with its lease as the fixed address; False
    (logged, leasing through our link again) if the engine refused."""
    wiring = ctx.dhcp
    assert wiring is not None
    key = (device, str(vnic["name"]))
    ctx.ops.begin(device, "dhcp_connect")  # an operation asked for meanwhile is Busy
    try:
        await wiring.close_private(key)  # the MAC is free on the parent from here
        async with ctx.networks.locks.hold([vnic["network"]]):
            await ctx.networks.ensure_macvlan(device, vnic, "dhcp-connect")
            mac = str(vnic["mac_address"]).lower()
            per_endpoint = ctx.docker.supports(containers.PER_ENDPOINT_MAC_API)
            await ctx.networks.connect(device, vnic["network"], ip,
                                       mac if per_endpoint else None)
        log.info("%s/%s: leased %s; connected to %s with it", device, key[1], ip,
                 vnic["network"])
    except (docker.errors.APIError, OperationFailed, DockerUnavailable) as exc:
        log.warning("%s/%s: connecting with the lease %s failed: %s", device, key[1], ip,
                    error_text(exc))
        ctx.ops.end(device)
        return False
    try:
        view = await ctx.view.refresh(device)
        if view is not None and view.running:
            vnics = ctx.vnics.get(device)
            await live.apply_macs(ctx, device, vnics)  # older engines: the MAC, by address
            for target in await wiring.targets(ctx, view, [vnic]):
                await wiring.attach(target)
    finally:
        ctx.ops.end(device)
    return True


# --- before an agent-initiated start ----------------------------------------------------


async def before_start(ctx: Context, device: str) -> None:
    """Before the agent starts a stopped runtime (start, restart, boot sync, watchdog):
    each dhcp vNIC whose lease on file has expired or is not its endpoint's fixed address
    (an expiry, a NAK, a long power-off) is leased again through a link of our own
    (INIT-REBOOT with the previous address first) and reconnected with the new lease,
    or left unconnected until one comes; the engine's start then puts only a lease on
    it.  Blocks up to the lease bound for such a vNIC only."""
    wiring = ctx.dhcp
    view = ctx.view.get(device)
    if wiring is None or view is None or view.running:
        return
    stale = [v for v in ctx.vnics.get(device) if dhcp_wiring.is_dhcp(v)
             and not v.get("wifi") and v.get("mac_address") and v.get("network")
             and not wiring.unconnected((device, str(v["name"])))]
    if not stale:
        return
    attrs = await ctx.docker.call(lambda api: api.inspect_container(view.id))
    endpoints = ((attrs or {}).get("NetworkSettings") or {}).get("Networks") or {}
    for vnic in stale:
        endpoint = endpoints.get(str(vnic["network"]))
        if endpoint is None:
            continue  # not connected: pending (unleased.follow) or detached by re-homing
        fixed = (endpoint.get("IPAMConfig") or {}).get("IPv4Address")
        record = wiring.keeper.store.load(device, str(vnic["name"])) or {}
        try:
            lease = Lease.from_dict(record["lease"]) if record.get("lease") else None
        except (KeyError, TypeError, ValueError):
            lease = None
        if lease is not None and not lease.expired() and (
                lease.ip_address == fixed
                or (fixed is None and not dhcp_wiring.fits(lease.ip_address, vnic))):
            continue  # fixed already, or a lease that cannot be fixed (connected as at create)
        await _relink(ctx, device, vnic, view.id)


async def _relink(ctx: Context, device: str, vnic: dict[str, Any], cid: str) -> None:
    wiring = ctx.dhcp
    assert wiring is not None
    name, network = str(vnic["name"]), str(vnic["network"])
    log.info("%s/%s: the lease on file is not the endpoint's; leased again before the "
             "start", device, name)
    await ctx.networks.disconnect(cid, network)
    host = ctx.hostns.path
    ip = await wiring.lease_first(device, vnic, host)
    if ip is not None:
        # A lease outside the network's subnet cannot be fixed: connected as at create.
        fixed = ip if dhcp_wiring.fits(ip, vnic) else None
        per_endpoint = ctx.docker.supports(containers.PER_ENDPOINT_MAC_API)
        try:
            async with ctx.networks.locks.hold([network]):
                await ctx.networks.ensure_macvlan(device, vnic, "dhcp-relink")
                await ctx.networks.connect(cid, network, fixed,
                                           str(vnic["mac_address"]).lower() if per_endpoint
                                           else None)
            return
        except (docker.errors.APIError, OperationFailed) as exc:
            log.warning("%s/%s: connecting with the lease %s failed: %s", device, name, ip,
                        error_text(exc))
    follow(ctx, device, name)  # unconnected until a lease comes
