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
    """The first `prefix`-sized block of `pool` overlapping none of `used`.

    One pass over the used ranges sorted by start (integer arithmetic), so a create with
    a hundred runtimes' networks in place costs about what it costs with none."""
    net = ipaddress.IPv4Network(pool, strict=False)
    if not net.prefixlen <= prefix <= 32:
        raise ValueError(f"prefix /{prefix} does not fit in the pool {pool}")
    size = 1 << (32 - prefix)
    low, high = int(net.network_address), int(net.broadcast_address)
    spans = []
    for text in used:
        try:
            taken = ipaddress.IPv4Network(text, strict=False)
        except ValueError:
            continue  # IPv6 or garbage: cannot overlap an IPv4 block
        start, end = int(taken.network_address), int(taken.broadcast_address)
        if end >= low and start <= high:
            spans.append((start, end))
    candidate = low
    for start, end in sorted(spans):
        if end < candidate:
            continue
        if start > candidate + size - 1:
            break  # every later range starts later still: the candidate is free
        candidate = low + ((end - low) // size + 1) * size  # the next block after it
    if candidate + size - 1 > high:
        raise OperationFailed(f"No free /{prefix} subnet left in the internal pool {pool}")
    return str(ipaddress.IPv4Network((candidate, prefix)))


def subnets_of(networks: Iterable[dict]) -> list[str]:
    """Every IPAM subnet of the engine's networks (as listed by the API)."""
    out = []
    for network in networks:
        for cfg in (network.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Subnet"):
                out.append(cfg["Subnet"])
    return out
