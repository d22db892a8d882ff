"""The executor's side of wireless vNICs (`net/wifi.py` says how the link is made).

* A vNIC is wireless when its parent is (`ORCH_WIRELESS_INTERFACES` or sysfs); create
  marks it `wifi: true` and names its link `wifi_<parent>_<vnic>` (the original's status
  name).  The engine never sees it: no Docker network is made for it.
* After every start of its runtime (`apply`, from `create.apply_live`) the pair is made
  in the runtime's new namespace and the host's route, proxy entry and forwarding rules
  are put in place; a static vNIC gets its address and default route there too.  A dhcp
  vNIC gets its address from its lease (`leased`, called by the lease keeper's owner).
* `rehome` (re-homing, `rehome/wifimove.py`): the old addresses' host side goes and the
  link is put in place again from the moved record.
* `forget` (delete, self-destruct, a runtime gone) removes all of it.
* Status: `decorate` adds each link to `networks` with its address, MAC and gateway.

Everything on the host's side runs in the host's network namespace (`hostns`, found at
the executor's start: its own on the host, the engine's from the agent container), and
wireless parents are looked up in the host's sysfs.  Netlink and `iptables` block: they
run in worker threads, never on the loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

from services.executor.dhcp import netns
from services.executor.dhcp.keeper import VnicTarget
from services.executor.net import wifi
from services.executor.net.hostns import OWN, HostNetns
from services.executor.net.wifi import ForwardingError, WifiError, WifiLink

log = logging.getLogger(__name__)

Key = tuple[str, str]


def is_wifi(vnic: dict[str, Any]) -> bool:
    return bool(vnic.get("wifi"))


def is_dhcp(vnic: dict[str, Any]) -> bool:
    return str(vnic.get("network_mode") or "").lower() == "dhcp"


def static_ip(vnic: dict[str, Any]) -> str | None:
    """The address a static vNIC carries: the requested one, or the one re-homing
    assigned when the requested one did not fit the parent's subnet; None for a dhcp vNIC
    and one re-homing left without an address."""
    if is_dhcp(vnic) or vnic.get("detached"):
        return None
    return vnic.get("assigned_ip") or vnic.get("ip_address") or None


def link_of(device: str, vnic: dict[str, Any]) -> WifiLink:
    subnet = ipaddress.IPv4Network(str(vnic["parent_subnet"]), strict=False)
    return WifiLink(device=device, vnic=str(vnic["name"]), parent=str(vnic["parent_interface"]),
                    mac=str(vnic["mac_address"]).lower(), ip=static_ip(vnic),
                    prefixlen=subnet.prefixlen, gateway=vnic.get("parent_gateway") or None,
                    station=vnic.get("parent_address") or None)


class WifiLinks:
    """Which links are in place (per runtime process) and the addresses each carries."""

    def __init__(self, forced: frozenset[str], hostns: HostNetns = OWN) -> None:
        self.forced = forced
        self.hostns = hostns
        self.placed: dict[Key, int] = {}  # (device, vnic) -> pid the pair was made for
        self.addresses: dict[Key, set[str]] = {}  # every address proxied for the link
        self.gateways: dict[Key, set[str]] = {}  # gateways proxied on the host's end
        self.stations: dict[Key, str | None] = {}  # the host's address on the parent
        self.errors: dict[Key, str] = {}
        self._lock = asyncio.Lock()

    def wireless(self, parent: str) -> bool:
        return wifi.is_wireless(parent, self.forced, self.hostns.sysfs)

    def mark(self, vnics: list[dict[str, Any]]) -> None:
        """At create: a vNIC on a wireless parent becomes a wifi link."""
        for vnic in vnics:
            if self.wireless(str(vnic["parent_interface"])):
                vnic["wifi"] = True
                vnic["network"] = wifi.network_name(vnic["parent_interface"], vnic["name"])

    async def apply(self, device: str, pid: int, vnics: list[dict[str, Any]],
                    internal_ip: str | None = None) -> None:
        wanted = [v for v in vnics if is_wifi(v)]
        if not wanted or pid <= 0:
            return
        if not await asyncio.to_thread(wifi.forwarding_enabled, self.hostns):
            log.warning("IPv4 forwarding is off on the host: wireless vNICs of %s cannot "
                        "reach their LAN", device)
        async with self._lock:
            for vnic in wanted:
                link = link_of(device, vnic)
                key = (device, link.vnic)
                gateways = self.gateways.setdefault(key, set())
                made = False
                try:
                    made = await asyncio.to_thread(wifi.plumb, link, pid, internal_ip,
                                                   sorted(gateways), self.hostns)
                    self.errors.pop(key, None)
                except ForwardingError as exc:  # in place; the LAN may not get through
                    self.errors[key] = str(exc)
                    log.warning("%s/%s: %s", device, link.vnic, exc)
                except (WifiError, netns.NetnsError, OSError, ValueError) as exc:
                    self.errors[key] = str(exc)
                    log.warning("%s/%s: wireless link on %s not in place: %s", device,
                                link.vnic, link.parent, exc)
                    continue
                self.placed[key] = pid
                self.stations[key] = link.station
                if link.gateway:
                    gateways.intersection_update({link.gateway})
                    gateways.add(link.gateway)
                if link.ip:
                    self.addresses.setdefault(key, set()).add(link.ip)
                if made:
                    log.info("%s/%s: wireless link %s on %s (%s)", device, link.vnic,
                             link.host, link.parent, link.ip or "address by DHCP")

    async def rehome(self, device: str, pid: int, vnic: dict[str, Any],
                     internal_ip: str | None) -> str | None:
        """The vNIC's record moved to its parent's new subnet (re-homing): the host's
        route and proxy entries of its old addresses go, and the link is put in place with
        the new record (a dhcp vNIC's lease follows from the keeper).  The error, if any."""
        link = link_of(device, vnic)
        key = (device, link.vnic)
        async with self._lock:
            known = self.addresses.setdefault(key, set())
            stale = sorted(known - {link.ip} if link.ip else known)
            try:
                await asyncio.to_thread(wifi.drop_addresses, link, stale, self.hostns)
                if pid > 0 and link.ip is None and not is_dhcp(vnic):
                    await asyncio.to_thread(wifi.clear, link, pid)  # left without one
            except (WifiError, netns.NetnsError, OSError) as exc:
                log.warning("%s/%s: old addresses not fully removed: %s", device, link.vnic,
                            exc)
            known.difference_update(stale)
        if pid > 0:
            await self.apply(device, pid, [vnic], internal_ip)
        return self.errors.get(key)

    def leased(self, target: VnicTarget, want: netns.Addressing | None) -> None:
        """The lease keeper applied `want` (None: no address) to a relayed vNIC (its
        thread): the host's routes and proxy entries follow, and the runtime reaches its
        subnet through the lease's router."""
        if not target.relay:
            return
        key = (target.device, target.vnic)
        ip = want.ip if want else None
        link = WifiLink(target.device, target.vnic, target.relay, target.mac, ip, 32, None)
        known = self.addresses.setdefault(key, set())
        try:
            if want is None:
                wifi.drop_addresses(link, sorted(known), self.hostns)
                known.clear()
                return
            wifi.host_side(link, want.ip, hostns=self.hostns)
            stale = sorted(known - {want.ip})
            wifi.drop_addresses(link, stale, self.hostns)
            known.difference_update(stale)
            known.add(want.ip)
            if want.router:
                gateways = self.gateways.setdefault(key, set())
                wifi.gateway_proxy(link, want.router, sorted(gateways), self.hostns)
                gateways.intersection_update({want.router})
                gateways.add(want.router)
            hop = want.router or self.stations.get(key)  # no router: through the host
            if hop and hop != want.ip:
                wifi.via_gateway(target.netns, target.mac, want.ip, want.prefixlen, hop)
        except (WifiError, netns.NetnsError, OSError) as exc:
            log.warning("%s/%s: the host's route to the lease %s: %s", target.device,
                        target.vnic, ip, exc)

    async def forget(self, device: str, vnics: list[dict[str, Any]]) -> None:
        """Remove every link of `device` (the runtime is deleted or gone)."""
        async with self._lock:
            for vnic in vnics:
                if not is_wifi(vnic):
                    continue
                link = link_of(device, vnic)
                key = (device, link.vnic)
                ips = set(self.addresses.pop(key, set()))
                if link.ip:
                    ips.add(link.ip)
                try:
                    await asyncio.to_thread(wifi.unplumb, link, sorted(ips), self.hostns)
                except (WifiError, netns.NetnsError, OSError) as exc:
                    log.warning("%s/%s: wireless link not fully removed: %s", device,
                                link.vnic, exc)
                self.placed.pop(key, None)
                self.gateways.pop(key, None)
                self.stations.pop(key, None)
                self.errors.pop(key, None)
                log.info("%s/%s: wireless link %s removed", device, link.vnic, link.host)

    def decorate(self, device: str, pid: int, vnics: list[dict[str, Any]],
                 networks: dict[str, dict[str, Any]]) -> None:
        """Status rows for the links, before DHCP puts leases in place of addresses."""
        for vnic in vnics:
            if not is_wifi(vnic):
                continue
            key = (device, str(vnic["name"]))
            placed = pid > 0 and self.placed.get(key) == pid
            row: dict[str, Any] = {
                "ip_address": static_ip(vnic) if placed else None,
                "mac_address": str(vnic.get("mac_address") or "").lower() or None,
                "gateway": vnic.get("parent_gateway") or None,
            }
            if key in self.errors:
                row["error"] = self.errors[key]
            networks[str(vnic["network"])] = row
