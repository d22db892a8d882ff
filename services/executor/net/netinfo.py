"""The host's interfaces as the network monitor sees them, asked from netbridge.

Used for vNICs that leave their subnet or gateway to detection ("dhcp" mode without a
`parent_subnet`) and, when the executor runs in a container (and so cannot see the
host's links), for the parent interface's presence.  The last good answer is kept, so a
netbridge restart does not fail creates that it could have answered a moment earlier.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from common.bus import BusError, RpcClient

log = logging.getLogger(__name__)

ASK_TIMEOUT = 3.0
KEEP_LAST = 300.0


class InterfaceCache:
    def __init__(self, client: RpcClient) -> None:
        self._client = client
        self._last: tuple[float, dict[str, dict[str, Any]]] | None = None
        self.last_error = "netbridge has not answered yet"

    async def interfaces(self) -> dict[str, dict[str, Any]] | None:
        """name → IFACE, or None when netbridge has not answered (now or recently)."""
        try:
            result = await self._client.call("interfaces", {}, timeout=ASK_TIMEOUT)
        except BusError as exc:
            self.last_error = f"netbridge did not answer ({exc})"
            if self._last and time.monotonic() - self._last[0] < KEEP_LAST:
                return self._last[1]
            return None
        items = result.get("interfaces") if isinstance(result, dict) else None
        if not isinstance(items, list):
            self.last_error = "netbridge answered without an interface list"
            return None
        table = {str(i.get("interface")): i for i in items if isinstance(i, dict)}
        if not table and not (isinstance(result, dict) and result.get("connected")):
            self.last_error = "the network monitor has not reported any interface yet"
            return None
        self._last = (time.monotonic(), table)
        return table


def detected_network(iface: dict[str, Any]) -> tuple[str | None, str | None]:
    """(subnet, gateway) of an IFACE record: its first IPv4 subnet and its gateway."""
    subnet = None
    for addr in iface.get("ipv4_addresses") or []:
        if isinstance(addr, dict) and addr.get("subnet"):
            subnet = str(addr["subnet"])
            break
    gateway = iface.get("gateway")
    return subnet, (str(gateway) if gateway else None)


def parent_address(iface: dict[str, Any], subnet: str) -> str | None:
    """The host's own address on `subnet`, kept out of the runtimes' address pool."""
    for addr in iface.get("ipv4_addresses") or []:
        if isinstance(addr, dict) and addr.get("subnet") == subnet and addr.get("address"):
            return str(addr["address"])
    return None
