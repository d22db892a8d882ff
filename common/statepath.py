"""Paths of state files, built so that no name can lead outside their directory.

Device ids and other names arrive over the bus; a name such as ``../../etc/x`` joined
onto a state directory would let whoever reaches the bus replace or delete files
anywhere the process may write.  Every state file path goes through `within`, which
accepts exactly one plain path component and checks the joined result once more after
normalisation (so a future caller cannot bypass the first check by accident).
"""

from __future__ import annotations

import os
from pathlib import Path

NAME_MAX = 255  # one path component on Linux file systems


class UnsafeName(ValueError):
    """A name that would not stay one file inside its directory."""


def within(directory: Path, name: str, suffix: str = "") -> Path:
    """``directory / (name + suffix)``, refusing any name that is not one plain component."""
    if not isinstance(name, str) or not name:
        raise UnsafeName("a state file name must be a non-empty string")
    leaf = name + suffix
    if ("/" in leaf or "\\" in leaf or "\0" in leaf or {name, leaf} & {".", ".."}
            or len(leaf.encode("utf-8", "surrogateescape")) > NAME_MAX):
        raise UnsafeName(f"{name!r} cannot name a file inside {directory}")
    path = Path(directory) / leaf
    base = os.path.normpath(os.path.abspath(directory))
    if os.path.dirname(os.path.normpath(os.path.abspath(path))) != base:
        raise UnsafeName(f"{name!r} leads outside {directory}")
    return path
