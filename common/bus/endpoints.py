"""The endpoint table: every bus address derives from one private run directory.

Endpoints are `ipc://` files in the run directory (mode 0700).  Each process binds
`<name>.pub` (PUB) and `<name>.rpc` (ROUTER); clients connect.  Nothing is TCP.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

SERVICES = ("gateway", "executor", "metrics", "netbridge")


class Endpoints:
    """The endpoint table: every bus address derives from the run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def pub(self, name: str) -> str:
        return f"ipc://{self.run_dir}/{name}.pub"

    def rpc(self, name: str) -> str:
        return f"ipc://{self.run_dir}/{name}.rpc"

    def all_pubs(self, names: Iterable[str] = SERVICES) -> list[str]:
        return [self.pub(name) for name in names]


def prepare_run_dir(path: Path, shared: bool = False) -> None:
    """Create the private run directory (0700) that holds the ipc files.  A directory
    shared with the agent group is set up by the entry point and left as it is."""
    if shared:
        return
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
