"""Which networks move, the re-homing pass, and moves a restart interrupted."""

from __future__ import annotations

import logging
from typing import Any

from services.executor.context import Context
from services.executor.errors import DockerUnavailable
from services.executor.net import networks
from services.executor.net.hostnets import gateway_in, norm_subnet, subnets
from services.executor.rehome import wifimove
from services.executor.rehome.model import (
    BUSY,
    DONE,
    FAILED,
    IDLE,
    OPERATION,
    Target,
    network_subnets,
    stored_on_parent,
)
from services.executor.rehome.move import move
from services.executor.runtime.create import error_text

log = logging.getLogger(__name__)


async def check_parent(ctx: Context, parent: str, nets: list[dict[str, Any]]) -> str:
    """Move the parent's MACVLAN network (`nets`: those on `parent`) to its current subnet
    when it follows the parent and the subnet changed; reattach detached vNICs.
    IDLE / DONE / BUSY / FAILED."""
    iface = ctx.hostnets.get(parent)
    current = subnets(iface)
    if iface is None or not current:
        return IDLE  # unknown or inactive: leave everything until a subnet appears
    stored = stored_on_parent(ctx, parent)
    seen = set(ctx.hostnets.seen(parent))
    detected = {norm_subnet(str(m.vnic.get("parent_subnet"))) for m in stored
                if m.vnic.get("parent_address")}
    moving, staying = [], []
    for net in nets:
        subs = network_subnets(net)
        if any(s in current for s in subs):
            staying.append(net)
            gateway = gateway_in(iface, subs[0])
            if gateway and networks.network_gateway(net) not in (None, gateway):
                log.info("gateway of %s is now %s; network %s keeps %s (a gateway change "
                         "alone moves nothing)", parent, gateway, net["Name"],
                         networks.network_gateway(net))
        elif any(s in seen or s in detected for s in subs):
            moving.append(net)
        else:
            log.debug("network %s on %s (%s) is not on the host's subnets %s; left as it is",
                      net["Name"], parent, subs, current)
    result = IDLE
    pending = []
    listed = {str(n["Name"]): n for n in nets}
    if moving and not staying:
        result = await move(ctx, Target.of(parent, iface, current[0]),
                            [n["Name"] for n in moving], listed=listed)
        if result == FAILED:
            pending = [s for n in moving for s in network_subnets(n)]
    elif any(m.vnic.get("network") is None for m in stored):
        home = network_subnets(staying[0])[0] if staying else (current[0] if not nets else None)
        if home is not None:
            result = await move(ctx, Target.of(parent, iface, home), [], listed=listed)
    wireless = await wifimove.check(ctx, parent, iface, current)
    if BUSY in (result, wireless):
        result = BUSY
    elif wireless == DONE and result == IDLE:
        result = DONE
    if result != BUSY:
        # A move that failed keeps the old subnet in the history, so the next trigger
        # (event, discovery, restart) tries again.
        await ctx.remember_subnets(parent, current + [s for s in pending if s not in current])
    return result


async def recover(ctx: Context) -> str:
    """Carry through moves a restart interrupted (journal entries still in progress)."""
    groups: dict[Target, tuple[set[str], set[str]]] = {}
    for op in ctx.journal.all():
        if op.operation != OPERATION or not op.in_progress or ctx.ops.current(op.device_id):
            continue
        try:
            target = Target.from_dict(op.request["target"])
        except (KeyError, TypeError):
            op.fail("Interrupted by an executor restart (unreadable journal entry)")
            await ctx.save_op(op)
            continue
        devices, leaving = groups.setdefault(target, (set(), set()))
        devices.add(op.device_id)
        leaving.update(str(n) for n in op.request.get("leaving") or [])
    result = IDLE
    for target, (devices, leaving) in groups.items():
        log.warning("carrying through the re-homing of %s on %s to %s after a restart",
                    sorted(devices), target.parent, target.network)
        outcome = await move(ctx, target, sorted(leaving), journaled=devices)
        if outcome == BUSY:
            result = BUSY
            continue
        for device in devices:  # journaled but no longer a member (deleted, ...)
            left = ctx.journal.get(device)
            if left is not None and left.operation == OPERATION and left.in_progress \
                    and not ctx.ops.current(device):
                left.fail("Interrupted by an executor restart; the runtime was not moved")
                await ctx.save_op(left)
        result = result if result == BUSY else DONE
    return result


async def run_pass(ctx: Context, parents: set[str] | None) -> set[str]:
    """One reconciliation pass; returns the parents to try again shortly (busy)."""
    retry: set[str] = set()
    if ctx.destroying:
        return retry  # self-destruct removes everything; nothing is moved meanwhile
    if await recover(ctx) == BUSY:
        retry.add("*")
    wanted = set(ctx.hostnets.table)
    for device in ctx.vnics.devices():
        wanted.update(str(v.get("parent_interface")) for v in ctx.vnics.get(device))
    if parents is not None:
        wanted &= parents
    changed = False
    on_parent: dict[str, list[dict[str, Any]]] = {}
    if wanted:
        for net in await ctx.docker.call(networks.all_macvlans):
            on_parent.setdefault(str((net.get("Options") or {}).get("parent")), []).append(net)
    for parent in sorted(wanted):
        try:
            result = await check_parent(ctx, parent, on_parent.get(parent, []))
        except DockerUnavailable:
            raise
        except Exception as exc:
            log.error("re-homing check of %s failed: %s", parent, error_text(exc))
            continue
        if result == BUSY:
            retry.add(parent)
        changed = changed or result in (DONE, FAILED)
    if changed:
        await ctx.networks.collect_macvlans()  # e.g. a new network nobody could join
    return retry
