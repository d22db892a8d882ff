"""Interface state as netmon reports it, and the pure rules that derive it.

Raw netlink dumps are first reduced to the small records below (``LinkRecord``,
``AddrRecord``, ``RouteRecord``) so that the rules — which interface is active, which
gateway belongs to it — are plain functions testable without netlink.

Wire shape of one interface (``IFACE`` in PROTOCOL.md, plus extra keys)::

    {"interface": "ens37", "index": 2, "operstate": "UP",
     "ipv4_addresses": [{"address": "192.0.2.50", "prefixlen": 24,
                         "subnet": "192.0.2.0/24", "network_address": "192.0.2.0"}],
     "gateway": "192.0.2.1", "timestamp": "<iso>",
     "mac_address": "02:42:ac:11:00:02", "active": true, "virtual": false}

``virtual`` marks the devices container engines, VPNs and overlays create for themselves
(`common.netmon_proto.is_virtual`); they are reported like any other interface.

An interface that stops being usable (down, last IPv4 address gone, removed) is reported
once with ``"active": false``, an empty ``ipv4_addresses`` list and ``"gateway": null``;
its ``operstate`` is the current one, or ``"NOTPRESENT"`` when the device is gone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from common.netmon_proto import VIRTUAL_KEY, is_virtual

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
RT_TABLE_MAIN = 254

# Kernel vocabulary (IF_OPER_NOTPRESENT) for a device that no longer exists.
OPERSTATE_GONE = "NOTPRESENT"


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class LinkRecord:
    index: int
    name: str
    operstate: str
    flags: int
    mac_address: str | None


@dataclass(frozen=True)
class AddrRecord:
    index: int
    address: str
    prefixlen: int


@dataclass(frozen=True)
class RouteRecord:
    """A default route of the main IPv4 table, one per nexthop."""

    oif: int
    gateway: str | None
    priority: int


@dataclass(frozen=True)
class Ipv4Address:
    address: str
    prefixlen: int

    def to_wire(self) -> dict[str, Any]:
        net = ipaddress.IPv4Network(f"{self.address}/{self.prefixlen}", strict=False)
        return {
            "address": self.address,
            "prefixlen": self.prefixlen,
            "subnet": str(net),
            "network_address": str(net.network_address),
        }


@dataclass(frozen=True)
class Iface:
    """State of one interface. ``observed_at`` is not part of equality, so two
    snapshots of an unchanged interface compare equal."""

    name: str
    index: int
    operstate: str
    mac_address: str | None
    addresses: tuple[Ipv4Address, ...]
    gateway: str | None
    active: bool
    observed_at: str = field(default="", compare=False)

    def to_wire(self) -> dict[str, Any]:
        return {
            "interface": self.name,
            "index": self.index,
            "operstate": self.operstate,
            "ipv4_addresses": [a.to_wire() for a in self.addresses],
            "gateway": self.gateway,
            "timestamp": self.observed_at,
            "mac_address": self.mac_address,
            "active": self.active,
            VIRTUAL_KEY: is_virtual(self.name),
        }

    def deactivated(self, operstate: str, observed_at: str) -> Iface:
        """The shape sent when this interface stops being usable."""
        return Iface(
            name=self.name,
            index=self.index,
            operstate=operstate,
            mac_address=self.mac_address,
            addresses=(),
            gateway=None,
            active=False,
            observed_at=observed_at,
        )


def link_is_up(operstate: str, flags: int) -> bool:
    """UP means operstate UP; drivers that never report an operational state (tun,
    some wireless and PPP drivers) say UNKNOWN, and for them the administrative flag
    plus carrier (IFF_UP and IFF_LOWER_UP) decide."""
    if operstate == "UP":
        return True
    return operstate == "UNKNOWN" and flags & IFF_UP != 0 and flags & IFF_LOWER_UP != 0


def _gateway_for(index: int, routes: Iterable[RouteRecord]) -> str | None:
    best: RouteRecord | None = None
    for route in routes:
        if route.oif != index or route.gateway is None:
            continue
        if best is None or route.priority < best.priority:
            best = route
    return best.gateway if best else None


def build_state(
    links: Iterable[LinkRecord],
    addrs: Iterable[AddrRecord],
    routes: Iterable[RouteRecord],
    observed_at: str,
) -> dict[int, Iface]:
    """Every link, by index, with ``active`` set by the reporting rule.

    Dumps are taken one after the other, so an interface may vanish between them:
    addresses and routes of an index absent from ``links`` are simply ignored.
    """
    by_index: dict[int, list[Ipv4Address]] = {}
    for addr in addrs:
        by_index.setdefault(addr.index, []).append(
            Ipv4Address(addr.address, addr.prefixlen)
        )
    route_list = list(routes)
    state: dict[int, Iface] = {}
    for link in links:
        addresses = tuple(by_index.get(link.index, ()))
        active = link_is_up(link.operstate, link.flags) and bool(addresses)
        state[link.index] = Iface(
            name=link.name,
            index=link.index,
            operstate=link.operstate,
            mac_address=link.mac_address,
            addresses=addresses if active else (),
            gateway=_gateway_for(link.index, route_list) if active else None,
            active=active,
            observed_at=observed_at,
        )
    return state


def diff_state(
    published: dict[int, Iface], current: dict[int, Iface], index: int, observed_at: str
) -> list[Iface]:
    """What to announce for ``index``, given what was last published (active
    interfaces only) and the fresh state. Returns the events in order; empty when
    nothing the bridge cares about changed."""
    before = published.get(index)
    after = current.get(index)
    events: list[Iface] = []
    if before is not None and (
        after is None or after.name != before.name or not after.active
    ):
        if after is None or after.name != before.name:
            operstate = OPERSTATE_GONE
        else:
            operstate = after.operstate
        events.append(before.deactivated(operstate, observed_at))
    if after is not None and after.active and after != before:
        events.append(after)
    return events
