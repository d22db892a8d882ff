"""Re-homing: runtimes follow their parent interface to its new subnet.

The engine allows **one MACVLAN network per parent interface** ("network ... is already
using parent interface"), so a move is made per parent, for every vNIC on it at once:

1. claim every member device (the per-device operation lock; a busy device postpones the
   whole move, which is retried shortly) and journal an operation `rehome` for each;
2. `disconnecting` — disconnect the members from the old network and remove it (it must
   be ours and have no other users);
3. `connecting` — get or create `macvlan_<parent>_<new subnet>` with the parent's gateway
   (the host's own address reserved), then connect the members with their MACs: static
   IPs that still fit the new subnet first, then the others, so the engine's automatic
   assignment can never take an address a static vNIC needs;
4. set the MACs the engine could not (older engines), update `runtime_vnics.json`, record
   the outcome in each device's network events, publish `runtime.rehome`.

The containers are never restarted.  A failure in step 2 or 3 puts the members back on
the old network (re-created when needed) and reports why.  A static IP that does not fit
the new subnet is handled by `ORCH_REHOME_STATIC_MISFIT`: `assign` (default) connects the
vNIC with an engine-assigned address and says so; `detach` leaves it disconnected with the
reason in its events.  The requested static IP stays in the vNIC file either way, so a
later move back to a subnet where it fits restores it.

Crash safety: each member's journal entry holds the target (parent, subnet, gateway, host
address) and the networks being left.  After a restart the move is carried through with
that target (every step is idempotent); the next pass then re-checks the parent's
current subnet and moves again if it changed meanwhile.

Which networks move (`check_parent`): a MACVLAN network on an active parent whose subnet
is no longer among the parent's subnets, when it *follows* the parent — its subnet is
one the parent was seen to carry (`hostnets.py`), or one of its vNICs had its subnet
detected from the parent.  Nothing moves while a parent is inactive (link down, address
gone, device removed): networks and runtimes are left as they are until a subnet appears.
A gateway-only change does not move anything (the network keeps its gateway).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import docker.errors

from common import labels
from common.messages import RuntimeRehomed
from services.executor.context import Context
from services.executor.engine import containers
from services.executor.errors import Busy, DockerUnavailable, OperationFailed
from services.executor.net import names, networks
from services.executor.net.hostnets import address_on, gateway_in, norm_subnet, subnets
from services.executor.runtime.create import apply_macs, error_text, pause_point
from services.executor.runtime.journal import Operation, now_iso

log = logging.getLogger(__name__)

OPERATION = "rehome"
IDLE, DONE, BUSY, FAILED = "idle", "done", "busy", "failed"


@dataclass(frozen=True)
class Target:
    parent: str
    subnet: str
    gateway: str | None = None
    host_address: str | None = None

    @property
    def network(self) -> str:
        return names.macvlan_network(self.parent, self.subnet)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Target:
        return cls(str(raw["parent"]), str(raw["subnet"]), raw.get("gateway"),
                   raw.get("host_address"))

    @classmethod
    def of(cls, parent: str, iface: dict[str, Any], subnet: str) -> Target:
        return cls(parent, subnet, gateway_in(iface, subnet), address_on(iface, subnet))


@dataclass
class Member:
    device: str
    vnics: list[dict[str, Any]]
    index: int
    op: Operation | None = None
    outcome: str = ""
    note: str | None = None
    error: str | None = None
    ip: str | None = None  # the static IP to connect with
    old: dict[str, Any] = field(default_factory=dict)

    @property
    def vnic(self) -> dict[str, Any]:
        return self.vnics[self.index]


def static_misfit(ip: str, target: Target) -> str | None:
    """Why a static IP cannot be kept on the target subnet, or None when it can."""
    if not names.host_in_subnet(ip, target.subnet):
        return f"static IP {ip} is not a host address of the new subnet {target.subnet}"
    if ip == target.gateway:
        return f"static IP {ip} is the gateway of the new subnet"
    if ip == target.host_address:
        return f"static IP {ip} is the host's own address on the new subnet"
    return None


def stored_on_parent(ctx: Context, parent: str) -> list[Member]:
    out = []
    for device in ctx.vnics.devices():
        vnics = ctx.vnics.get(device)
        for i, vnic in enumerate(vnics):
            if vnic.get("parent_interface") == parent:
                out.append(Member(device, vnics, i, old=dict(vnic)))
                break  # one vNIC per parent: the engine allows one network per parent
    return out


def network_subnets(net: dict[str, Any]) -> list[str]:
    return [s for s in (norm_subnet(x) for x in networks.network_subnets(net)) if s]


# --- the pass over one parent ----------------------------------------------------------------


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
    if moving and not staying:
        result = await move(ctx, Target.of(parent, iface, current[0]),
                            [n["Name"] for n in moving])
        if result == FAILED:
            pending = [s for n in moving for s in network_subnets(n)]
    elif any(m.vnic.get("network") is None for m in stored):
        home = network_subnets(staying[0])[0] if staying else (current[0] if not nets else None)
        if home is not None:
            result = await move(ctx, Target.of(parent, iface, home), [])
    if result != BUSY:
        # A move that failed keeps the old subnet in the history, so the next trigger
        # (event, discovery, restart) tries again.
        await ctx.remember_subnets(parent, current + [s for s in pending if s not in current])
    return result


# --- a move ---------------------------------------------------------------------------------


async def move(ctx: Context, target: Target, leaving: list[str],
               journaled: set[str] | None = None) -> str:
    """Put every vNIC on `target.parent` that is on one of the `leaving` networks, or
    detached (or journaled for this move), on `target.network`."""
    async with ctx.networks.locks.hold([*leaving, target.network]):
        members = await find_members(ctx, target, leaving, journaled or set())
        if not members:
            for name in leaving:
                await remove_old(ctx, name)
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
        try:
            return await carry_out(ctx, target, leaving, members)
        finally:
            ctx.view.muted -= muted
            for m in members:
                ctx.ops.end(m.device)


async def find_members(ctx: Context, target: Target, leaving: list[str],
                       journaled: set[str]) -> list[Member]:
    members = {}
    for m in stored_on_parent(ctx, target.parent):
        network = m.vnic.get("network")
        if network in leaving or network is None or m.device in journaled:
            members[m.device] = m
    # Our runtimes the engine has on a network being left without a stored vNIC (a state
    # file lost or restored from an old backup): moved with the MAC they have now.
    for name in leaving:
        net = await ctx.docker.call(networks.find_network, name)
        if net is None:
            continue
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
                    members: list[Member]) -> str:
    started = time.monotonic()
    static = [m for m in members if plan_ip(ctx, m, target)]
    if not leaving:
        # Only reattaching: a vNIC that would stay detached is not touched again.
        members = [m for m in members if m.outcome != "detached"]
        if not members:
            return IDLE
    log.info("re-homing %d runtime(s) on %s: %s → %s", len(members), target.parent,
             ", ".join(leaving) or "(detached)", target.network)
    await asyncio.gather(*(journal(ctx, m, target, leaving, "disconnecting") for m in members))
    old_nets: dict[str, dict[str, Any]] = {}
    try:
        await asyncio.gather(*(leave(ctx, m, leaving) for m in members))
        for name in leaving:
            net = await remove_old(ctx, name, required=True)
            if net is not None:
                old_nets[name] = net
        log.debug("re-homing on %s: old network left after %.0f ms", target.parent,
                  (time.monotonic() - started) * 1000)
        await pause_point(ctx, "rehome_old_removed")
        for m in members:
            if m.op is not None:  # shown by device_status; a restart redoes from the start
                m.op.set_step("connecting")
                ctx.journal.put(m.op)
        await ensure_target(ctx, target, members)
    except (DockerUnavailable, asyncio.CancelledError):
        raise  # the journal keeps the move; carried through when the engine is back
    except Exception as exc:
        text = error_text(exc)
        log.warning("re-homing on %s to %s failed: %s; putting the runtimes back",
                    target.parent, target.network, text)
        await put_back(ctx, members, old_nets, text)
        await finish(ctx, target, members, started)
        return FAILED
    dynamic = [m for m in members if m not in static and m.outcome != "detached"]
    log.debug("re-homing on %s: %s ready after %.0f ms", target.parent, target.network,
              (time.monotonic() - started) * 1000)
    await asyncio.gather(*(attach(ctx, m, target) for m in static))
    await asyncio.gather(*(attach(ctx, m, target) for m in dynamic))
    log.debug("re-homing on %s: %d runtime(s) connected after %.0f ms", target.parent,
              len(members), (time.monotonic() - started) * 1000)
    await finish(ctx, target, members, started)
    log.debug("re-homing on %s: done after %.0f ms", target.parent,
              (time.monotonic() - started) * 1000)
    return DONE


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
        if await ctx.docker.call(networks.disconnect, m.device, name):
            log.debug("%s disconnected from %s", m.device, name)


async def remove_old(ctx: Context, name: str, required: bool = False
                     ) -> dict[str, Any] | None:
    """Remove a network being left (ours, unused); its inspected state, for a rollback."""
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
    await ctx.docker.call(networks.remove_network, net["Id"])
    log.info("removed network %s (%s)", name, ", ".join(network_subnets(net)))
    return net


async def ensure_target(ctx: Context, target: Target, members: list[Member]) -> None:
    first = members[0]
    vnic = {"parent_interface": target.parent, "parent_subnet": target.subnet,
            "parent_gateway": target.gateway, "parent_address": target.host_address,
            "name": first.vnic.get("name") or target.parent}
    op_id = first.op.op_id if first.op else "rehome"
    ref = await ctx.networks.ensure_macvlan(first.device, vnic, op_id)
    if ref.name != target.network:
        # The engine reused a network of that subnet under another name ("Pool overlaps").
        log.info("subnet %s on %s is served by network %s", target.subnet, target.parent,
                 ref.name)
    for m in members:
        m.vnic["network"] = ref.name


async def attach(ctx: Context, m: Member, target: Target) -> None:
    network = str(m.vnic["network"])
    view = ctx.view.get(m.device)
    if view is None:
        m.outcome, m.error = "detached", f"Container {m.device} disappeared"
        return
    per_endpoint = ctx.docker.supports(containers.PER_ENDPOINT_MAC_API)
    mac = m.vnic.get("mac_address") if per_endpoint else None
    try:
        await ctx.docker.call(networks.connect, view.id, network, m.ip, mac)
    except docker.errors.APIError as exc:
        text = str(exc.explanation or exc)
        if "already exists" not in text:  # connected before a restart: nothing to do
            m.outcome, m.error = "detached", f"Connecting to {network} failed: {text}"
            return
    if m.old.get("network") is None:
        m.outcome = "reattached"
    else:
        m.outcome = "rehomed_new_ip" if m.note else "rehomed"
    # The MAC at once (older engines): the LAN must not learn the engine's own one.
    view = await ctx.view.refresh(m.device)
    if view is not None and view.running:
        await apply_macs(ctx, m.device, m.vnics)


async def put_back(ctx: Context, members: list[Member], old_nets: dict[str, dict[str, Any]],
                   reason: str) -> None:
    """Reconnect the members to the network they left, re-creating it when it is gone."""
    for m in members:
        m.outcome, m.error = "failed", reason
        m.vnics[m.index] = dict(m.old)
    by_name: dict[str, list[Member]] = {}
    for m in members:
        if m.old.get("network"):
            by_name.setdefault(str(m.old["network"]), []).append(m)
    for name, group in by_name.items():
        try:
            if name in old_nets:
                await recreate(ctx, old_nets[name], group[0])
            for m in group:
                view = await ctx.view.refresh(m.device)
                if view is not None and name not in view.networks:
                    await ctx.docker.call(networks.connect, view.id, name,
                                          m.old.get("ip_address"),
                                          m.old.get("mac_address")
                                          if ctx.docker.supports(containers.PER_ENDPOINT_MAC_API)
                                          else None)
        except (docker.errors.APIError, OperationFailed) as exc:
            text = error_text(exc)
            log.error("could not put %s back on %s: %s", [m.device for m in group], name, text)
            for m in group:
                m.outcome = "detached"
                m.error = f"{reason}; putting it back on {name} failed too: {text}"
                m.vnics[m.index] = {**m.old, "network": None}


async def recreate(ctx: Context, net: dict[str, Any], m: Member) -> None:
    subnet = network_subnets(net)[0]
    aux = ((net.get("IPAM") or {}).get("Config") or [{}])[0].get("AuxiliaryAddresses") or {}
    vnic = {"parent_interface": (net.get("Options") or {}).get("parent"),
            "parent_subnet": subnet, "parent_gateway": networks.network_gateway(net),
            "parent_address": aux.get("host"), "name": m.old.get("name")}
    await ctx.networks.ensure_macvlan(m.device, vnic, m.op.op_id if m.op else "rehome")


def settle_vnic(m: Member, target: Target) -> None:
    """The member's vNIC record after the move."""
    vnic = m.vnic
    old_subnet = m.old.get("parent_subnet")
    if m.outcome == "detached":
        vnic["network"] = None
        vnic["detached"] = m.note or m.error
    else:
        vnic.pop("detached", None)
    for key, value in (("subnet", target.subnet), ("gateway", target.gateway)):
        # `subnet`/`gateway` given alongside the parent's describe the parent network.
        if vnic.get(key) and vnic.get(key) == m.old.get(f"parent_{key}"):
            vnic[key] = value
    vnic["parent_subnet"] = target.subnet
    vnic["parent_gateway"] = target.gateway
    if target.host_address or old_subnet is None or m.old.get("parent_address"):
        vnic["parent_address"] = target.host_address


async def finish(ctx: Context, target: Target, members: list[Member], started: float) -> None:
    for m in members:
        if m.outcome != "failed":
            settle_vnic(m, target)
    # Connected members were refreshed (and their MACs set) as they were attached.
    views = await asyncio.gather(*(
        ctx.view.refresh(m.device) if m.outcome not in ("rehomed", "rehomed_new_ip",
                                                        "reattached")
        else asyncio.sleep(0, ctx.view.get(m.device)) for m in members))
    await asyncio.gather(*(apply_macs(ctx, m.device, m.vnics)
                           for m, view in zip(members, views, strict=True)
                           if view is not None and view.running and m.outcome == "failed"))
    # One write of each shared state file for the whole move.
    vnic_snapshot = events_snapshot = None
    events = []
    for m, view in zip(members, views, strict=True):
        vnic_snapshot = ctx.vnics.set(m.device, m.vnics)
        endpoint = (view.networks.get(str(m.vnic.get("network"))) if view else None) or {}
        event = {
            "at": now_iso(), "parent": target.parent, "vnic": m.vnic.get("name"),
            "outcome": m.outcome, "from_network": m.old.get("network"),
            "to_network": m.vnic.get("network"), "from_subnet": m.old.get("parent_subnet"),
            "to_subnet": target.subnet if m.outcome != "failed" else m.old.get("parent_subnet"),
            "mac_address": m.vnic.get("mac_address"),
            "ip_address": endpoint.get("ip_address"),
            "static_ip": m.vnic.get("ip_address"), "note": m.note, "error": m.error,
            "duration_ms": round((time.monotonic() - started) * 1000),
        }
        events.append(event)
        events_snapshot = ctx.netevents.add(m.device, event)
    if vnic_snapshot is not None:
        await ctx.io_call(ctx.vnics.write, vnic_snapshot)
    if events_snapshot is not None:
        await ctx.io_call(ctx.netevents.write, events_snapshot)
    for m, event in zip(members, events, strict=True):
        if m.op is not None:
            if m.outcome == "failed" or (m.outcome == "detached" and m.error):
                m.op.fail(m.error or "re-homing failed")
            else:
                m.op.succeed(f"vNIC {m.vnic.get('name')} of {m.device}: {m.outcome} on "
                             f"{m.vnic.get('network') or 'no network'}")
            await ctx.save_op(m.op)
        level = logging.INFO if m.outcome in ("rehomed", "reattached") else logging.WARNING
        log.log(level, "re-homing %s (%s on %s): %s %s → %s, ip %s%s", m.device,
                m.vnic.get("name"), target.parent, m.outcome, event["from_network"],
                event["to_network"], event["ip_address"],
                f" ({m.note or m.error})" if (m.note or m.error) else "")
        ctx.publish(RuntimeRehomed(m.device, event))


# --- after a restart ----------------------------------------------------------------------------


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
