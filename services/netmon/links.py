"""Ethernet links that are up, as sysfs shows them: candidates for a dedicated NIC.

The monitor's interface records cover only links that are up with IPv4 (the network
the agent bridges onto); a NIC meant for a fieldbus is up without any address, and
`get_host_interfaces` marks such a NIC `dedicated_only`.  So this small watch lists every
link of the host's namespace that is

* Ethernet (`type` 1, ARPHRD_ETHER) and not a virtual name (`netmon_proto.is_virtual`),
* not wireless (`wireless` / `phy80211`), not a bridge, a bond or a bridge port,
* up (`flags` has IFF_UP and `carrier` is 1),

polled from sysfs once a second (the whole list, sent on change like `serial_devices`).
Whether a listed link has IPv4 is the reader's question: it has the address records.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.netmon_proto import is_virtual
from services.netmon.poll import PollWatch

log = logging.getLogger(__name__)

DEFAULT_POLL = 1.0
SYS_CLASS_NET = Path("/sys/class/net")
ARPHRD_ETHER = "1"
IFF_UP = 0x1
# Present in a link's sysfs directory when it is something else than a plain NIC.
NOT_PLAIN = ("wireless", "phy80211", "bridge", "bonding", "brport")

Link = dict[str, Any]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def scan(sys_net: Path = SYS_CLASS_NET) -> list[Link]:
    """`{"interface", "mac_address"}` of every up, plain Ethernet link, sorted by name."""
    try:
        names = sorted(os.listdir(sys_net))
    except OSError:
        return []
    links: list[Link] = []
    for name in names:
        base = sys_net / name
        if is_virtual(name) or _read(base / "type") != ARPHRD_ETHER:
            continue
        if any((base / extra).exists() for extra in NOT_PLAIN):
            continue
        try:
            flags = int(_read(base / "flags") or "0", 16)
        except ValueError:
            continue
        if not flags & IFF_UP or _read(base / "carrier") != "1":
            continue
        links.append({"interface": name, "mac_address": _read(base / "address")})
    return links


class LinkWatch(PollWatch):
    """Poll sysfs and call `on_change(links)` whenever the list changes."""

    def __init__(self, on_change: Callable[[list[Link]], None], *,
                 interval: float = DEFAULT_POLL, sys_net: Path = SYS_CLASS_NET) -> None:
        super().__init__(functools.partial(scan, sys_net), on_change, interval=interval,
                         task_name="link-watch")

    @property
    def links(self) -> list[Link]:
        return self.items

    def changed(self, items: list[Link]) -> None:
        log.info("up ethernet links: %s", ", ".join(lk["interface"] for lk in items) or "none")
