"""Put a host character device at a path inside a running container, or take it away.

Run as its own short-lived process (``python -m services.executor.runtime.serialnode``):
entering a container's mount namespace (`setns(CLONE_NEWNS)`) is refused to a process
with more than one thread, and the executor has many.

How the node gets there: the host's device file is *bind-mounted*, not re-created with
`mknod`.  A clone of the host node's mount is taken before entering the container
(`open_tree(OPEN_TREE_CLONE)`), then attached at the container path (`move_mount`,
Linux 5.2+).  A bind keeps the node on its own filesystem, which matters for
pseudo-terminal slaves (a `/dev/pts/N` copy made with `mknod` elsewhere answers every
open with EIO) and changes nothing for USB serial adapters.  Whatever was mounted at the
path before (the node of an earlier plug) is detached first, so a replug with a new
major/minor replaces the node without restarting the runtime.

Usage: ``serialnode attach <pid> <host node> <container path>``
       ``serialnode detach <pid> <container path>``
Exit status 0 on success; otherwise 1 with the reason on stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
from collections.abc import Sequence

CLONE_NEWNS = 0x00020000
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x00000004
MNT_DETACH = 2
# x86_64 and aarch64 share these numbers (both use the generic table for new calls).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _enter(pid: int) -> None:
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
    try:
        _check(_libc.setns(fd, CLONE_NEWNS), f"entering the mount namespace of pid {pid}")
    finally:
        os.close(fd)


def _enter_root(pid: int) -> None:
    """Enter the container's mount namespace; paths then resolve against its root."""
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY)
    try:
        _enter(pid)
        os.fchdir(root)
        os.chroot(".")
    finally:
        os.close(root)


def _detach(path: str) -> None:
    """Unmount whatever sits on `path` (repeatedly: stacked binds) and remove the file."""
    for _ in range(8):
        if _libc.umount2(path.encode(), MNT_DETACH) != 0:
            break
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def attach(pid: int, source: str, target: str) -> None:
    tree = _check(_libc.syscall(SYS_OPEN_TREE, AT_FDCWD, source.encode(),
                                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC),
                  f"cloning the mount of {source}")
    _enter_root(pid)
    _detach(target)
    os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
    fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    _check(_libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, target.encode(),
                         MOVE_MOUNT_F_EMPTY_PATH), f"attaching {source} at {target}")


def detach(pid: int, target: str) -> None:
    _enter_root(pid)
    _detach(target)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(args) == 4 and args[0] == "attach":
            attach(int(args[1]), args[2], args[3])
        elif len(args) == 3 and args[0] == "detach":
            detach(int(args[1]), args[2])
        else:
            sys.stderr.write("usage: serialnode attach PID NODE PATH | detach PID PATH\n")
            return 2
    except (OSError, ValueError) as exc:
        code = getattr(exc, "errno", None)
        sys.stderr.write(f"{exc}{' (' + errno.errorcode.get(code, '') + ')' if code else ''}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
