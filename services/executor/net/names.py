"""Names and addresses: our network names, MAC addresses (the naming rules themselves are
`common/vnic_rules.py`).

Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
import os

from common import vnic_rules

INTERNAL_SUFFIX = "_internal"
ORCHESTRATOR_DEVICE = vnic_rules.ORCHESTRATOR_DEVICE_ID


def internal_network(device: str) -> str:
    return f"{device}{INTERNAL_SUFFIX}"


def is_internal_network(name: str) -> bool:
    return name.endswith(INTERNAL_SUFFIX)


def macvlan_network(parent: str, subnet: str) -> str:
    """`macvlan_<parent>_<subnet with / → _>`, e.g. `macvlan_eth0_192.168.1.0_24`."""
    return f"macvlan_{parent}_{subnet.replace('/', '_')}"


def normalise_mac(text: str) -> str | None:
    """Lower-case colon form of a unicast, non-zero MAC, or None when it is not one."""
    try:
        return vnic_rules.mac_address(text, {})
    except vnic_rules.Invalid:
        return None


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
