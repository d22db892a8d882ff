"""Which interface names count as virtual.

Shared by the monitor (which never reports virtual interfaces) and the netbridge's
``get_host_interfaces`` filter, so the two can never disagree.

The rule is by name, not by link kind: a plant-facing NIC may itself be a veth end, a
bridge or a VLAN on some edge devices, so the kind says little about whether a runtime
may be attached to it. The names below are the ones container engines, hypervisors and
overlay networks give to the devices they create for themselves.
"""

from __future__ import annotations

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
