"""The host's parent interfaces as the executor follows them for re-homing.

Two pieces of state:

* the **table** — name → netmon IFACE record, fed by netbridge's `net.discovery` (the whole
  list) and `net.change` (one interface) events and by `interfaces` snapshots.  An
  interface reported inactive (`"active": false`, no IPv4 addresses) stays in the table as
  such: it has no subnet, so nothing is re-homed onto or away from it.
* the **subnets last seen** on each parent while it was active, persisted in
  `<state>/host_subnets.json` (`{"<parent>": ["198.51.100.0/24", ...]}`).  A MACVLAN
  network *follows* its parent when its subnet is one the parent has carried: only such
  networks are moved when the parent's subnet changes.  A network deliberately made for
  another subnet on the same wire (a PLC LAN the host has no address on) is never moved.

Mutations happen on the event loop; `write` (blocking) runs in the state-io thread.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

from common.atomicfile import atomic_write_json
from common.statepath import within
from services.executor.runtime.devicefile import read_state

log = logging.getLogger(__name__)

FILE_NAME = "host_subnets.json"


def norm_subnet(text: str) -> str | None:
    try:
        return str(ipaddress.IPv4Network(text, strict=False))
    except ValueError:
        return None


def subnets(iface: dict[str, Any] | None) -> list[str]:
    """The IPv4 subnets of an active IFACE record, in netmon's order (first = primary)."""
    if not iface or iface.get("active") is False:
        return []
    out: list[str] = []
    for addr in iface.get("ipv4_addresses") or []:
        if isinstance(addr, dict) and isinstance(addr.get("subnet"), str):
            subnet = norm_subnet(addr["subnet"])
            if subnet and subnet not in out:
                out.append(subnet)
    return out


def address_on(iface: dict[str, Any], subnet: str) -> str | None:
    """The host's own address on `subnet` (kept out of the runtimes' address pool)."""
    for addr in iface.get("ipv4_addresses") or []:
        if isinstance(addr, dict) and norm_subnet(str(addr.get("subnet"))) == subnet \
                and addr.get("address"):
            return str(addr["address"])
    return None


def gateway_in(iface: dict[str, Any], subnet: str) -> str | None:
    """The parent's default gateway when it lies inside `subnet`."""
    gateway = iface.get("gateway")
    if not isinstance(gateway, str):
        return None
    try:
        if ipaddress.IPv4Address(gateway) in ipaddress.IPv4Network(subnet):
            return gateway
    except ValueError:
        return None
    return None


class HostNetworks:
    def __init__(self, state_dir: Path) -> None:
        self.path = within(Path(state_dir), FILE_NAME)
        self.table: dict[str, dict[str, Any]] = {}
        self.known = False  # a discovery or a snapshot has filled the table
        self._seen: dict[str, list[str]] = {}

    # --- the table ----------------------------------------------------------------------

    def replace(self, interfaces: list[dict[str, Any]]) -> None:
        """A discovery or a fresh snapshot: the complete list of active interfaces."""
        table = {}
        for iface in interfaces:
            if isinstance(iface, dict) and isinstance(iface.get("interface"), str):
                table[iface["interface"]] = iface
        # Interfaces that disappeared from the list are inactive now, not forgotten.
        for name, old in self.table.items():
            if name not in table:
                table[name] = {**old, "active": False, "ipv4_addresses": [], "gateway": None}
        self.table = table
        self.known = True

    def update(self, iface: dict[str, Any]) -> None:
        name = iface.get("interface")
        if isinstance(name, str):
            self.table[name] = iface

    def get(self, parent: str) -> dict[str, Any] | None:
        return self.table.get(parent)

    def current(self, parent: str) -> list[str]:
        return subnets(self.table.get(parent))

    # --- subnets last seen --------------------------------------------------------------

    def load(self) -> None:
        raw = read_state(self.path, log, "no subnet history")
        seen: dict[str, list[str]] = {}
        if isinstance(raw, dict):
            for parent, items in raw.items():
                if isinstance(parent, str) and isinstance(items, list):
                    seen[parent] = [s for s in map(str, items) if norm_subnet(s)]
        self._seen = seen

    def seen(self, parent: str) -> list[str]:
        return list(self._seen.get(parent, []))

    def remember(self, parent: str, values: list[str]) -> dict[str, Any] | None:
        """Record the subnets a parent carries now; the snapshot to write, or None when
        nothing changed."""
        if not values or self._seen.get(parent) == values:
            return None
        self._seen[parent] = list(values)
        return {k: list(v) for k, v in self._seen.items()}

    def write(self, snapshot: dict[str, Any]) -> None:
        """Blocking; run in the state-io thread."""
        atomic_write_json(self.path, snapshot)
