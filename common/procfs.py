"""The few /proc reads that the gateway and the executor need, without psutil.

psutil costs about 0.6 MB of private memory per process once imported.  Metrics samples
the host with it; the gateway and the executor only need a handful of figures that the
kernel gives in one file each, so they read those files here with the same arithmetic as
psutil, and import psutil only on the rare paths where the kernel's file lacks a field
(the gateway's own host sample when metrics is down still uses `common.hostsample`).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

PROC = Path("/proc")


def memory_used_total() -> tuple[int, int]:
    """(used, total) bytes of the host's memory as psutil's `virtual_memory()` gives
    them: used is total minus `MemAvailable`.  A kernel without that field, or one that
    reports it out of range (a container with distorted figures), is left to psutil's own
    estimate."""
    fields: dict[str, int] = {}
    with open(PROC / "meminfo", "rb") as meminfo:
        for line in meminfo:
            name, _, rest = line.partition(b":")
            if name in (b"MemTotal", b"MemAvailable"):
                fields[name.decode()] = int(rest.split()[0]) * 1024
    total, available = fields.get("MemTotal"), fields.get("MemAvailable")
    if total is None or not available or available > total:
        import psutil  # rare: psutil's fallback estimates, exactly as the heartbeat had them

        mem = psutil.virtual_memory()
        return int(mem.used), int(mem.total)
    return total - available, total


def _boot_time() -> float:
    with open(PROC / "stat", "rb") as stat:
        for line in stat:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    raise OSError("no btime line in /proc/stat")


def process_started_at(pid: int) -> float:
    """When process `pid` started, in seconds since the epoch (as psutil's
    `create_time()`: the boot time plus the start tick of /proc/PID/stat)."""
    raw = (PROC / str(pid) / "stat").read_bytes()
    # The command name in parentheses may hold spaces and parentheses: split after the last.
    fields = raw[raw.rindex(b")") + 2:].split()
    ticks = int(fields[19])  # field 22, starttime; fields[0] is field 3
    return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")


def process_command_line(pid: int) -> list[str]:
    raw = (PROC / str(pid) / "cmdline").read_bytes()
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def local_ipv4_addresses() -> frozenset[ipaddress.IPv4Address]:
    """Every IPv4 address of this network namespace's interfaces, secondary ones too: the
    kernel's local routing table lists each as a /32 `host LOCAL` leaf in
    /proc/net/fib_trie."""
    found: set[ipaddress.IPv4Address] = set()
    last = ""
    with open(PROC / "net" / "fib_trie", encoding="ascii") as trie:
        for line in trie:
            text = line.strip()
            if text.startswith(("|--", "+--")):
                last = text[3:].split()[0] if text.startswith("|--") else ""
            elif text.startswith("/32 host LOCAL") and last:
                found.add(ipaddress.IPv4Address(last))
    return frozenset(found)
