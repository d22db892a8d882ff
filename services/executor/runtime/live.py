"""What a runtime needs after every start that the engine does not keep: its resolver's
dns servers, the MACs the engine could not set, and (after the MACs: the keeper finds
the interface by its MAC) the DHCP leases of its dhcp vNICs.

`after_start` does that once per container start (its pid): an operation that started
the runtime (create, start, restart) and the live view's hook, which sees every start
(also the engine's own restarts), share one piece of work, and an operation waits for it
before it answers.  `apply_live` alone is for a runtime whose networks changed while it
ran (re-homing) and for the pass after the executor's own restart.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import docker.errors

from services.executor.context import Context
from services.executor.dhcp import wiring as dhcp_wiring
from services.executor.engine import containers, macfix, resolv
from services.executor.errors import DockerUnavailable, error_text

log = logging.getLogger(__name__)


async def after_start(ctx: Context, device: str) -> None:
    """The work of the current start of `device`, done once per start; returns when it
    is done (by this call or by an earlier one for the same start)."""
    view = ctx.view.get(device)
    if view is None or not view.running or not view.pid:
        return
    started = ctx.start_work.get(device)
    if started is None or started[0] != view.pid or _failed(started[1]):
        task = asyncio.ensure_future(_start_work(ctx, device))
        started = (view.pid, task)
        ctx.start_work[device] = started
    await asyncio.shield(started[1])


def _failed(task: asyncio.Future[None]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


async def _start_work(ctx: Context, device: str) -> None:
    await apply_live(ctx, device, ctx.vnics.get(device))
    await dhcp_wiring.after_start(ctx, device)


def forget(ctx: Context, device: str) -> None:
    """The runtime is gone (deleted, rolled back)."""
    ctx.start_work.pop(device, None)
    ctx.applied_macs.pop(device, None)


async def apply_live(ctx: Context, device: str, vnics: list[dict[str, Any]]) -> None:
    """What a runtime needs after every start that the engine does not keep: its
    resolver's dns servers and the MACs the engine could not set."""
    await apply_dns(ctx, device, vnics)
    await apply_macs(ctx, device, vnics)
    view = ctx.view.get(device)
    if ctx.wifi is not None and view is not None and view.running:
        await ctx.wifi.apply(device, view.pid, vnics, view.internal_ip)


async def apply_dns(ctx: Context, device: str, vnics: list[dict[str, Any]]) -> None:
    dns = resolv.servers(vnics)
    view = ctx.view.get(device)
    if not dns or view is None or not view.running:
        return
    try:
        await ctx.docker.call(resolv.write, view.id, dns)
    except DockerUnavailable:
        raise
    except (resolv.ResolvFailed, docker.errors.APIError) as exc:
        log.warning("dns servers %s of %s not written to its resolv.conf: %s", dns, device,
                    error_text(exc))


async def apply_macs(ctx: Context, device: str, vnics: list[dict[str, Any]]) -> None:
    """Set the MACs the engine could not (older engines): every vNIC whose endpoint
    carries another MAC than the stored one — the second and further vNICs, and any vNIC
    moved to a new network by re-homing (the engine sets a MAC only on the container's
    primary network, the one it was created with)."""
    if ctx.docker.supports(containers.PER_ENDPOINT_MAC_API) or not vnics:
        return
    view = ctx.view.get(device)
    if view is None or not view.running:
        return
    wanted: list[tuple[str, str]] = []
    networks: dict[str, str] = {}
    for vnic in vnics:
        net = view.networks.get(vnic.get("network") or "") or {}
        mac = vnic.get("mac_address")
        if not net.get("ip_address") or not mac or net.get("mac_address") == mac:
            continue  # not connected, or the engine's own MAC is already the right one
        wanted.append((str(net["ip_address"]), str(mac)))
        networks[str(vnic["network"])] = str(mac)
    if not wanted:
        ctx.applied_macs.pop(device, None)
        return
    try:
        # Not in the engine's pool, where it would wait behind every start queued there
        # (at boot, all of them) with the engine's MAC on the LAN meanwhile.
        await asyncio.to_thread(macfix.apply, view.pid, wanted)
    except (macfix.MacFixUnavailable, OSError) as exc:
        log.warning("MACs of %s's vNICs %s stay as the engine chose them: %s", device,
                    sorted(networks), exc)
        return
    ctx.applied_macs[device] = (view.pid, networks)
