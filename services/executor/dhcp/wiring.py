"""The lease keeper in the executor: which vNICs it keeps, when, and what status shows.

The executor's operations call the small functions at the bottom at well-defined points
(after a start, before a removal, after a re-homing, at every resync); they do nothing
when DHCP is off (`ORCH_DHCP_LEASES=off`: `ctx.dhcp` is None).  Keeper calls block (the
keeper thread does the work, bounded), so they run in a worker thread, never on the loop.

A vNIC is kept when its stored configuration says `network_mode: "dhcp"`, it is connected
to its MACVLAN network and its runtime runs.  The target carries the stored (stable) MAC,
the runtime's namespace as `/proc/<pid>/ns/net` and its resolv.conf: the engine's
`ResolvConfPath` when the agent runs on the host, `/proc/<pid>/root/etc/resolv.conf` from
an agent container with `--pid=host` (where the host's paths are not visible).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.executor.dhcp.client import Timing
from services.executor.dhcp.keeper import DhcpError, LeaseKeeper, VnicTarget

if TYPE_CHECKING:
    from services.executor.context import Context
    from services.executor.engine.liveview import ContainerView

log = logging.getLogger(__name__)

DHCP_MODE = "dhcp"
# What status shows of the keeper's record (docs/dhcp.md).
SHOWN = ("state", "server", "lease_start", "lease_expiry", "dns")


def is_dhcp(vnic: dict[str, Any]) -> bool:
    return str(vnic.get("network_mode") or "").lower() == DHCP_MODE


class DhcpWiring:
    """The executor's lease keeper and the attach errors it could not report itself."""

    def __init__(self, state_dir: Path, no_offer_after: float,
                 on_address: Callable[[VnicTarget, str | None], None] | None = None) -> None:
        self.keeper = LeaseKeeper(state_dir, Timing(no_offer_after=no_offer_after),
                                  on_address=on_address)
        self.errors: dict[tuple[str, str], str] = {}

    def start(self) -> DhcpWiring:
        self.keeper.start()
        return self

    def stop(self) -> None:
        self.keeper.stop()  # leases stay applied and on file; the next start resumes

    # --- targets ------------------------------------------------------------------------

    async def resolv_conf(self, ctx: Context, view: ContainerView) -> str | None:
        if not ctx.on_host:
            return f"/proc/{view.pid}/root/etc/resolv.conf"
        attrs = await ctx.docker.call(lambda api: api.inspect_container(view.id))
        path = (attrs or {}).get("ResolvConfPath")
        return str(path) if path else None

    async def targets(self, ctx: Context, view: ContainerView,
                      vnics: list[dict[str, Any]]) -> list[VnicTarget]:
        wanted = [v for v in vnics if is_dhcp(v) and v.get("mac_address")
                  and (v.get("network") in view.networks or v.get("wifi"))]
        if not wanted or not view.running or view.pid <= 0:
            return []
        resolv = await self.resolv_conf(ctx, view)
        return [VnicTarget(view.name, str(v["name"]), str(v["mac_address"]).lower(),
                           f"/proc/{view.pid}/ns/net", hostname=view.name,
                           resolv_conf=resolv, dns=tuple(v.get("dns") or ()),
                           relay=str(v["parent_interface"]) if v.get("wifi") else None)
                for v in wanted]

    # --- keeper calls, off the loop -------------------------------------------------------

    async def attach(self, target: VnicTarget, resume: bool = True) -> None:
        key = (target.device, target.vnic)
        try:
            state = await asyncio.to_thread(self.keeper.attach, target, resume)
            self.errors.pop(key, None)
            log.debug("%s/%s: DHCP %s", target.device, target.vnic, state.get("state"))
        except (DhcpError, TimeoutError) as exc:
            self.errors[key] = str(exc)
            log.warning("%s/%s: DHCP not started: %s", target.device, target.vnic, exc)

    async def drop(self, device: str, how: str) -> None:
        """`how`: release (delete), detach (stopped) or forget (gone) every vNIC of
        `device` the keeper knows, managed now or only on file."""
        keys = {k for k in self.keeper.known() if k[0] == device}
        keys |= {k for k in self.keeper.managed() if k[0] == device}
        for key in sorted(keys):
            self.errors.pop(key, None)
            try:
                await asyncio.to_thread(getattr(self.keeper, how), *key)
            except (DhcpError, TimeoutError) as exc:
                log.warning("%s/%s: DHCP %s failed: %s", *key, how, exc)

    # --- status ---------------------------------------------------------------------------

    def decorate(self, device: str, vnics: list[dict[str, Any]],
                 networks: dict[str, dict[str, Any]]) -> None:
        """Put the lease in place of the engine's IPAM address of each dhcp vNIC."""
        for vnic in vnics:
            net = networks.get(str(vnic.get("network") or ""))
            if net is None or not is_dhcp(vnic):
                continue
            key = (device, str(vnic.get("name")))
            found = self.keeper.status(*key)
            net["ip_address"] = found.get("ip_address") if found else None
            net["gateway"] = found.get("gateway") if found else None
            if found is not None:
                net["dhcp"] = {k: found.get(k) for k in SHOWN}
                if found.get("error"):
                    net["dhcp"]["error"] = found["error"]
            elif key in self.errors:
                net["dhcp"] = {"state": None, "error": self.errors[key]}


# --- hook points of the executor's operations -------------------------------------------------


async def after_start(ctx: Context, device: str) -> None:
    """After a create, a start, or any (re)start the live view sees: keep each dhcp vNIC
    (resuming or asking for its previous lease).  Call after the MACs are right: the
    keeper finds the interface by its MAC."""
    wiring: DhcpWiring | None = ctx.dhcp
    view = ctx.view.get(device)
    if wiring is None or view is None:
        return
    for target in await wiring.targets(ctx, view, ctx.vnics.get(device)):
        await wiring.attach(target)


async def after_rehome(ctx: Context, device: str, vnic: dict[str, Any]) -> None:
    """The vNIC was connected to its parent's new network: drop the old lease without
    asking for it again, DISCOVER on the new LAN."""
    wiring: DhcpWiring | None = ctx.dhcp
    view = ctx.view.get(device)
    if wiring is None or view is None or not is_dhcp(vnic):
        return
    for target in await wiring.targets(ctx, view, [vnic]):
        await wiring.attach(target, resume=False)


async def stopped(ctx: Context, device: str) -> None:
    if ctx.dhcp is not None:
        await ctx.dhcp.drop(device, "detach")


async def before_remove(ctx: Context, device: str) -> None:
    """Delete: DHCPRELEASE while the runtime's namespace still exists."""
    if ctx.dhcp is not None:
        await ctx.dhcp.drop(device, "release")


async def resync(ctx: Context) -> None:
    """Executor start and engine reconnection: keep every running runtime's dhcp vNICs,
    forget leases whose runtime no longer exists."""
    wiring: DhcpWiring | None = ctx.dhcp
    if wiring is None:
        return
    for device in sorted({k[0] for k in wiring.keeper.known()}):
        if ctx.view.get(device) is None and ctx.ops.current(device) is None:
            log.info("forgetting the DHCP leases of %s: the runtime no longer exists", device)
            await wiring.drop(device, "forget")
    for view in ctx.view.all():
        if ctx.ops.current(view.name) is not None:
            continue  # the operation attaches itself when it is done
        if view.running:
            await after_start(ctx, view.name)
        else:
            await wiring.drop(view.name, "detach")


async def gone(ctx: Context, device: str) -> None:
    """The runtime was removed by someone else: nothing to release from."""
    if ctx.dhcp is not None:
        await ctx.dhcp.drop(device, "forget")
