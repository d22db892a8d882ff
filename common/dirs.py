"""The agent's own directories: checked before anything is put in them.

The run directory holds the bus's ipc sockets and supervisord's control socket; whoever
can write into it can stand in for any process on the bus.  A development default such as
``/tmp/orchestrator-<uid>`` can be created in advance by another local user, so an existing
directory is used only when it is a real directory (not a symlink), owned by the user the
process runs as, and closed to group and others.  The state directory holds state files,
logs and the netmon socket: it must be ours and not writable by everyone.

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


def _inspect(path: Path, what: str) -> os.stat_result:
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
    if info.st_uid != uid:
        raise UnsafeDirectory(
            f"{what} {path} belongs to {_owner_name(info.st_uid)}, not to the user this "
            f"runs as ({_owner_name(uid)}); another user may have created it in advance. "
            "Remove it or choose another directory")
    return info


def check_run_dir(path: Path) -> None:
    """Refuse a run directory that is not ours alone (owner, real directory, mode 0700)."""
    mode = stat.S_IMODE(_inspect(path, "run directory").st_mode)
    if mode & 0o077:
        raise UnsafeDirectory(
            f"run directory {path} is open to group or others (mode {mode:04o}); it holds "
            f"the bus sockets. Remove it, or chmod 700 {path} if nobody else used it")


def check_state_dir(path: Path) -> None:
    """Refuse a state directory that is not ours or that everyone may write to."""
    mode = stat.S_IMODE(_inspect(path, "state directory").st_mode)
    if mode & 0o002:
        raise UnsafeDirectory(
            f"state directory {path} is writable by everyone (mode {mode:04o}); "
            f"chmod o-w {path} after checking its contents")


def prepare_run_dir(path: Path) -> None:
    """Create the run directory 0700 when missing; check it either way."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UnsafeDirectory(f"run directory {path} cannot be created: {exc.strerror}") from None
    check_run_dir(path)


def prepare_state_dir(path: Path) -> None:
    """Create the state directory when missing; check it either way."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        pass  # a non-directory: the check below says so
    except OSError as exc:
        raise UnsafeDirectory(
            f"state directory {path} cannot be created: {exc.strerror}") from None
    check_state_dir(path)


def prepare(run_dir: Path, state_dir: Path) -> None:
    """What every agent process does before it writes a log line or binds the bus."""
    prepare_state_dir(state_dir)
    prepare_run_dir(run_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    kinds = {"run": prepare_run_dir, "state": prepare_state_dir}
    if len(args) != 2 or args[0] not in kinds:
        print("usage: python -m common.dirs run|state PATH", file=sys.stderr)
        return 2
    try:
        kinds[args[0]](Path(args[1]))
    except UnsafeDirectory as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
