"""The target and members of a move, and the rules that need no engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from services.executor.context import Context
from services.executor.net import names, networks
from services.executor.net.hostnets import address_on, gateway_in, norm_subnet
from services.executor.runtime.journal import Operation

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
    connected: bool = False  # to the target network, by this move or before a restart
    leased: bool = False  # connected with the DHCP lease it got on the new LAN first

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
            # A wireless vNIC is no MACVLAN member: its link follows its own way.
            if vnic.get("parent_interface") == parent and not vnic.get("wifi"):
                out.append(Member(device, vnics, i, old=dict(vnic)))
                break  # one vNIC per parent: the engine allows one network per parent
    return out


def network_subnets(net: dict[str, Any]) -> list[str]:
    return [s for s in (norm_subnet(x) for x in networks.network_subnets(net)) if s]
