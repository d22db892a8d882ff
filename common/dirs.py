"""The agent's own directories: checked before anything is put in them.

The run directory holds the bus's ipc sockets and supervisord's control socket; whoever
can write into it can stand in for any process on the bus.  A development default such as
``/tmp/orchestrator-<uid>`` can be created in advance by another local user, so an existing
directory is used only when it is a real directory (not a symlink), owned by the user the
process runs as, and closed to group and others.  The state directory holds state files,
logs and the netmon socket: it must be ours and not writable by everyone.

Shared mode (``gid`` given, from ``ORCH_AGENT_GROUP``): in the agent container the
executor runs as root and gateway/netbridge as an unprivileged user of the agent group, so
both directories are set up by the entry point as root-owned and group-shared.  Then the
rule is exactly: owned by root or by the user this runs as, group = the agent group, and
no permission bits for others (run directory), resp. not writable by others (state
directory).  Without a group the strict single-user rules above apply.

A directory that fails is refused with a message that says what is wrong and how to fix
it; it is never repaired in place (a chmod would not undo what another user may already
have put there).

``python -m common.dirs run|state PATH`` runs the same checks for shell scripts.
"""

from __future__ import annotations

import os
import pwd
import stat
import sys
from collections.abc import Sequence
from pathlib import Path


class UnsafeDirectory(Exception):
    """A directory the agent must not use; the message names it and the fix."""


def _owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _inspect(path: Path, what: str, gid: int | None = None) -> os.stat_result:
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise UnsafeDirectory(f"{what} {path} cannot be inspected: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeDirectory(f"{what} {path} is a symbolic link; use a real directory "
                              "(or point at its target)")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectory(f"{what} {path} exists and is not a directory")
    uid = os.geteuid()
    if gid is not None:
        if info.st_uid not in (0, uid):
            raise UnsafeDirectory(
                f"{what} {path} belongs to {_owner_name(info.st_uid)}, neither root nor the "
                f"user this runs as ({_owner_name(uid)}). Remove it or choose another "
                "directory")
        if info.st_gid != gid:
            raise UnsafeDirectory(
                f"{what} {path} has group {info.st_gid}, not the agent group {gid}; "
                f"chgrp {gid} {path} after checking its contents")
        return info
    if info.st_uid != uid:
        raise UnsafeDirectory(
            f"{what} {path} belongs to {_owner_name(info.st_uid)}, not to the user this "
            f"runs as ({_owner_name(uid)}); another user may have created it in advance. "
            "Remove it or choose another directory")
    return info


def check_run_dir(path: Path, gid: int | None = None) -> None:
    """Refuse a run directory that is not ours alone (owner, real directory, mode 0700),
    or with ``gid``: not root's or ours, not of the agent group, or open to others."""
    mode = stat.S_IMODE(_inspect(path, "run directory", gid).st_mode)
    if gid is not None:
        if mode & 0o007:
            raise UnsafeDirectory(
                f"run directory {path} is open to others (mode {mode:04o}); it holds the "
                f"bus sockets. Remove it, or chmod o-rwx {path} if nobody else used it")
        return
    if mode & 0o077:
        raise UnsafeDirectory(
            f"run directory {path} is open to group or others (mode {mode:04o}); it holds "
            f"the bus sockets. Remove it, or chmod 700 {path} if nobody else used it")


def check_state_dir(path: Path, gid: int | None = None) -> None:
    """Refuse a state directory that is not ours (with ``gid``: root's or ours, of the
    agent group) or that everyone may write to."""
    mode = stat.S_IMODE(_inspect(path, "state directory", gid).st_mode)
    if mode & 0o002:
        raise UnsafeDirectory(
            f"state directory {path} is writable by everyone (mode {mode:04o}); "
            f"chmod o-w {path} after checking its contents")


def prepare_run_dir(path: Path, gid: int | None = None) -> None:
    """Create the run directory 0700 when missing; check it either way.  A shared one
    (``gid``) is created by the entry point, never here: created by whichever program came
    first it would have the wrong owner or group."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if gid is None:
            path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UnsafeDirectory(f"run directory {path} cannot be created: {exc.strerror}") from None
    check_run_dir(path, gid)


def prepare_state_dir(path: Path, gid: int | None = None) -> None:
    """Create the state directory when missing; check it either way."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        pass  # a non-directory: the check below says so
    except OSError as exc:
        raise UnsafeDirectory(
            f"state directory {path} cannot be created: {exc.strerror}") from None
    check_state_dir(path, gid)


def prepare(run_dir: Path, state_dir: Path, gid: int | None = None) -> None:
    """What every agent process does before it writes a log line or binds the bus."""
    prepare_state_dir(state_dir, gid)
    prepare_run_dir(run_dir, gid)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    kinds = {"run": prepare_run_dir, "state": prepare_state_dir}
    if len(args) not in (2, 3) or args[0] not in kinds or (
            len(args) == 3 and not args[2].isdigit()):
        print("usage: python -m common.dirs run|state PATH [GID]", file=sys.stderr)
        return 2
    try:
        kinds[args[0]](Path(args[1]), int(args[2]) if len(args) == 3 else None)
    except UnsafeDirectory as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
