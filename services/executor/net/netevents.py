"""The re-homing history of each runtime: `<state>/network_events.json`.

`{"<device>": [EVENT, ...]}`, oldest first, at most `KEEP` per device.  `get_device_status`
shows the list as `network_events` and its last entry as `last_rehome`.  An EVENT:

```json
{"at": "<iso>", "parent": "eth0", "vnic": "eth0", "outcome": "rehomed",
 "from_network": "macvlan_eth0_198.51.100.0_24", "to_network": "macvlan_eth0_203.0.113.0_24",
 "from_subnet": "198.51.100.0/24", "to_subnet": "203.0.113.0/24",
 "mac_address": "02:..", "ip_address": "203.0.113.2", "static_ip": null,
 "note": null, "error": null, "duration_ms": 412}
```

Outcomes: `rehomed` (on the new network, static IP kept or engine-assigned as before),
`rehomed_new_ip` (the static IP does not fit the new subnet; the engine assigned one —
`note` says why), `detached` (left without a LAN network — `note` or `error` says why),
`reattached` (a detached vNIC is back on its parent's network), `failed` (the move could
not be made; the vNIC was put back on its old network — `error` says why).

Forgotten with the device's vNICs.  Written crash-safely from the state-io thread.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from services.executor.runtime.devicefile import DeviceFile

log = logging.getLogger(__name__)

FILE_NAME = "network_events.json"
KEEP = 10


class NetEvents(DeviceFile):
    FILE_NAME = FILE_NAME
    FALLBACK = "starting with no network events"
    KEEP = KEEP
    log = log

    def add(self, device: str, event: dict[str, Any]) -> dict[str, Any]:
        """Append an event; returns the snapshot to write."""
        events = self._data.setdefault(device, [])
        events.append(copy.deepcopy(event))
        del events[:-KEEP]
        return self.snapshot()
