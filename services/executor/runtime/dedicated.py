"""Dedicated NICs: a host interface given whole to a runtime (`dedicated_interface`).

Fieldbuses such as EtherCAT and PROFINET need the raw interface, so a vNIC with
`dedicated_interface` gets no MACVLAN network: the host NIC itself moves into the
runtime's network namespace while the runtime runs, and back to the host (same name, its
former addresses and up state) when it stops, is deleted, is removed by hand or the
agent self-destructs.  The keeper (`dedicatedkeeper.py`) does the moving; this module
holds the record, the request checks and the status rows.

The record, `<state>/runtime_dedicated.json` (atomic writes): `{"<device>": [ITEM]}` with
ITEM = `{"vnic", "interface", "network_mode", "ip_address", "prefixlen", "gateway",
"host": {"was_up", "mac_address", "addresses"} | null, "released": bool}`.  It is written
when a create is accepted (so a second create cannot claim the same NIC), `host` before
every move in, `released` when the runtime goes; an item is dropped only once its NIC is
back on the host.  The network bridge reads the same file for `dedicated_to` in
`get_host_interfaces` (`common.dedicated_rules`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from common.dedicated_rules import FILE_NAME
from services.executor.errors import InvalidRequest, OperationFailed
from services.executor.net import networks
from services.executor.runtime import dedicatednet as net
from services.executor.runtime.devicefile import DeviceFile

if TYPE_CHECKING:
    from services.executor.context import Context
    from services.executor.runtime.validate import CreateRequest

log = logging.getLogger(__name__)

# Kinds of link that belong to some other machinery and are never given away.
REFUSED_KINDS = frozenset({"bridge", "bond", "team", "macvlan", "macvtap", "ipvlan",
                           "vxlan", "tun", "wireguard", "ipip", "gre", "sit"})
NETWORK_PREFIX = "dedicated_"


class DedicatedStore(DeviceFile):
    FILE_NAME = FILE_NAME
    FALLBACK = "starting with no dedicated interfaces on record"
    log = log

    def set(self, device: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        self._data[device] = [dict(i) for i in items]
        return self.snapshot()

    def devices(self) -> list[str]:
        return [d for d, items in self._data.items() if items]

    def owner(self, interface: str) -> str | None:
        for device, items in self._data.items():
            if any(i.get("interface") == interface for i in items):
                return device
        return None

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        return [(d, i) for d, items in self._data.items() for i in items]

    def update(self, device: str, interface: str, **changes: Any) -> dict[str, Any] | None:
        """Change one item in place; the snapshot to write, None when absent."""
        for item in self._data.get(device, []):
            if item.get("interface") == interface:
                item.update(changes)
                return self.snapshot()
        return None

    def drop(self, device: str, interface: str) -> dict[str, Any]:
        kept = [i for i in self._data.get(device, []) if i.get("interface") != interface]
        if kept:
            self._data[device] = kept
        else:
            self._data.pop(device, None)
        return self.snapshot()


def record(vnic: dict[str, Any]) -> dict[str, Any]:
    """The stored item of one normalised dedicated vNIC."""
    prefixlen = None
    if vnic.get("ip_address") and vnic.get("subnet"):
        prefixlen = ipaddress.IPv4Network(vnic["subnet"]).prefixlen
    return {"vnic": vnic["name"], "interface": vnic["dedicated_interface"],
            "network_mode": vnic["network_mode"], "ip_address": vnic.get("ip_address"),
            "prefixlen": prefixlen, "subnet": vnic.get("subnet"),
            "gateway": vnic.get("gateway"), "host": None, "released": False}


# --- request checks (before anything changes) ----------------------------------------------


def check_parents(ctx: Context, req: CreateRequest) -> None:
    """No MACVLAN vNIC on a NIC that is dedicated to a runtime."""
    if ctx.dedicated is None:
        return
    for vnic in req.vnics:
        owner = ctx.dedicated.store.owner(vnic["parent_interface"])
        if owner is not None:
            raise InvalidRequest(f"vnic {vnic['name']!r}: parent_interface "
                                 f"{vnic['parent_interface']} is dedicated to runtime {owner}")


async def check_request(ctx: Context, req: CreateRequest) -> None:
    """What only the host can tell: the NIC exists there, is an ordinary NIC, is nobody's
    MACVLAN parent and is not given to another runtime.  InvalidRequest otherwise."""
    assert ctx.dedicated is not None
    store = ctx.dedicated.store
    for vnic in req.dedicated:
        name = vnic["dedicated_interface"]
        where = f"vnic {vnic['name']!r}: dedicated_interface"
        owner = store.owner(name)
        if owner is not None:
            raise InvalidRequest(f"{where}: interface {name} is already dedicated to "
                                 f"runtime {owner}")
        facts = await asyncio.to_thread(net.link_kind, ctx.dedicated.host_ns, name)
        if facts is None:
            raise InvalidRequest(f"{where}: interface {name} does not exist on the host")
        kind, enslaved, loopback = facts
        if loopback or kind in REFUSED_KINDS or enslaved:
            what = ("the loopback interface" if loopback else
                    f"a {kind} interface" if kind in REFUSED_KINDS else
                    "a port of a bridge or bond")
            raise InvalidRequest(f"{where}: interface {name} is {what} and cannot be "
                                 "dedicated")
        users = [d for d in ctx.vnics.devices()
                 if any(v.get("parent_interface") == name for v in ctx.vnics.get(d))]
        on_parent = await ctx.docker.call(networks.macvlans_on_parent, name)
        if users or on_parent:
            net_names = ", ".join(sorted(str(n.get("Name")) for n in on_parent)) or "stored"
            raise InvalidRequest(f"{where}: interface {name} is the parent of MACVLAN "
                                 f"network(s) in use ({net_names}) and cannot be dedicated")


# --- status --------------------------------------------------------------------------------


def status_networks(ctx: Context, device: str) -> dict[str, dict[str, Any]]:
    """Entries of `get_device_status.networks` for the runtime's dedicated NICs."""
    out: dict[str, dict[str, Any]] = {}
    keeper = ctx.dedicated
    if keeper is None:
        return out
    for item in keeper.store.get(device):
        name = str(item["interface"])
        state, error = keeper.states.get(name, ("unknown", None))
        host = item.get("host") or {}
        row: dict[str, Any] = {
            "dedicated": True, "interface": name, "vnic": item.get("vnic"), "state": state,
            "network_mode": item.get("network_mode"),
            "ip_address": item.get("ip_address") if state == "in_runtime" else None,
            "subnet": item.get("subnet"), "gateway": item.get("gateway"),
            "mac_address": host.get("mac_address"),
        }
        if error:
            row["error"] = error
        out[NETWORK_PREFIX + name] = row
    return out


# --- the create's and the delete's steps ----------------------------------------------------


async def claim(ctx: Context, req: CreateRequest) -> None:
    """At the create's acceptance: checked, then on record (before the ack)."""
    if ctx.dedicated is None:
        if req.dedicated:
            raise InvalidRequest("dedicated interfaces are not available in this executor")
        return
    await check_request(ctx, req)
    if req.dedicated:
        await ctx.dedicated.claim(req.device, [record(v) for v in req.dedicated])


async def attach(ctx: Context, device: str) -> None:
    """The create's last step: the runtime runs, so its NICs move in now (not on the
    keeper's next pass), and a NIC that cannot fails the create."""
    if ctx.dedicated is None or not ctx.dedicated.store.get(device):
        return
    if not await ctx.dedicated.sync_device(device):
        faults = [f"{n}: {ctx.dedicated.states.get(n, ('unknown', None))[1] or 'not moved'}"
                  for n in (i["interface"] for i in ctx.dedicated.store.get(device))]
        raise OperationFailed("Dedicated interface(s) could not be given to the runtime: "
                              + "; ".join(faults))


async def release(ctx: Context, device: str) -> None:
    """The runtime is gone (deleted, rolled back, found missing): its NICs go home."""
    if ctx.dedicated is None or not ctx.dedicated.store.get(device):
        return
    if not await ctx.dedicated.release(device):
        log.warning("%s: a dedicated interface is not back on the host yet; the keeper "
                    "keeps trying", device)
