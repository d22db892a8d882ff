"""The persisted vNIC configurations: `<state>/runtime_vnics.json`.

Shape (operators read it): `{"<device>": [VNIC, ...], ...}` where VNIC is the normalised
vNIC of the request with what the executor resolved filled in — `mac_address` (given or
generated once), `parent_subnet` / `parent_gateway` (given or detected) and the MACVLAN
`network` it is attached to.  A generated MAC is stored here and reused, so it never
changes across re-creations and reboots.

Written crash-safely with `common.atomicfile`.  Mutations happen on the event loop; the
caller hands `snapshot()` to a worker thread for the write.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from services.executor.runtime.devicefile import DeviceFile

log = logging.getLogger(__name__)

FILE_NAME = "runtime_vnics.json"


class VnicStore(DeviceFile):
    FILE_NAME = FILE_NAME
    FALLBACK = "starting with no stored vNICs"
    log = log

    def devices(self) -> list[str]:
        return list(self._data)

    def set(self, device: str, vnics: list[dict[str, Any]]) -> dict[str, Any]:
        self._data[device] = copy.deepcopy(vnics)
        return self.snapshot()

    def macs(self, exclude: str | None = None) -> dict[str, str]:
        """MAC → device for every stored vNIC (except those of `exclude`)."""
        out = {}
        for device, vnics in self._data.items():
            if device == exclude:
                continue
            for vnic in vnics:
                if vnic.get("mac_address"):
                    out[str(vnic["mac_address"])] = device
        return out

    def ips(self, exclude: str | None = None) -> dict[tuple[str, str], str]:
        """(network, IP) → device for every stored vNIC with a static address."""
        out = {}
        for device, vnics in self._data.items():
            if device == exclude:
                continue
            for vnic in vnics:
                if vnic.get("ip_address") and vnic.get("network"):
                    out[(str(vnic["network"]), str(vnic["ip_address"]))] = device
        return out

    def stored_mac(self, device: str, vnic_name: str) -> str | None:
        for vnic in self._data.get(device, []):
            if vnic.get("name") == vnic_name and vnic.get("mac_address"):
                return str(vnic["mac_address"])
        return None
