"""Our own allocator for the runtimes' internal networks.

Docker's default address pools hold about thirty bridge networks; a host with fifty
runtimes needs more.  Each internal network takes the first free block of
`internal_prefix` bits (a /28 by default: 11 runtimes' worth of addresses for one) from
`internal_pool`, skipping every block that overlaps any network the engine already has.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from services.executor.errors import OperationFailed


def pick_subnet(pool: str, prefix: int, used: Iterable[str]) -> str:
    """The first `prefix`-sized block of `pool` overlapping none of `used`."""
    net = ipaddress.IPv4Network(pool, strict=False)
    taken = []
    for text in used:
        try:
            taken.append(ipaddress.IPv4Network(text, strict=False))
        except ValueError:
            continue  # IPv6 or garbage: cannot overlap an IPv4 block
    taken = [t for t in taken if t.overlaps(net)]
    for block in net.subnets(new_prefix=prefix):
        if not any(block.overlaps(t) for t in taken):
            return str(block)
    raise OperationFailed(f"No free /{prefix} subnet left in the internal pool {pool}")


def subnets_of(networks: Iterable[dict]) -> list[str]:
    """Every IPAM subnet of the engine's networks (as listed by the API)."""
    out = []
    for network in networks:
        for cfg in (network.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Subnet"):
                out.append(cfg["Subnet"])
    return out
