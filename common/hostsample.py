"""Host sampling with psutil, in the units of the cloud heartbeat: metrics samples the
host with it, and the gateway's heartbeat falls back to it.

CPU is psutil's non-blocking percentage (since the previous call), memory and disk are
GB, disk sums the physical partitions only: virtual filesystems are left out and a device
mounted at several places (bind mounts, container overlays) counts once.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from dataclasses import dataclass

import psutil

from common.messages import HostMetrics

GB = 1024**3
MB = 1024**2
VIRTUAL_FS = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
    "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "overlay", "proc",
    "pstore", "ramfs", "rpc_pipefs", "securityfs", "squashfs", "sysfs", "tmpfs", "tracefs",
    "aufs", "shm", "fuse.lxcfs", "nfsd",
})


@dataclass(frozen=True)
class DiskTotals:
    used_gb: float
    total_gb: float


# The mount table is re-read this often; the usage of each partition at every sample.  On
# a host with a hundred containers the table has hundreds of lines (their overlays), and
# parsing it every 5 s was most of the host sample's cost.
MOUNTS_TTL = 60.0


def physical_mounts() -> list[tuple[str, str]]:
    """(device, mount point) of every physical partition."""
    return [(part.device, part.mountpoint) for part in psutil.disk_partitions(all=False)
            if part.fstype not in VIRTUAL_FS and part.device.startswith("/")]


def disk_totals(mounts: list[tuple[str, str]] | None = None) -> DiskTotals:
    """Used and total GB over physical partitions (`mounts`, default: read now), each
    device counted once."""
    seen: set[str] = set()
    used = total = 0
    for device, mountpoint in physical_mounts() if mounts is None else mounts:
        if device in seen:
            continue
        try:
            usage = psutil.disk_usage(mountpoint)
        except OSError:  # a mount that vanished or is unreadable
            continue
        seen.add(device)
        used += usage.used
        total += usage.total
    if total == 0:
        # Inside a container only the overlay root may be visible; it is still the disk
        # the user cares about.
        usage = psutil.disk_usage("/")
        used, total = usage.used, usage.total
    return DiskTotals(used / GB, total / GB)


class HostSampler:
    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # the first reading is meaningless; prime it
        self._boot = psutil.boot_time()
        self._mounts: list[tuple[str, str]] = []
        self._mounts_at = -MOUNTS_TTL

    def sample(self) -> HostMetrics:
        cpu = psutil.cpu_percent(interval=None)
        mem = psutil.virtual_memory()
        if time.monotonic() - self._mounts_at >= MOUNTS_TTL:
            self._mounts, self._mounts_at = physical_mounts(), time.monotonic()
        disk = disk_totals(self._mounts)
        now = time.time()
        return HostMetrics(
            cpu_usage=round(cpu, 1),
            memory_usage=round((mem.total - mem.available) / GB, 2),
            memory_total=round(mem.total / GB, 2),
            disk_usage=round(disk.used_gb, 1),
            disk_total=round(disk.total_gb, 1),
            uptime=int(now - self._boot),
            timestamp=dt.datetime.now().isoformat(),
            sampled_at=now,
        )


def static_facts() -> dict[str, object]:
    """The host facts of `get_consumption_orchestrator` that do not change per sample."""
    mem = psutil.virtual_memory()
    return {
        "memory": int(mem.total / MB),
        "cpu": os.cpu_count() or 1,
        "os": f"{platform.system()} {platform.release()}",
        "kernel": platform.release(),
        "disk": round(disk_totals().total_gb),
    }
