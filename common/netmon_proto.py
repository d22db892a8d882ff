"""The network monitor's socket and line protocol, shared by netmon (the server) and
netbridge (its client), so the two can never disagree.

The socket is `<state>/netmon.sock`; every line is one JSON object (PROTOCOL.md, "Network
monitor socket")::

    {"type":"network_discovery","data":{"interfaces":[IFACE...],"timestamp":"<iso>"}}
    {"type":"network_change","data":IFACE}

Virtual interfaces: the monitor reports every UP interface with IPv4, each with an extra
key ``"virtual": true|false`` (``is_virtual``); the line format is otherwise unchanged, so
a client that ignores the key still works.  netbridge keeps virtual interfaces in its
cache for ``get_host_interfaces`` with ``include_virtual: true`` only: it neither publishes
them on the bus nor hands them to the executor, whose network-change logic therefore
never sees them.  By default ``get_host_interfaces`` leaves out the names the original
agent leaves out (``is_listed_virtual``: its prefixes, case-insensitive).

The rule is by name, not by link kind: a plant-facing NIC may itself be a veth end, a
bridge or a VLAN on some edge devices, so the kind says little about whether a runtime
may be attached to it.  The names below are the ones container engines, hypervisors,
VPNs and overlay networks give to the devices they create for themselves.
"""

from __future__ import annotations

import json
from typing import Any

SOCKET_NAME = "netmon.sock"
DISCOVERY = "network_discovery"
CHANGE = "network_change"

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


# The original agent's list for `get_host_interfaces`: name prefixes, case-insensitive.
LISTED_VIRTUAL_PREFIXES: tuple[str, ...] = (
    "lo", "docker", "br-", "veth", "virbr", "tailscale", "zt", "cni", "flannel",
    "kube-ipvs", "wg", "cilium", "macvtap", "sit", "can",
)
VIRTUAL_KEY = "virtual"


def is_listed_virtual(name: str) -> bool:
    """True when the original leaves ``name`` out of `get_host_interfaces` by default."""
    return name.lower().startswith(LISTED_VIRTUAL_PREFIXES)


def is_virtual(name: str) -> bool:
    """True when ``name`` belongs to a virtual device: reported with ``"virtual": true``
    and kept out of the network-change logic."""
    return (name in VIRTUAL_NAMES or name.startswith(VIRTUAL_PREFIXES)
            or is_listed_virtual(name))


def iface_is_virtual(iface: Interface) -> bool:
    """The monitor's flag, or the name rule for a monitor that sends no flag."""
    flag = iface.get(VIRTUAL_KEY)
    return flag if isinstance(flag, bool) else is_virtual(str(iface.get("interface", "")))


# --- lines -----------------------------------------------------------------------------------


def encode_line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def discovery_line(interfaces: list[Interface], timestamp: str) -> bytes:
    return encode_line({"type": DISCOVERY,
                        "data": {"interfaces": interfaces, "timestamp": timestamp}})


def change_line(iface: Interface) -> bytes:
    return encode_line({"type": CHANGE, "data": iface})


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


def parse_line(raw: bytes) -> tuple[str, Any]:
    """Decode one line into ``(DISCOVERY, [iface...])`` or ``(CHANGE, iface)``; raise
    ``BadLine`` otherwise."""
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
    raise BadLine("dropped_unknown_type")
