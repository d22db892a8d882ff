"""Names and addresses: Docker's naming rules, our network names, MAC addresses.

Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
import os
import re

CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
# `<name>_internal` must stay a 63-character DNS label.
NEW_NAME_MAX = 54
INTERNAL_SUFFIX = "_internal"
ORCHESTRATOR_DEVICE = "__orchestrator__"


def valid_container_name(name: str, limit: int = 255) -> bool:
    return len(name) <= limit and CONTAINER_NAME.fullmatch(name) is not None


def valid_ifname(name: str) -> bool:
    return IFNAME.fullmatch(name) is not None and name not in (".", "..")


def internal_network(device: str) -> str:
    return f"{device}{INTERNAL_SUFFIX}"


def is_internal_network(name: str) -> bool:
    return name.endswith(INTERNAL_SUFFIX)


def macvlan_network(parent: str, subnet: str) -> str:
    """`macvlan_<parent>_<subnet with / → _>`, e.g. `macvlan_eth0_192.168.1.0_24`."""
    return f"macvlan_{parent}_{subnet.replace('/', '_')}"


def normalise_mac(text: str) -> str | None:
    """Lower-case colon form of a unicast, non-zero MAC, or None when it is not one."""
    mac = text.strip().lower().replace("-", ":")
    if not MAC.fullmatch(mac) or mac == "00:00:00:00:00:00" or int(mac[:2], 16) & 1:
        return None
    return mac


def generate_mac(taken: set[str] | None = None) -> str:
    """A random locally administered unicast MAC not in `taken`."""
    taken = taken or set()
    while True:
        raw = bytearray(os.urandom(6))
        raw[0] = (raw[0] & 0xFC) | 0x02  # locally administered, unicast
        mac = ":".join(f"{b:02x}" for b in raw)
        if mac not in taken:
            return mac


def host_in_subnet(ip: str, subnet: str) -> bool:
    """True when `ip` lies in `subnet` and is neither its network nor broadcast address."""
    addr = ipaddress.IPv4Address(ip)
    net = ipaddress.IPv4Network(subnet, strict=False)
    return addr in net and addr not in (net.network_address, net.broadcast_address)
