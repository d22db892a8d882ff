"""A move: claim the members, leave and remove the old network, connect the members to
the target network (static IPs first)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import docker.errors

from common import labels
from services.executor.context import Context
from services.executor.dhcp import wiring as dhcp_wiring
from services.executor.engine import containers, macfix
from services.executor.errors import Busy, DockerUnavailable, OperationFailed
from services.executor.net import networks
from services.executor.rehome.model import (
    BUSY,
    DONE,
    FAILED,
    IDLE,
    OPERATION,
    Member,
    Target,
    network_subnets,
    static_misfit,
    stored_on_parent,
)
from services.executor.rehome.settle import finish, put_back
from services.executor.runtime import unleased
from services.executor.runtime.create import error_text
from services.executor.runtime.journal import Operation
from services.executor.runtime.live import apply_live

log = logging.getLogger(__name__)


async def move(ctx: Context, target: Target, leaving: list[str],
               journaled: set[str] | None = None,
               listed: dict[str, dict[str, Any]] | None = None) -> str:
    """Put every vNIC on `target.parent` that is on one of the `leaving` networks, or
    detached (or journaled for this move), on `target.network`.

    `listed`: the parent's networks by name as the pass's listing of the engine just
    showed them; the leaving ones are not looked up again, and a target network absent
    from it is created without looking for it first."""
    async with ctx.networks.locks.hold([*leaving, target.network]):
        found: dict[str, dict[str, Any]] = {}
        members = await find_members(ctx, target, leaving, journaled or set(), listed or {},
                                     found)
        if not members:
            for name in leaving:
                await remove_old(ctx, name, net=found.get(name))
            return DONE if leaving else IDLE
        claimed: list[str] = []
        try:
            for m in members:
                ctx.ops.begin(m.device, OPERATION)
                claimed.append(m.device)
        except Busy as exc:
            log.info("re-homing on %s postponed: %s", target.parent, exc.text)
            for device in claimed:
                ctx.ops.end(device)
            return BUSY
        muted = {v.id for v in (ctx.view.get(m.device) for m in members) if v is not None}
        ctx.view.muted |= muted
        fresh = listed is not None and target.network not in listed
        try:
            return await carry_out(ctx, target, leaving, members, found, fresh)
        finally:
            ctx.view.muted -= muted
            for m in members:
                ctx.ops.end(m.device)


async def find_members(ctx: Context, target: Target, leaving: list[str],
                       journaled: set[str], listed: dict[str, dict[str, Any]],
                       found: dict[str, dict[str, Any]]) -> list[Member]:
    """The members of the move; `found` gets the leaving networks that exist, by name."""
    members = {}
    for m in stored_on_parent(ctx, target.parent):
        network = m.vnic.get("network")
        if network in leaving or network is None or m.device in journaled:
            members[m.device] = m
    # Our runtimes the engine has on a network being left without a stored vNIC (a state
    # file lost or restored from an old backup): moved with the MAC they have now.
    for name in leaving:
        net = listed.get(name) or await ctx.docker.call(networks.find_network, name)
        if net is None:
            continue
        found[name] = net
        for device in await ctx.docker.call(networks.users, net):
            if device in members:
                continue
            view = ctx.view.get(device) or await ctx.view.refresh(device)
            if view is None:
                raise OperationFailed(f"Network {name} is also used by container {device}, "
                                      "which this agent does not manage")
            endpoint = view.networks.get(name) or {}
            vnic = {"name": f"{target.parent}", "parent_interface": target.parent,
                    "network_mode": "dhcp", "ip_address": None,
                    "mac_address": endpoint.get("mac_address"), "network": name,
                    "parent_subnet": None}
            vnics = [*ctx.vnics.get(device), vnic]
            members[device] = Member(device, vnics, len(vnics) - 1, old=dict(vnic))
    return [m for m in members.values() if ctx.view.get(m.device) is not None]


async def journal(ctx: Context, m: Member, target: Target, leaving: list[str],
                  step: str) -> None:
    if m.op is None:
        previous = ctx.journal.get(m.device)
        if previous is not None and previous.operation == OPERATION and previous.in_progress:
            m.op = previous  # carried through after a restart: same entry
        else:
            m.op = Operation(m.device, OPERATION, message=(
                f"Moving vNIC {m.vnic.get('name')} of {m.device} to {target.network}"),
                request={"target": target.to_dict(), "leaving": leaving,
                         "vnic": m.vnic.get("name"), "previous": m.old})
    m.op.set_step(step)
    await ctx.save_op(m.op)


async def carry_out(ctx: Context, target: Target, leaving: list[str],
                    members: list[Member], found: dict[str, dict[str, Any]],
                    fresh: bool) -> str:
    started = time.monotonic()
    static = [m for m in members if plan_ip(ctx, m, target)]
    if not leaving:
        # Only reattaching: a vNIC that would stay detached is not touched again.
        members = [m for m in members if m.outcome != "detached"]
        if not members:
            return IDLE
    log.info("re-homing %d runtime(s) on %s: %s → %s", len(members), target.parent,
             ", ".join(leaving) or "(detached)", target.network)
    old_nets: dict[str, dict[str, Any]] = {}
    try:
        target_id = await switch_networks(ctx, target, leaving, members, found, old_nets,
                                          fresh, started)
    except (DockerUnavailable, asyncio.CancelledError):
        raise  # the journal keeps the move; carried through when the engine is back
    except Exception as exc:
        text = error_text(exc)
        log.warning("re-homing on %s to %s failed: %s; putting the runtimes back",
                    target.parent, target.network, text)
        await put_back(ctx, members, old_nets, text)
        await finish(ctx, target, members, started)
        return FAILED
    await connect_all(ctx, target, members, static, started)
    await take_views(ctx, target, members, target_id, leaving, started)
    await finish(ctx, target, members, started)
    log.debug("re-homing on %s: done after %.0f ms", target.parent,
              (time.monotonic() - started) * 1000)
    return DONE


async def switch_networks(ctx: Context, target: Target, leaving: list[str],
                          members: list[Member], found: dict[str, dict[str, Any]],
                          old_nets: dict[str, dict[str, Any]], fresh: bool,
                          started: float) -> str:
    """Leave and remove the old networks (kept in `old_nets` for a rollback), then get or
    create the target network; its id."""
    await leave_old(ctx, target, leaving, members, found, old_nets)
    log.debug("re-homing on %s: old network left after %.0f ms", target.parent,
              (time.monotonic() - started) * 1000)
    for m in members:
        if m.op is not None:  # shown by device_status; a restart redoes from the start
            m.op.set_step("connecting")
            ctx.journal.put(m.op)
    return await ensure_target(ctx, target, members, fresh)


async def leave_old(ctx: Context, target: Target, leaving: list[str], members: list[Member],
                    found: dict[str, dict[str, Any]],
                    old_nets: dict[str, dict[str, Any]]) -> None:
    async def journal_and_leave(m: Member) -> None:
        # Each member's entry is on disk before its own disconnect; the others' writes
        # overlap the engine's disconnects instead of all coming first.
        await journal(ctx, m, target, leaving, "disconnecting")
        await leave(ctx, m, leaving)

    await asyncio.gather(*(journal_and_leave(m) for m in members))
    for name in leaving:
        net = await remove_old(ctx, name, required=True, net=found.get(name))
        if net is not None:
            old_nets[name] = net


async def connect_all(ctx: Context, target: Target, members: list[Member],
                      static: list[Member], started: float) -> None:
    """Static IPs first, so the engine's automatic assignment cannot take one of them."""
    dynamic = [m for m in members if m not in static and m.outcome != "detached"]
    log.debug("re-homing on %s: %s ready after %.0f ms", target.parent, target.network,
              (time.monotonic() - started) * 1000)
    await asyncio.gather(*(attach(ctx, m, target) for m in static))
    await asyncio.gather(*(attach(ctx, m, target) for m in dynamic))
    log.debug("re-homing on %s: %d runtime(s) connected after %.0f ms", target.parent,
              len(members), (time.monotonic() - started) * 1000)


def plan_ip(ctx: Context, m: Member, target: Target) -> bool:
    """Decide the member's address; True when it keeps a static IP."""
    ip = m.vnic.get("ip_address")
    if not ip:
        return False
    reason = static_misfit(str(ip), target)
    if reason is None:
        m.ip = str(ip)
        return True
    if ctx.config.rehome_static_misfit == "detach":
        m.outcome, m.note = "detached", f"{reason}; left disconnected"
    else:
        m.note = f"{reason}; the engine assigned an address"
    return False


async def leave(ctx: Context, m: Member, leaving: list[str]) -> None:
    for name in leaving:
        if await ctx.networks.disconnect(m.device, name):
            log.debug("%s disconnected from %s", m.device, name)


async def remove_old(ctx: Context, name: str, required: bool = False,
                     net: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Remove a network being left (ours, unused); its state, for a rollback.  `net`: as
    this move found it (its id, labels and configuration do not change), else looked up."""
    if net is None:
        net = await ctx.docker.call(networks.find_network, name)
    if net is None:
        return None
    if not labels.owned(net.get("Labels"), ctx.instance):
        if required:
            raise OperationFailed(f"MACVLAN network {name} is not managed by this agent and "
                                  "cannot be replaced by the parent's new network")
        return None
    in_use = await ctx.docker.call(networks.users, net)
    if in_use:
        if required:
            raise OperationFailed(f"MACVLAN network {name} is still used by "
                                  f"{', '.join(in_use)}")
        return None
    if await ctx.docker.call(networks.remove_left, net["Id"]):
        log.info("removed network %s (%s)", name, ", ".join(network_subnets(net)))
    return net


async def ensure_target(ctx: Context, target: Target, members: list[Member],
                        fresh: bool) -> str:
    first = members[0]
    vnic = {"parent_interface": target.parent, "parent_subnet": target.subnet,
            "parent_gateway": target.gateway, "parent_address": target.host_address,
            "name": first.vnic.get("name") or target.parent}
    op_id = first.op.op_id if first.op else "rehome"
    ref = await ctx.networks.ensure_macvlan(first.device, vnic, op_id, fresh)
    if ref.name != target.network:
        # The engine reused a network of that subnet under another name ("Pool overlaps").
        log.info("subnet %s on %s is served by network %s", target.subnet, target.parent,
                 ref.name)
    for m in members:
        m.vnic["network"] = ref.name
    return ref.id


async def attach(ctx: Context, m: Member, target: Target) -> None:
    network = str(m.vnic["network"])
    view = ctx.view.get(m.device)
    if view is None:
        m.outcome, m.error = "detached", f"Container {m.device} disappeared"
        return
    leased, pending = await dhcp_wiring.lease_for_rehome(ctx, m.device, m.vnic,
                                                         target.subnet)
    if pending:
        # No lease on the new LAN yet: left unconnected (never an address of the engine's
        # choosing); connected with its lease once one comes (runtime/unleased.py).
        m.outcome, m.note = "rehomed_new_ip", "no DHCP lease yet; connected once leased"
        unleased.follow(ctx, m.device, str(m.vnic["name"]))
        return
    m.ip = leased or m.ip
    m.leased = leased is not None
    per_endpoint = ctx.docker.supports(containers.PER_ENDPOINT_MAC_API)
    mac = m.vnic.get("mac_address") if per_endpoint else None
    try:
        await ctx.networks.connect(view.id, network, m.ip, mac)
    except docker.errors.APIError as exc:
        text = str(exc.explanation or exc)
        if "already exists" not in text:  # connected before a restart: nothing to do
            m.outcome, m.error = "detached", f"Connecting to {network} failed: {text}"
            return
    m.connected = True
    if m.old.get("network") is None:
        m.outcome = "reattached"
    else:
        m.outcome = "rehomed_new_ip" if m.note else "rehomed"
    if not per_endpoint and view.running and m.vnic.get("mac_address"):
        await early_mac(ctx, m, view.pid, target)


async def early_mac(ctx: Context, m: Member, pid: int, target: Target) -> None:
    """The MAC at once (older engines): the LAN must not learn the engine's own one.  The
    interface is found in the runtime's namespace by the address it was connected with,
    else by the new subnet, so no inspection has to come first; `take_views` then
    records it (and does it by the inspected address where this could not)."""
    try:
        # Not in the engine's pool: the other members' connects are queued there, and
        # behind them this waited 0.2-0.9 s with the engine's MAC on the LAN.
        await asyncio.to_thread(macfix.apply_in, pid, m.ip or target.subnet,
                                str(m.vnic["mac_address"]))
    except (macfix.MacFixUnavailable, OSError) as exc:
        log.debug("MAC of %s not set right after its connect: %s", m.device, exc)


async def take_views(ctx: Context, target: Target, members: list[Member], network_id: str,
                     leaving: list[str], started: float) -> None:
    """The connected members' views from one inspection of the new network, instead of
    an inspection of each runtime after its connect (twenty of those held the engine's
    thread pool while connects waited); then what each running one needs live: dns
    servers, the MACs the engine cannot set, the DHCP lease."""
    connected = [m for m in members if m.connected]
    if not connected:
        return
    net = await ctx.docker.call(networks.inspect_network, network_id)
    network = str(connected[0].vnic["network"])
    taken = ctx.view.take_endpoints(network, net, leaving) if net is not None else set()
    await asyncio.gather(*(ctx.view.refresh(m.device) for m in connected
                           if m.device not in taken))

    async def live(m: Member) -> None:
        view = ctx.view.get(m.device)
        if view is not None and view.running:
            await apply_live(ctx, m.device, m.vnics)
            await dhcp_wiring.after_rehome(ctx, m.device, m.vnic, leased=m.leased)

    await asyncio.gather(*(live(m) for m in connected))
    log.debug("re-homing on %s: views and live settings done after %.0f ms", target.parent,
              (time.monotonic() - started) * 1000)
