"""The network monitor's socket and line protocol, shared by netmon (the server) and
netbridge (its client), so the two can never disagree.

The socket is `<state>/netmon.sock`; every line is one JSON object (PROTOCOL.md, "Network
monitor socket")::

    {"type":"network_discovery","data":{"interfaces":[IFACE...],"timestamp":"<iso>"}}
    {"type":"network_change","data":IFACE}
    {"type":"serial_devices","data":{"devices":[SERIAL...],"timestamp":"<iso>"}}
    {"type":"ethernet_links","data":{"links":[{"interface","mac_address"}...],"timestamp":"<iso>"}}

`serial_devices` (the USB serial adapters under the by-id directory, the whole list every
time it changes, and right after the discovery line when there are any; a discovery
means "no adapters" until one follows) is newer than the other two: a reader
that does not know it drops it as an unknown type and carries on.

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
import re
from typing import Any

SOCKET_NAME = "netmon.sock"
DISCOVERY = "network_discovery"
CHANGE = "network_change"
SERIAL = "serial_devices"
# Up, plain Ethernet links with or without IPv4 (services/netmon/links.py); as new as
# `serial_devices` and sent the same way: after the discovery line when there are any,
# and whole on every change.
LINKS = "ethernet_links"

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


def serial_line(devices: list[dict[str, Any]], timestamp: str) -> bytes:
    return encode_line({"type": SERIAL, "data": {"devices": devices, "timestamp": timestamp}})


def links_line(links: list[dict[str, Any]], timestamp: str) -> bytes:
    return encode_line({"type": LINKS, "data": {"links": links, "timestamp": timestamp}})


class BadLine(Exception):
    """A line that is dropped; ``reason`` names its counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- bounds on what a peer may send --------------------------------------------------------
# A real IFACE nests five levels deep (line, data, interfaces, IFACE, address list, address);
# anything far deeper is hostile and would exhaust the interpreter's recursion in the JSON
# decoder or in whatever walks the value later (copies, the bus encoder).
MAX_DEPTH = 16
# Addresses per interface: real hosts carry a handful; this keeps one cache entry small.
MAX_ADDRESSES = 64
# Every string field (names, addresses, MACs, ISO times) is short; this bounds an entry.
MAX_STRING = 64
IFNAME_MAX = 15  # IFNAMSIZ - 1 in the Linux kernel

# Strings are blanked after dropping the escapes that matter to quoting (backslash pairs
# first, as a decoder reads them, then escaped quotes): plain replaces and a pattern that
# cannot backtrack keep this linear whatever the input.
_JSON_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
# The kernel refuses "/", whitespace and ":" is reserved for aliases; bound like IFNAMSIZ.
_IFNAME = re.compile(rf"[^/:\s\x00-\x1f]{{1,{IFNAME_MAX}}}")

# Scalar fields of IFACE and of one address, with the types they may carry (None allowed
# where netmon sends null).  Unknown keys are left out of the parsed value.
_IFACE_FIELDS: dict[str, tuple[type, ...]] = {
    "index": (int, type(None)), "operstate": (str, type(None)),
    "gateway": (str, type(None)), "timestamp": (str, type(None)),
    "mac_address": (str, type(None)), "active": (bool, type(None)),
    VIRTUAL_KEY: (bool, type(None)),
}
_ADDRESS_FIELDS: dict[str, tuple[type, ...]] = {
    "address": (str,), "prefixlen": (int,), "subnet": (str, type(None)),
    "network_address": (str, type(None)),
}


def nesting_depth_exceeds(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text in ``raw`` nests arrays/objects deeper than ``limit``.

    Cheap and recursion-free: strings are blanked, everything but brackets removed, and
    innermost empty pairs stripped ``limit`` times with C-speed regex passes; brackets left
    over then mean deeper nesting (or unbalanced text, which the decoder refuses anyway)."""
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = _JSON_STRING.sub(b"", unescaped).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False
    for _ in range(limit):
        reduced = _EMPTY_PAIR.sub(b"", brackets)
        if reduced == brackets:
            return False  # unbalanced: the decoder reports it as not JSON
        brackets = reduced
    return bool(_EMPTY_PAIR.search(brackets))


def _check_fields(value: dict[str, Any], fields: dict[str, tuple[type, ...]],
                  out: dict[str, Any]) -> None:
    for key, types in fields.items():
        if key not in value:
            continue
        field = value[key]
        # bool is an int subclass: an "index": true is as wrong as a string.
        if not isinstance(field, types) or (isinstance(field, bool) and bool not in types):
            raise BadLine("dropped_bad_shape")
        if isinstance(field, str) and len(field) > MAX_STRING:
            raise BadLine("dropped_bad_shape")
        if isinstance(field, int) and not isinstance(field, bool) and not 0 <= field < 1 << 32:
            raise BadLine("dropped_bad_shape")
        out[key] = field


def _check_iface(value: Any) -> Interface:
    """A copy of ``value`` holding only the known IFACE fields, each of its type and bounded."""
    if not isinstance(value, dict):
        raise BadLine("dropped_bad_shape")
    name = value.get("interface")
    addrs = value.get("ipv4_addresses")
    if not isinstance(name, str) or not _IFNAME.fullmatch(name) or not isinstance(addrs, list):
        raise BadLine("dropped_bad_shape")
    if len(addrs) > MAX_ADDRESSES:
        raise BadLine("dropped_too_many_addresses")
    iface: Interface = {"interface": name}
    _check_fields(value, _IFACE_FIELDS, iface)
    checked: list[dict[str, Any]] = []
    for addr in addrs:
        if not isinstance(addr, dict) or not isinstance(addr.get("address"), str):
            raise BadLine("dropped_bad_shape")
        entry: dict[str, Any] = {}
        _check_fields(addr, _ADDRESS_FIELDS, entry)
        checked.append(entry)
    iface["ipv4_addresses"] = checked
    return iface


def _check_serial(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(
            isinstance(value.get(key), str) and value.get(key) for key in ("path", "device_id")):
        raise BadLine("dropped_bad_shape")
    return value


def parse_line(raw: bytes) -> tuple[str, Any]:
    """Decode one line into ``(DISCOVERY, [iface...])``, ``(CHANGE, iface)`` or
    ``(SERIAL, [device...])``; raise ``BadLine`` otherwise.  The caller bounds the line's
    length."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadLine("dropped_invalid_utf8") from None
    if nesting_depth_exceeds(raw):
        raise BadLine("dropped_too_deep")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        # ValueError also covers integers past Python's digit limit.
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
    if kind == LINKS:
        if not isinstance(data, dict) or not isinstance(data.get("links"), list):
            raise BadLine("dropped_bad_shape")
        links = data["links"]
        if not all(isinstance(lk, dict) and isinstance(lk.get("interface"), str)
                   for lk in links):
            raise BadLine("dropped_bad_shape")
        return kind, links
    raise BadLine("dropped_unknown_type")
