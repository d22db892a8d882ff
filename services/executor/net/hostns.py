"""The host's network namespace, wherever the executor runs: where the engine makes its
MACVLAN networks, where the host's NICs (the vNICs' parents) live, and where the engine's
iptables chains are.

* On the host the executor's own namespace is the host's: `run` calls the work as it is,
  nothing changes.
* In the agent container (a network namespace of its own; the host's PID namespace with
  `--pid host`) it is the namespace of the nearest ancestor process outside the
  executor's: the engine's container shim, the container's init's parent, which runs in
  the engine's namespace.  `/proc/1/ns/net` (the host's init) is the usual answer too,
  but some hosts do not let even root open their init's namespace, and the shim's is the
  engine's by construction.  Without `--pid host` no such process is visible: the
  executor's own namespace is all it has (logged at start).

The namespace is held by a descriptor opened once at start, so it does not depend on the
shim's pid staying the same.  The host's `/sys/class/net` is held the same way: sysfs
shows the interfaces of the namespace it was mounted in, not of the reader's, so in the
container `/sys/class/net` lists the container's (`/proc/<shim>/root/sys/class/net` is the
host's mount, readable with SYS_PTRACE).

Every piece of host-side network work goes through `HostNetns.run` (one thread that has
entered the namespace, `dhcp.netns.run_in_netns`); a child process started inside `run`
(an `iptables`) is born in that namespace too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from services.executor.dhcp import netns

log = logging.getLogger(__name__)

SYSFS = Path("/sys/class/net")
T = TypeVar("T")


class HostNetns:
    """The host's network namespace (`fd`, None when it is the executor's own) and the
    host's `/sys/class/net`."""

    def __init__(self, fd: int | None = None, sysfs_fd: int | None = None,
                 found_by: str = "") -> None:
        self.fd = fd
        self.sysfs_fd = sysfs_fd
        self.found_by = found_by

    @property
    def own(self) -> bool:
        return self.fd is None

    @property
    def path(self) -> str | None:
        """A path to the namespace for `run_in_netns`-style callers; None when it is our
        own (they then work in place)."""
        return None if self.fd is None else f"/proc/{os.getpid()}/fd/{self.fd}"

    @property
    def ns_file(self) -> str:
        """A path to the namespace that can always be opened (our own when it is ours)."""
        return self.path or f"/proc/{os.getpid()}/ns/net"

    @property
    def sysfs(self) -> Path:
        if self.sysfs_fd is None:
            return SYSFS
        return Path(f"/proc/{os.getpid()}/fd/{self.sysfs_fd}")

    def run(self, work: Callable[[], T], timeout: float = netns.JOIN_TIMEOUT) -> T:
        """`work()` in the host's namespace: in place when it is ours, else in a thread
        that entered it.  What `work` raises is raised as it is either way, so callers
        see the same errors on the host and in the container; `NetnsError` when the
        namespace cannot be entered or the work overran `timeout`."""
        if self.fd is None:
            return work()
        try:
            return netns.run_in_netns(self.path, work, timeout)
        except netns.NetnsError as exc:
            cause = exc.__cause__
            if isinstance(cause, Exception) and not isinstance(cause, netns.NetnsError):
                raise cause from None
            raise

    def describe(self) -> str:
        return "the executor's own" if self.own else f"that of {self.found_by}"


OWN = HostNetns()


def _ino(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
            return comm.read().strip()
    except OSError:
        return "?"


def locate(max_depth: int = 32) -> HostNetns:
    """Find the host's namespace (see the module's docstring); OWN when the executor's
    own is the host's, or when nothing outside it is visible."""
    own = _ino(f"/proc/{os.getpid()}/ns/net")
    pid = os.getpid()
    for _ in range(max_depth):
        pid = _parent(pid)
        if pid <= 0:
            break
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        except OSError:
            continue  # not ours to open (a protected init): look further up
        if os.fstat(fd).st_ino == own:
            os.close(fd)
            continue
        found_by = f"process {pid} ({_comm(pid)})"
        try:
            sysfs_fd: int | None = os.open(f"/proc/{pid}/root{SYSFS}",
                                           os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            sysfs_fd = None
            log.warning("the host's %s is not readable through %s (%s): wireless parents "
                        "are recognised by ORCH_WIRELESS_INTERFACES only", SYSFS, found_by,
                        exc)
        return HostNetns(fd, sysfs_fd, found_by)
    return OWN
