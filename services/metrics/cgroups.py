"""Container usage straight from the kernel's cgroup files, when they are visible.

The cheapest source there is: two or three small reads per container and cycle, no engine
round trip.  They are visible when the metrics process runs on the host, or in a container
that has the host's cgroup tree mounted (`ORCH_CGROUP_ROOT`).  In a plain container only its
own cgroup is mounted and `locate()` finds nothing; the service then uses the engine's
stats streams (`streams.py`).

Both hierarchies are understood:

* v2 (unified): `<dir>/cpu.stat` (`usage_usec`), `<dir>/memory.current`,
  `<dir>/memory.stat` (`inactive_file`);
* v1: `<cpuacct dir>/cpuacct.usage` (ns), `<memory dir>/memory.usage_in_bytes`,
  `<memory dir>/memory.stat` (`total_inactive_file`).

Memory is reported as the engine's CLI does: usage minus the inactive page cache, which
the kernel reclaims first and which says nothing about the runtime's own needs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from services.metrics.readings import Reading

V1_CPU_CONTROLLERS = ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")


class CgroupGone(OSError):
    """The container's cgroup files vanished or became unreadable (it stopped)."""


@dataclass(frozen=True)
class CgroupFiles:
    """Where one container's counters are; `version` 1 or 2."""

    version: int
    cpu: Path
    memory: Path
    memory_stat: Path

    def read(self, now: float) -> Reading:
        try:
            if self.version == 2:
                cpu_ns = _stat_value(self.cpu.read_text(), "usage_usec") * 1000
                inactive = _stat_value(self.memory_stat.read_text(), "inactive_file")
            else:
                cpu_ns = int(self.cpu.read_text())
                inactive = _stat_value(self.memory_stat.read_text(), "total_inactive_file")
            usage = int(self.memory.read_text())
        except (OSError, ValueError) as exc:
            raise CgroupGone(str(exc)) from None
        return Reading(at=now, cpu_ns=cpu_ns, memory_bytes=max(0, usage - inactive))


def _stat_value(text: str, key: str) -> int:
    """A value of a `key value` per line file; 0 when the key is absent (older kernels)."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


READ_SIZE = 16384  # memory.stat is 1-3 KB; a longer file is read on in more steps


class CgroupReader:
    """One container's counter files kept open and re-read with `os.pread`.

    Opening the three files by path every cycle (a path walk through the cgroup tree each)
    was most of the metrics process's idle time with a hundred runtimes; a `pread` on an
    open descriptor is one system call.  When the container stops its cgroup directory is
    removed and a read of the open file fails (ENODEV on kernfs); the files are then
    opened once more by path, which finds the cgroup of a restarted container at the same
    place, and `CgroupGone` is raised when that fails too.
    """

    def __init__(self, files: CgroupFiles) -> None:
        self.files = files
        self._fds: tuple[int, int, int] | None = None
        if files.version == 2:
            self._cpu_key, self._cpu_scale = b"usage_usec ", 1000
            self._inactive_key = b"inactive_file "
        else:
            self._cpu_key, self._cpu_scale = b"", 1
            self._inactive_key = b"total_inactive_file "

    def read(self, now: float) -> Reading:
        if self._fds is not None:
            try:
                return self._read_open(now, self._fds)
            except (OSError, ValueError):
                self.close()  # its cgroup went away (or was replaced): open it again
        try:
            self._fds = self._open()
            return self._read_open(now, self._fds)
        except (OSError, ValueError) as exc:
            self.close()
            raise CgroupGone(str(exc)) from None

    def _open(self) -> tuple[int, int, int]:
        opened: list[int] = []
        try:
            for path in (self.files.cpu, self.files.memory, self.files.memory_stat):
                opened.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            for fd in opened:
                os.close(fd)
            raise
        return opened[0], opened[1], opened[2]

    def _read_open(self, now: float, fds: tuple[int, int, int]) -> Reading:
        cpu_fd, memory_fd, stat_fd = fds
        cpu_text = _pread_all(cpu_fd)
        if self._cpu_key:
            cpu_ns = _field(cpu_text, self._cpu_key) * self._cpu_scale
        else:
            cpu_ns = int(cpu_text)
        inactive = _field(_pread_all(stat_fd), self._inactive_key)
        usage = int(_pread_all(memory_fd))
        return Reading(at=now, cpu_ns=cpu_ns, memory_bytes=max(0, usage - inactive))

    def close(self) -> None:
        fds, self._fds = self._fds, None
        for fd in fds or ():
            with contextlib.suppress(OSError):
                os.close(fd)


def _pread_all(fd: int) -> bytes:
    data = os.pread(fd, READ_SIZE, 0)
    if len(data) < READ_SIZE:
        return data
    parts = [data]
    while len(data) == READ_SIZE:
        data = os.pread(fd, READ_SIZE, READ_SIZE * len(parts))
        parts.append(data)
    return b"".join(parts)


def _field(data: bytes, key: bytes) -> int:
    """The value of `key` (given with its trailing space) in a `key value` per line file,
    found without splitting the file into lines; 0 when absent (older kernels)."""
    if data.startswith(key):
        start = len(key)
    else:
        at = data.find(b"\n" + key)
        if at < 0:
            return 0
        start = at + 1 + len(key)
    end = data.find(b"\n", start)
    return int(data[start:] if end < 0 else data[start:end])


def _candidate_dirs(cid: str, parent: str, proc_paths: dict[str, str]) -> dict[str, list[str]]:
    """Relative cgroup directories to try, per controller key ('' = unified)."""
    parent = parent.strip("/")
    guesses = [f"system.slice/docker-{cid}.scope", f"docker/{cid}"]
    if parent:
        # A custom --cgroup-parent: cgroupfs nests the id below it, systemd uses a scope.
        guesses[:0] = [f"{parent}/{cid}", f"{parent}/docker-{cid}.scope"]
    found: dict[str, list[str]] = {}
    for key in ("", "cpu", "memory"):
        exact = proc_paths.get(key)
        found[key] = ([exact] if exact else []) + guesses
    return found


def proc_cgroup_paths(pid: int, proc: Path = Path("/proc")) -> dict[str, str]:
    """The cgroup paths of a process by controller ('' for v2, 'cpu', 'memory'), read from
    /proc/<pid>/cgroup; empty when the process is not visible (another PID namespace)."""
    if pid <= 0:
        return {}
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return {}
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, path = parts[1].split(","), parts[2].strip("/")
        if parts[0] == "0" and parts[1] == "":
            paths[""] = path
        if "cpuacct" in controllers:
            paths["cpu"] = path
        if "memory" in controllers:
            paths["memory"] = path
    return paths


def locate(root: Path, cid: str, pid: int = 0, parent: str = "",
           proc: Path = Path("/proc")) -> CgroupFiles | None:
    """Find the counters of container `cid` under `root`, or None when not visible.

    A directory is only accepted when its path names the container id: a PID seen through
    another PID namespace could belong to an unrelated process.
    """
    candidates = _candidate_dirs(cid, parent, proc_cgroup_paths(pid, proc))
    for rel in candidates[""]:
        if cid not in rel:
            continue
        base = root / rel
        files = CgroupFiles(2, base / "cpu.stat", base / "memory.current", base / "memory.stat")
        if _readable(files):
            return files
    mem_dir = _first_dir(root / "memory", candidates["memory"], cid)
    if mem_dir is None:
        return None
    for controller in V1_CPU_CONTROLLERS:
        cpu_dir = _first_dir(root / controller, candidates["cpu"], cid)
        if cpu_dir is None:
            continue
        files = CgroupFiles(1, cpu_dir / "cpuacct.usage", mem_dir / "memory.usage_in_bytes",
                            mem_dir / "memory.stat")
        if _readable(files):
            return files
    return None


def _first_dir(base: Path, rels: list[str], cid: str) -> Path | None:
    for rel in rels:
        if cid in rel and (base / rel).is_dir():
            return base / rel
    return None


def _readable(files: CgroupFiles) -> bool:
    return all(os.access(p, os.R_OK) for p in (files.cpu, files.memory, files.memory_stat))
