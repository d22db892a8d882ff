"""After a move: members put back when it failed, each vNIC's record, the events and
the journal outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import docker.errors

from common.messages import RuntimeRehomed
from services.executor.context import Context
from services.executor.engine import containers
from services.executor.errors import OperationFailed
from services.executor.net import networks
from services.executor.rehome.model import Member, Target, network_subnets
from services.executor.runtime.create import error_text
from services.executor.runtime.journal import now_iso
from services.executor.runtime.live import apply_live

log = logging.getLogger(__name__)


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
                    mac = (m.old.get("mac_address")
                           if ctx.docker.supports(containers.PER_ENDPOINT_MAC_API) else None)
                    await ctx.networks.connect(view.id, name, m.old.get("ip_address"), mac)
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
    await asyncio.gather(*(apply_live(ctx, m.device, m.vnics)
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
    done = []
    for m in members:
        if m.op is not None:
            if m.outcome == "failed" or (m.outcome == "detached" and m.error):
                m.op.fail(m.error or "re-homing failed")
            else:
                m.op.succeed(f"vNIC {m.vnic.get('name')} of {m.device}: {m.outcome} on "
                             f"{m.vnic.get('network') or 'no network'}")
            done.append(m.op)
    # One write job for the whole move, in this order: the vNIC records, the events, the
    # journal's outcomes.  The events go out while it runs: the engine already has the
    # move's result, and a crash before the outcomes are on disk leaves the entries in
    # progress, so the restart carries the move through again (every step finds its work
    # done), writes them then and tells the same result once more.  The move ends (and
    # its devices are free) only once everything is on disk.
    written = asyncio.ensure_future(ctx.io_call(
        write_results, ctx, vnic_snapshot, events_snapshot,
        [(op.device_id, ctx.journal.put(op)) for op in done]))
    for m, event in zip(members, events, strict=True):
        level = logging.INFO if m.outcome in ("rehomed", "reattached") else logging.WARNING
        log.log(level, "re-homing %s (%s on %s): %s %s → %s, ip %s%s", m.device,
                m.vnic.get("name"), target.parent, m.outcome, event["from_network"],
                event["to_network"], event["ip_address"],
                f" ({m.note or m.error})" if (m.note or m.error) else "")
        ctx.publish(RuntimeRehomed(m.device, event))
    await written


def write_results(ctx: Context, vnics: dict[str, Any] | None, events: dict[str, Any] | None,
                  outcomes: list[tuple[str, dict[str, Any]]]) -> None:
    """Blocking (the state-io thread)."""
    if vnics is not None:
        ctx.vnics.write(vnics)
    if events is not None:
        ctx.netevents.write(events)
    ctx.journal.write_many(outcomes)
