"""The network monitor's socket and line protocol, shared by netmon (the server) and
netbridge (its client), so the two can never disagree.

The socket is `<state>/netmon.sock`; every line is one JSON object (PROTOCOL.md, "Network
monitor socket")::

    {"type":"network_discovery","data":{"interfaces":[IFACE...],"timestamp":"<iso>"}}
    {"type":"network_change","data":IFACE}
    {"type":"serial_devices","data":{"devices":[SERIAL...],"timestamp":"<iso>"}}

`serial_devices` (the USB serial adapters under the by-id directory, the whole list every
time it changes, and right after the discovery line when there are any; a discovery
means "no adapters" until one follows) is newer than the other two: a reader
that does not know it drops it as an unknown type and carries on.

Virtual interface names: the monitor never reports them, and netbridge's
``get_host_interfaces`` filters them.  The rule is by name, not by link kind: a
plant-facing NIC may itself be a veth end, a bridge or a VLAN on some edge devices, so the
kind says little about whether a runtime may be attached to it.  The names below are the
ones container engines, hypervisors and overlay networks give to the devices they create
for themselves.
"""

from __future__ import annotations

import json
from typing import Any

SOCKET_NAME = "netmon.sock"
DISCOVERY = "network_discovery"
CHANGE = "network_change"
SERIAL = "serial_devices"

Interface = dict[str, Any]

# Exact names.
VIRTUAL_NAMES: frozenset[str] = frozenset({"lo", "docker0"})

# Name prefixes: Docker (docker*, br-*, veth*), libvirt (virbr*, vnet*), CNI and overlay
# plugins (cni*, flannel*, cali*, weave*, vxlan*, kube-*, tunl*), tunnels (tun*, tap*)
# and dummies. None of these can be a MACVLAN parent on the plant LAN.
VIRTUAL_PREFIXES: tuple[str, ...] = (
    "docker",
    "br-",
    "veth",
    "virbr",
    "vnet",
    "cni",
    "flannel",
    "cali",
    "weave",
    "vxlan",
    "kube-",
    "tunl",
    "tun",
    "tap",
    "dummy",
)


def is_virtual(name: str) -> bool:
    """True when ``name`` belongs to a virtual device that is never reported."""
    return name in VIRTUAL_NAMES or name.startswith(VIRTUAL_PREFIXES)


# --- lines -----------------------------------------------------------------------------------


def encode_line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def discovery_line(interfaces: list[Interface], timestamp: str) -> bytes:
    return encode_line({"type": DISCOVERY,
                        "data": {"interfaces": interfaces, "timestamp": timestamp}})


def change_line(iface: Interface) -> bytes:
    return encode_line({"type": CHANGE, "data": iface})


def serial_line(devices: list[dict[str, Any]], timestamp: str) -> bytes:
    return encode_line({"type": SERIAL, "data": {"devices": devices, "timestamp": timestamp}})


class BadLine(Exception):
    """A line that is dropped; ``reason`` names its counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_iface(value: Any) -> Interface:
    if not isinstance(value, dict):
        raise BadLine("dropped_bad_shape")
    name = value.get("interface")
    addrs = value.get("ipv4_addresses")
    if not isinstance(name, str) or not name or not isinstance(addrs, list):
        raise BadLine("dropped_bad_shape")
    for addr in addrs:
        if not isinstance(addr, dict) or not isinstance(addr.get("address"), str):
            raise BadLine("dropped_bad_shape")
    return value


def _check_serial(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(
            isinstance(value.get(key), str) and value.get(key) for key in ("path", "device_id")):
        raise BadLine("dropped_bad_shape")
    return value


def parse_line(raw: bytes) -> tuple[str, Any]:
    """Decode one line into ``(DISCOVERY, [iface...])``, ``(CHANGE, iface)`` or
    ``(SERIAL, [device...])``; raise ``BadLine`` otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadLine("dropped_invalid_utf8") from None
    try:
        message = json.loads(text)
    except ValueError:
        raise BadLine("dropped_not_json") from None
    if not isinstance(message, dict):
        raise BadLine("dropped_not_object")
    kind = message.get("type")
    data = message.get("data")
    if kind == DISCOVERY:
        if not isinstance(data, dict) or not isinstance(data.get("interfaces"), list):
            raise BadLine("dropped_bad_shape")
        return kind, [_check_iface(i) for i in data["interfaces"]]
    if kind == CHANGE:
        return kind, _check_iface(data)
    if kind == SERIAL:
        if not isinstance(data, dict) or not isinstance(data.get("devices"), list):
            raise BadLine("dropped_bad_shape")
        return kind, [_check_serial(d) for d in data["devices"]]
    raise BadLine("dropped_unknown_type")
