"""Re-homing of vNICs on a wireless parent (`runtime/wifilinks.py` makes their links).

No engine network carries such a vNIC, so a move is the executor's alone and is made per
vNIC, while the runtime keeps running:

* the vNIC record takes the parent's new subnet, gateway and host address (as a MACVLAN
  vNIC's does);
* a dhcp vNIC drops its old lease without asking for it again and DISCOVERs on the new
  LAN at once (the lease keeper; the host's route and proxy entry follow the lease);
* a static vNIC whose address fits the new subnet keeps it (new prefix and gateway); one
  that does not fit is handled by `ORCH_REHOME_STATIC_MISFIT` like a MACVLAN vNIC:
  `assign` gives it the lowest free host address of the new subnet (what the engine's
  IPAM does for a MACVLAN vNIC; stored as `assigned_ip`, the requested address stays in
  `ip_address` so a move back restores it), `detach` leaves the link without an address;
* the old address's route and proxy entry go, the link is put in place again with the new
  address, and the move is recorded in the device's network events and published as
  `runtime.rehome`, as for MACVLAN vNICs.

Crash safety: the record is written after the link was changed; an executor killed in
between finds the parent's subnet still differing from the record's and moves again (each
step is idempotent), and every start of the runtime re-applies the link from the record.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

from common.messages import RuntimeRehomed
from services.executor.context import Context
from services.executor.dhcp import wiring as dhcp_wiring
from services.executor.errors import Busy
from services.executor.net.hostnets import norm_subnet
from services.executor.rehome.model import BUSY, DONE, IDLE, OPERATION, Target, static_misfit
from services.executor.runtime.journal import now_iso

log = logging.getLogger(__name__)


def followers(ctx: Context, parent: str, current: list[str]) -> list[tuple[str, str]]:
    """(device, vNIC name) of the wireless vNICs on `parent` whose subnet is no longer among
    its current ones but followed it (seen on the parent, or detected from it)."""
    seen = set(ctx.hostnets.seen(parent))
    out = []
    for device in ctx.vnics.devices():
        for vnic in ctx.vnics.get(device):
            if not vnic.get("wifi") or vnic.get("parent_interface") != parent:
                continue
            old = norm_subnet(str(vnic.get("parent_subnet")))
            if old in current:
                continue
            if old in seen or vnic.get("parent_address"):
                out.append((device, str(vnic.get("name"))))
            else:
                log.debug("wireless vNIC %s/%s (%s) is not on %s's subnets %s; left as it is",
                          device, vnic.get("name"), old, parent, current)
    return out


def free_address(ctx: Context, target: Target, device: str, name: str) -> str | None:
    """The lowest host address of the target subnet that is neither the gateway, the host's
    own address, nor held by another stored vNIC."""
    taken = {target.gateway, target.host_address}
    for other in ctx.vnics.devices():
        for vnic in ctx.vnics.get(other):
            if (other, vnic.get("name")) != (device, name):
                taken.update((vnic.get("ip_address"), vnic.get("assigned_ip")))
    for candidate in ipaddress.IPv4Network(target.subnet).hosts():
        if str(candidate) not in taken:
            return str(candidate)
    return None


def plan(ctx: Context, device: str, vnic: dict[str, Any], target: Target
         ) -> tuple[str, str | None]:
    """Decide the static address on the target subnet: (outcome, note); sets or clears
    `assigned_ip` and `detached` in `vnic`."""
    vnic.pop("assigned_ip", None)
    vnic.pop("detached", None)
    ip = vnic.get("ip_address")
    if str(vnic.get("network_mode") or "").lower() == "dhcp" or not ip:
        return "rehomed", None
    reason = static_misfit(str(ip), target)
    if reason is None:
        return "rehomed", None
    if ctx.config.rehome_static_misfit != "detach":
        assigned = free_address(ctx, target, device, str(vnic.get("name")))
        if assigned is not None:
            vnic["assigned_ip"] = assigned
            return "rehomed_new_ip", f"{reason}; assigned {assigned}"
        reason = f"{reason}; no free address on it"
    note = f"{reason}; left without an address"
    vnic["detached"] = note
    return "detached", note


def settle(vnic: dict[str, Any], target: Target) -> None:
    """The parent's new subnet in the record (`subnet`/`gateway` given alongside the
    parent's describe the parent network and follow it, as for a MACVLAN vNIC)."""
    for key, value in (("subnet", target.subnet), ("gateway", target.gateway)):
        if vnic.get(key) and vnic.get(key) == vnic.get(f"parent_{key}"):
            vnic[key] = value
    vnic["parent_subnet"] = target.subnet
    vnic["parent_gateway"] = target.gateway
    vnic["parent_address"] = target.host_address


async def move_vnic(ctx: Context, device: str, name: str, target: Target) -> str:
    """Move one wireless vNIC to `target`; DONE, IDLE (it is gone meanwhile), or BUSY
    when the device is busy."""
    try:
        ctx.ops.begin(device, OPERATION)
    except Busy as exc:
        log.info("re-homing of %s on %s postponed: %s", device, target.parent, exc.text)
        return BUSY
    started = time.monotonic()
    try:
        vnics = ctx.vnics.get(device)  # read again once claimed: a delete may have won
        vnic = next((v for v in vnics if v.get("name") == name and v.get("wifi")), None)
        if vnic is None:
            return IDLE
        old = dict(vnic)
        settle(vnic, target)
        outcome, note = plan(ctx, device, vnic, target)
        error = None
        view = await ctx.view.refresh(device)
        if ctx.wifi is not None:
            error = await ctx.wifi.rehome(device, view.pid if view and view.running else 0,
                                          vnic, view.internal_ip if view else None)
        if view is not None and view.running:
            await dhcp_wiring.after_rehome(ctx, device, vnic)
        await record(ctx, device, vnics, old, target, outcome, note, error, started)
    finally:
        ctx.ops.end(device)
    return DONE


async def record(ctx: Context, device: str, vnics: list[dict[str, Any]],
                 old: dict[str, Any], target: Target, outcome: str, note: str | None,
                 error: str | None, started: float) -> None:
    vnic = next(v for v in vnics if v.get("name") == old.get("name"))
    ip = None if str(vnic.get("network_mode") or "").lower() == "dhcp" or outcome == \
        "detached" else (vnic.get("assigned_ip") or vnic.get("ip_address"))
    event = {
        "at": now_iso(), "parent": target.parent, "vnic": vnic.get("name"),
        "outcome": outcome, "from_network": old.get("network"),
        "to_network": vnic.get("network"), "from_subnet": old.get("parent_subnet"),
        "to_subnet": target.subnet, "mac_address": vnic.get("mac_address"),
        "ip_address": ip, "static_ip": vnic.get("ip_address"), "note": note,
        "error": error, "duration_ms": round((time.monotonic() - started) * 1000),
    }
    await ctx.io_call(ctx.vnics.write, ctx.vnics.set(device, vnics))
    await ctx.io_call(ctx.netevents.write, ctx.netevents.add(device, event))
    level = logging.INFO if outcome == "rehomed" and not error else logging.WARNING
    log.log(level, "re-homing %s (%s on %s, wireless): %s %s → %s, ip %s%s", device,
            vnic.get("name"), target.parent, outcome, old.get("parent_subnet"),
            target.subnet, ip or "by DHCP" if outcome != "detached" else None,
            f" ({note or ''}{'; ' if note and error else ''}{error or ''})"
            if note or error else "")
    ctx.publish(RuntimeRehomed(device, event))


async def check(ctx: Context, parent: str, iface: dict[str, Any], current: list[str]) -> str:
    """Move the parent's wireless vNICs to its current subnet; IDLE / DONE / BUSY."""
    result = IDLE
    for device, name in followers(ctx, parent, current):
        outcome = await move_vnic(ctx, device, name, Target.of(parent, iface, current[0]))
        if BUSY in (result, outcome):
            result = BUSY
        elif outcome == DONE:
            result = DONE
    return result
