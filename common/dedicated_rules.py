"""Dedicated NICs on record, as the executor keeps them and the network bridge reads them.

The executor writes `<state>/runtime_dedicated.json` (atomically, see
`services/executor/runtime/dedicated.py` for the item shape); the bridge only reads it to
answer `get_host_interfaces` with `dedicated_to`, since a NIC inside a runtime is no longer
visible in the host's namespace and the network monitor cannot report it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from common.atomicfile import read_json

log = logging.getLogger(__name__)

FILE_NAME = "runtime_dedicated.json"


def dedicated_interfaces(state_dir: Path) -> dict[str, str]:
    """{interface: runtime} of every NIC on record; empty when there is no (readable)
    file.  A NIC whose runtime was deleted stays listed until it is back on the host."""
    try:
        raw = read_json(Path(state_dir) / FILE_NAME)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", FILE_NAME, exc)
        return {}
    out: dict[str, str] = {}
    if isinstance(raw, dict):
        for device, items in raw.items():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and isinstance(item.get("interface"), str):
                    out[item["interface"]] = str(device)
    return out
