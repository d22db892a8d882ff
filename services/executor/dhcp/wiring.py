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
import ipaddress
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.executor.dhcp import netns
from services.executor.dhcp.client import Timing
from services.executor.dhcp.keeper import DhcpError, LeaseKeeper, OnAddress, VnicTarget

if TYPE_CHECKING:
    from services.executor.context import Context
    from services.executor.engine.liveview import ContainerView

log = logging.getLogger(__name__)

DHCP_MODE = "dhcp"
LEASE_FIRST_POLL = 0.02
# What status shows of the keeper's record (docs/dhcp.md).
SHOWN = ("state", "server", "lease_start", "lease_expiry", "dns")
# Marks a vNIC of lease_first's answer that the engine must not connect (no lease yet).
UNCONNECTED = "unconnected"
HELD = ("bound", "renewing", "rebinding")


def is_dhcp(vnic: dict[str, Any]) -> bool:
    return str(vnic.get("network_mode") or "").lower() == DHCP_MODE


class DhcpWiring:
    """The executor's lease keeper and the attach errors it could not report itself."""

    def __init__(self, state_dir: Path, no_offer_after: float,
                 lease_cap: float | None = None,
                 on_address: OnAddress | None = None) -> None:
        self.keeper = LeaseKeeper(state_dir, Timing(no_offer_after=no_offer_after,
                                                    lease_cap=lease_cap),
                                  on_address=on_address)
        self.lease_first_for = no_offer_after
        self.errors: dict[tuple[str, str], str] = {}
        # dhcp vNICs left unconnected for want of a lease (docs/dhcp.md): the link they
        # lease through, and the task that connects them once leased (runtime/unleased.py).
        self.private: dict[tuple[str, str], netns.PrivateLink] = {}
        self.pending: dict[tuple[str, str], asyncio.Task[None]] = {}

    def start(self) -> DhcpWiring:
        self.keeper.start()
        return self

    def stop(self) -> None:
        self.keeper.stop()  # leases stay applied and on file; the next start resumes
        for task in self.pending.values():
            task.cancel()
        for link in self.private.values():
            link.close()
        self.private.clear()

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
                           relay=str(v["parent_interface"]) if v.get("wifi") else None,
                           relay_netns=ctx.hostns.path if v.get("wifi") else None)
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

    async def lease_first(self, device: str, vnic: dict[str, Any], host_netns: str | None,
                          resume: bool = True) -> str | None:
        """Lease for `vnic` before its runtime exists, through a MACVLAN with its MAC in a
        namespace of our own, waiting at most `no_offer_after`: the leased address, kept
        on file for the runtime's first `attach`, or None (no offer in time, or the link
        could not be made; logged)."""
        name, mac = str(vnic["name"]), str(vnic["mac_address"]).lower()
        try:
            link = await asyncio.to_thread(netns.private_macvlan,
                                           str(vnic["parent_interface"]), mac, host_netns)
        except (netns.NetnsError, OSError) as exc:
            log.warning("%s/%s: no lease before the start (%s)", device, name, exc)
            return None
        keep = False
        try:
            await asyncio.to_thread(self.keeper.attach,
                                    VnicTarget(device, name, mac, link.path, hostname=device),
                                    resume)
            ip = await self._bound_ip(device, name, self.lease_first_for)
            if ip is None:
                # The keeper goes on asking through the link; the vNIC is connected
                # once a lease comes (runtime/unleased.py), never with an IPAM address.
                log.warning("%s/%s: no lease within %g s before the start; the vNIC is "
                            "connected when one comes", device, name, self.lease_first_for)
                self.private[(device, name)] = link
                keep = True
            return ip
        except (DhcpError, TimeoutError) as exc:
            log.warning("%s/%s: no lease before the start (%s)", device, name, exc)
            return None
        finally:
            if not keep:
                await asyncio.to_thread(self._end_lease_first, device, name, link)

    async def open_private(self, device: str, vnic: dict[str, Any], host_netns: str | None
                           ) -> None:
        """A link of our own to lease `vnic` through while it is unconnected (after an
        executor restart: the namespace died with the old process); raises on failure."""
        key = (device, str(vnic["name"]))
        if key in self.private:
            return
        mac = str(vnic["mac_address"]).lower()
        link = await asyncio.to_thread(netns.private_macvlan,
                                       str(vnic["parent_interface"]), mac, host_netns)
        self.private[key] = link
        try:
            await asyncio.to_thread(self.keeper.attach,
                                    VnicTarget(device, key[1], mac, link.path, hostname=device))
        except BaseException:
            await self.close_private(key)
            raise

    async def close_private(self, key: tuple[str, str]) -> None:
        """Stop leasing through the private link (the lease stays on file) and delete it,
        so its MAC is free on the parent before the runtime's own interface has it."""
        link = self.private.pop(key, None)
        if link is not None:
            await asyncio.to_thread(self._end_lease_first, key[0], key[1], link)

    def unconnected(self, key: tuple[str, str]) -> bool:
        return key in self.private or key in self.pending

    async def _bound_ip(self, device: str, vnic: str, within: float) -> str | None:
        # Polled on the loop: a thread blocked per waiting vNIC would starve the pool
        # when many creates wait for a silent server.
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while True:
            found = self.keeper.status(device, vnic) or {}
            if found.get("state") == "bound" and found.get("ip_address"):
                return str(found["ip_address"])
            if loop.time() >= end:
                return None
            await asyncio.sleep(LEASE_FIRST_POLL)

    def _end_lease_first(self, device: str, vnic: str, link: netns.PrivateLink) -> None:
        # The lease stays on file: the runtime's attach finds it on its interface.
        try:
            self.keeper.detach(device, vnic)
        except (DhcpError, TimeoutError) as exc:
            log.warning("%s/%s: %s", device, vnic, exc)
        link.close()

    async def drop(self, device: str, how: str) -> None:
        """`how`: release (delete), detach (stopped) or forget (gone) every vNIC of
        `device` the keeper knows, managed now or only on file."""
        keys = {k for k in self.keeper.known() if k[0] == device}
        keys |= {k for k in self.keeper.managed() if k[0] == device}
        for key in sorted(keys):
            if how == "detach" and self.unconnected(key):
                continue  # leasing through its own link, whether the runtime runs or not
            self.errors.pop(key, None)
            task = self.pending.pop(key, None)
            if task is not None:
                task.cancel()
            try:
                await asyncio.to_thread(getattr(self.keeper, how), *key)
            except (DhcpError, TimeoutError) as exc:
                log.warning("%s/%s: DHCP %s failed: %s", *key, how, exc)
            link = self.private.pop(key, None)
            if link is not None:
                await asyncio.to_thread(link.close)

    # --- status ---------------------------------------------------------------------------

    def decorate(self, device: str, vnics: list[dict[str, Any]],
                 networks: dict[str, dict[str, Any]]) -> None:
        """Put the lease in place of the engine's IPAM address of each dhcp vNIC."""
        for vnic in vnics:
            key = (device, str(vnic.get("name")))
            if is_dhcp(vnic) and vnic.get("network") and self.unconnected(key):
                # Not connected until leased: shown with its MAC and no address.
                networks.setdefault(str(vnic["network"]), {
                    "mac_address": str(vnic.get("mac_address") or "").lower() or None})
            net = networks.get(str(vnic.get("network") or ""))
            if net is None or not is_dhcp(vnic):
                continue
            found = self.keeper.status(*key)
            if found is not None and self.unconnected(key):
                # A lease held through our own link is not the runtime's until the vNIC
                # is connected with it.
                found = {**found, "ip_address": None, "gateway": None}
                if found.get("state") in HELD:
                    found["state"] = "requesting"
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


async def lease_first(ctx: Context, device: str, vnics: list[dict[str, Any]]
                      ) -> list[dict[str, Any]]:
    """Before the runtime's container is made: lease each dhcp vNIC's address through a
    link of our own and return the vNICs as the engine is to connect them, each leased
    one with its lease as a fixed address, so the engine's IPAM never gives the runtime
    an address of its own choosing (docs/dhcp.md, "Never an address ...")."""
    wiring: DhcpWiring | None = ctx.dhcp
    # A wireless parent's vNIC has no engine network and leases over the host's link
    # (runtime/wifilinks.py), so no MACVLAN may be made for it here.
    wanted = [v for v in vnics if is_dhcp(v) and v.get("mac_address") and not v.get("wifi")]
    if wiring is None or not wanted:
        return vnics
    host = ctx.hostns.path
    leased = await asyncio.gather(*(wiring.lease_first(device, v, host) for v in wanted))
    fixed = {str(v["name"]): ip for v, ip in zip(wanted, leased, strict=True)
             if ip and fits(ip, v)}
    return [{**v, "ip_address": fixed[v["name"]]} if v["name"] in fixed
            else {**v, UNCONNECTED: True} if (device, v["name"]) in wiring.private else v
            for v in vnics]


def fits(ip: str, vnic: dict[str, Any]) -> bool:
    """The engine accepts a fixed address only inside its network's subnet; a server
    leasing from another subnet than the one detected leaves the vNIC to the engine
    (and the keeper), logged."""
    subnet = vnic.get("parent_subnet")
    if not subnet or ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(str(subnet),
                                                                         strict=False):
        return True
    log.warning("%s: the lease %s is outside the network's subnet %s; not fixed",
                vnic.get("name"), ip, subnet)
    return False


async def lease_for_rehome(ctx: Context, device: str, vnic: dict[str, Any], subnet: str
                           ) -> tuple[str | None, bool]:
    """Re-homing, after the vNIC left its old network and before it is connected to the
    new one: drop the old lease without asking for it and lease on the new LAN through a
    link of our own, as at create.  (the lease to connect with as the fixed address or
    None, whether the vNIC is to stay unconnected until a lease comes)."""
    wiring: DhcpWiring | None = ctx.dhcp
    if wiring is None or not is_dhcp(vnic) or not vnic.get("mac_address") or vnic.get("wifi"):
        return None, False
    host = ctx.hostns.path
    ip = await wiring.lease_first(device, vnic, host, resume=False)
    if ip is not None and fits(ip, {**vnic, "parent_subnet": subnet}):
        return ip, False
    return None, (device, str(vnic["name"])) in wiring.private


async def after_rehome(ctx: Context, device: str, vnic: dict[str, Any],
                       leased: bool = False) -> None:
    """The vNIC was connected to its parent's new network: with the lease it got first
    (`leased`), resume it; else drop the old lease without asking for it again and
    DISCOVER on the new LAN."""
    wiring: DhcpWiring | None = ctx.dhcp
    view = ctx.view.get(device)
    if wiring is None or view is None or not is_dhcp(vnic):
        return
    for target in await wiring.targets(ctx, view, [vnic]):
        await wiring.attach(target, resume=leased)


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
