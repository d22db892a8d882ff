"""The rules of a runtime's names and vNICs, one set for the gateway and the executor.

The gateway's contract table (`services/gateway/contracts.py`) runs these checks on every
`create_new_runtime`; the executor (`services/executor/runtime/validate.py`) runs the same
ones again, in the same order, on every `create_runtime` it receives on the bus, so the
two can never disagree.  Every check takes an already type-checked value and returns its
normalised form, or raises :class:`Invalid` with a short reason; the caller adds the field
path and the ``Validation error:`` prefix.

The normalised vNIC always has every key, in this order::

    name              str            trimmed, 1-64 printable characters
    parent_interface  str            host interface, 1-15 chars [A-Za-z0-9_.-]
    network_mode      "dhcp" | "manual"   ("static" is read as "manual")
    parent_subnet     str | None     network CIDR such as "192.0.2.0/24"
    parent_gateway    str | None     IPv4 inside parent_subnet
    ip_address        str | None     IPv4 host address (alias "ip"; "/<prefix>" states subnet)
    subnet            str | None     network CIDR; a dotted mask is combined with ip_address
                                     (or, without one, with gateway)
    gateway           str | None     IPv4 inside subnet
    dns               list[str]      IPv4 addresses, possibly empty
    mac_address       str | None     lower-case colon form, unicast, not zero (alias "mac")
    dedicated_interface str          only when given: a host NIC moved into the runtime
                                     (docs/features.md); the vNIC then has no MACVLAN
                                     network and `parent_interface` is not used

``parent_subnet`` / ``parent_gateway`` fall back to ``subnet`` / ``gateway``: the current
cloud sends only the latter, and on a MACVLAN network the vNIC's network is the parent's.

The current cloud's forms: ``"ip": "192.0.2.10/24"`` states the subnet too (the suffix is
its prefix length; a separately given ``subnet`` must agree, CIDR or mask, or the vNIC is
refused); a vNIC without ip_address (dhcp) whose ``subnet`` is a dotted mask forms its
subnet with the ``gateway`` (``255.255.255.0`` + ``192.0.2.1`` → ``192.0.2.0/24``), which
then describes the parent network; without a gateway such a mask is refused.
``None`` means "detect it from the host's interface cache" (subnet, gateway) or
"generate one" (MAC).  A dotted netmask must be contiguous (``0.0.0.255`` is refused).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

from common.netmon_proto import is_virtual

# A meaning check: (type-checked value, the fields normalised before it) -> normalised value.
Check = Callable[[Any, Mapping[str, Any]], Any]

# --- limits ---------------------------------------------------------------------------------

# Docker's embedded DNS and most tooling treat a container name as one DNS label (63
# characters); `<name>_internal` must also stay within that, hence 63 - len("_internal").
CONTAINER_NAME_MAX = 54
# Names of containers the agent did not create itself (older agents, manual tests) are
# only checked against Docker's own rule, with a generous bound.
EXISTING_NAME_MAX = 255
IFNAME_MAX = 15  # IFNAMSIZ - 1 in the Linux kernel
VNIC_NAME_MAX = 64
VNICS_MAX = 16  # far above any real PLC, far below anything that costs us
DNS_SERVERS_MAX = 8
ORCHESTRATOR_DEVICE_ID = "__orchestrator__"
DEFAULT_IMAGE_TAG = "latest"
# The order in which the fields of a vNIC are checked (each may read the earlier ones).
VNIC_FIELDS = ("name", "parent_interface", "network_mode", "parent_subnet", "parent_gateway",
               "ip_address", "subnet", "gateway", "dns", "mac_address", "dedicated_interface")


class Invalid(Exception):
    """A value has the right type but the wrong meaning.

    ``field`` names the offending key relative to the object being checked when it is
    not the field whose check raised (cross-field checks).
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


# --- names ----------------------------------------------------------------------------------

_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_IFNAME = re.compile(rf"[A-Za-z0-9_.-]{{1,{IFNAME_MAX}}}")
_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def _container_name(name: str, limit: int) -> str:
    if len(name) > limit:
        raise Invalid(f"container name is longer than {limit} characters")
    if not _CONTAINER_NAME.fullmatch(name):
        raise Invalid(f"{name!r} is not a valid container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")
    return name


def new_container_name(value: str, _ctx: Mapping[str, Any]) -> str:
    """A name for a container about to be created (leaves room for `_internal`)."""
    return _container_name(value, CONTAINER_NAME_MAX)


def device_id(value: str, _ctx: Mapping[str, Any]) -> str:
    """The name of an existing runtime container."""
    return _container_name(value, EXISTING_NAME_MAX)


def device_id_or_orchestrator(value: str, ctx: Mapping[str, Any]) -> str:
    if value == ORCHESTRATOR_DEVICE_ID:
        return value
    return device_id(value, ctx)


def interface_name(name: str, _ctx: Mapping[str, Any]) -> str:
    # "." and ".." are refused by the kernel even though the character set allows them.
    if not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise Invalid(f"{name!r} is not a valid interface name (1-15 characters [A-Za-z0-9_.-])")
    return name


def image_tag(tag: str, _ctx: Mapping[str, Any]) -> str:
    if tag == "":  # an empty tag states no preference
        return DEFAULT_IMAGE_TAG
    if not _IMAGE_TAG.fullmatch(tag):
        raise Invalid(f"{tag!r} is not a valid image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")
    return tag


# --- addresses ----------------------------------------------------------------------


def parse_ipv4(text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise Invalid(f"{text!r} is not an IPv4 address") from None


def host_address(text: str) -> ipaddress.IPv4Address:
    addr = parse_ipv4(text)
    if addr.is_unspecified or addr.is_loopback or addr.is_multicast or addr.is_reserved:
        raise Invalid(f"{addr} is not a usable host address")
    return addr


def in_network(addr: ipaddress.IPv4Address, net: ipaddress.IPv4Network, what: str) -> None:
    if addr not in net:
        raise Invalid(f"{addr} is outside {what} {net}")
    if addr in (net.network_address, net.broadcast_address):
        raise Invalid(f"{addr} is the network or broadcast address of {net}")


def mask_prefix(text: str) -> int:
    mask = int(parse_ipv4(text))
    inverted = ~mask & 0xFFFFFFFF
    # A netmask is ones followed by zeros: its complement plus one is a power of two.
    if mask == 0 or inverted & (inverted + 1):
        raise Invalid(f"{text!r} is neither a CIDR subnet nor a dotted netmask")
    return 32 - inverted.bit_length()


def network(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text.strip(), strict=False)
    except ValueError:
        raise Invalid(f"{text!r} is not an IPv4 subnet in CIDR form") from None
    # /31 and /32 leave no address that is neither network nor broadcast.
    if not 1 <= net.prefixlen <= 30:
        raise Invalid(f"{net} has a prefix length outside 1-30")
    return net


_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}")


def mac_address(value: str, _ctx: Mapping[str, Any]) -> str:
    text = value.strip()
    if not _MAC.fullmatch(text):
        raise Invalid(f"{value!r} is not a MAC address (six hex octets)")
    mac = text.lower().replace("-", ":")
    first = int(mac[:2], 16)
    if first & 1:  # the group bit: multicast, and broadcast with it
        raise Invalid(f"{mac} is a multicast or broadcast MAC address")
    if mac == "00:00:00:00:00:00":
        raise Invalid(f"{mac} is the all-zero MAC address")
    return mac


def dedicated_interface(value: str, ctx: Mapping[str, Any]) -> str | None:
    """A host NIC to move into the runtime: a valid name, never loopback nor a virtual
    device of a container engine (bridges, veth ends and the like).  A blank value states
    no dedicated NIC (a cloud form may send the key empty)."""
    if not value.strip():
        return None
    name = interface_name(value.strip(), ctx)
    if name == "lo" or is_virtual(name):
        raise Invalid(f"{name} is a loopback or virtual interface and cannot be dedicated")
    return name


# --- vNIC fields ----------------------------------------------------------------------------


def _control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def vnic_name(value: str, _ctx: Mapping[str, Any]) -> str:
    name = value.strip()
    if len(name) > VNIC_NAME_MAX:
        raise Invalid(f"vNIC name is longer than {VNIC_NAME_MAX} characters")
    if _control(name):
        raise Invalid("vNIC name contains control characters")
    return name


def network_mode(value: str, _ctx: Mapping[str, Any]) -> str:
    mode = value.strip().lower()
    if mode == "static":  # the current cloud's word for it
        mode = "manual"
    if mode not in ("dhcp", "manual"):
        raise Invalid(f"{value!r} is not a network mode (dhcp, manual or static)")
    return mode


def parent_subnet(value: str, _ctx: Mapping[str, Any]) -> str:
    if "/" not in value:
        raise Invalid(f"{value!r} is not an IPv4 subnet in CIDR form")
    return str(network(value))


def _inside_parent(addr: ipaddress.IPv4Address, ctx: Mapping[str, Any]) -> None:
    if ctx.get("parent_subnet"):
        in_network(addr, ipaddress.IPv4Network(ctx["parent_subnet"]), "parent_subnet")


def parent_gateway(value: str, ctx: Mapping[str, Any]) -> str:
    addr = host_address(value)
    _inside_parent(addr, ctx)
    return str(addr)


# Notes a check leaves for the later checks and `vnic_post` of the same vNIC (both callers
# hand every check the dict being built); `vnic_post` removes them.
IP_PREFIX = "_ip_prefix"  # the prefix length of an "ip": "192.0.2.10/24"
MASK_PREFIX = "_mask_prefix"  # a dotted-mask subnet waiting for the gateway (no ip_address)


def _note(ctx: Mapping[str, Any], key: str, value: int) -> None:
    if isinstance(ctx, dict):
        ctx[key] = value


def ip_address(value: str, ctx: Mapping[str, Any]) -> str:
    """A host address; the current cloud's `"192.0.2.10/24"` form also states the subnet
    (the suffix is its prefix length)."""
    text, _, suffix = value.partition("/")
    addr = host_address(text)
    if suffix:
        if not suffix.strip().isdigit():
            raise Invalid(f"{value!r} is not an IPv4 address with a prefix length")
        prefix = int(suffix)
        in_network(addr, network(f"{addr}/{prefix}"), "its own subnet")
        _note(ctx, IP_PREFIX, prefix)
    _inside_parent(addr, ctx)
    return str(addr)


def subnet(value: str, ctx: Mapping[str, Any]) -> str | None:
    """A CIDR, or a dotted mask combined with the vNIC's ip_address into a CIDR.  Without
    an ip_address a dotted mask waits for the gateway (`vnic_post` forms the subnet)."""
    ip = ctx.get("ip_address")
    if "/" in value:
        net = network(value)
    else:
        prefix = mask_prefix(value)
        if not ip:
            _note(ctx, MASK_PREFIX, prefix)
            return None
        net = network(f"{ip}/{prefix}")
    stated = ctx.get(IP_PREFIX)
    if stated is not None and stated != net.prefixlen:
        raise Invalid(f"{net} disagrees with the prefix length /{stated} given with "
                      f"ip_address {ip}")
    if ip:
        in_network(ipaddress.IPv4Address(ip), net, "subnet")
    return str(net)


def _implied_subnet(ctx: Mapping[str, Any]) -> str | None:
    """The subnet the vNIC's other fields state when `subnet` itself is absent."""
    if ctx.get(IP_PREFIX) is not None and ctx.get("ip_address"):
        return str(ipaddress.IPv4Network(f"{ctx['ip_address']}/{ctx[IP_PREFIX]}", strict=False))
    return None


def gateway(value: str, ctx: Mapping[str, Any]) -> str:
    addr = host_address(value)
    net = ctx.get("subnet") or _implied_subnet(ctx) or ctx.get("parent_subnet")
    if not net and ctx.get(MASK_PREFIX) is not None:
        net = str(network(f"{addr}/{ctx[MASK_PREFIX]}"))
    if net:
        in_network(addr, ipaddress.IPv4Network(net), "subnet")
    if ctx.get("ip_address") == str(addr):
        raise Invalid(f"{addr} is also the vNIC's ip_address")
    return str(addr)


def dns_servers(value: list[str], _ctx: Mapping[str, Any]) -> list[str]:
    out = []
    for i, text in enumerate(value):
        try:
            out.append(str(parse_ipv4(text)))
        except Invalid as exc:
            raise Invalid(exc.reason, field=f"[{i}]") from None
    return out


def vnic_post(vnic: dict[str, Any]) -> None:
    """Whole-vNIC rules; fills the subnet the other fields state (an ip_address with a
    prefix length, a dotted mask with a gateway) and the parent network from
    subnet/gateway when absent."""
    if vnic.get("dedicated_interface") is None:
        vnic.pop("dedicated_interface", None)  # the key is there only when given
    ip_prefix = vnic.pop(IP_PREFIX, None)
    mask = vnic.pop(MASK_PREFIX, None)
    if vnic["subnet"] is None and ip_prefix is not None and vnic["ip_address"]:
        vnic["subnet"] = str(network(f"{vnic['ip_address']}/{ip_prefix}"))
    if vnic["subnet"] is None and mask is not None:
        if not vnic["gateway"]:
            raise Invalid("a dotted netmask needs ip_address or gateway to form a subnet",
                          field="subnet")
        vnic["subnet"] = str(network(f"{vnic['gateway']}/{mask}"))
    if vnic["network_mode"] == "manual" and not vnic["ip_address"]:
        raise Invalid("network_mode 'manual' needs an ip_address", field="ip_address")
    if vnic.get("dedicated_interface") and vnic["ip_address"] and vnic["subnet"] is None:
        # Nothing can be detected for a NIC that leaves the host.
        raise Invalid("a dedicated vNIC with an ip_address needs its subnet (a CIDR, a "
                      "dotted mask or an ip_address with /prefix)", field="subnet")
    if vnic["parent_subnet"] is None:
        vnic["parent_subnet"] = vnic["subnet"]
    gw = vnic["gateway"]
    if vnic["parent_gateway"] is None and gw is not None:
        parent = vnic["parent_subnet"]
        # Only adopt a gateway that lies on the parent network, or Docker would refuse it.
        if parent is None or ipaddress.IPv4Address(gw) in ipaddress.IPv4Network(parent):
            vnic["parent_gateway"] = gw


def vnic_set(value: list[dict[str, Any]], _ctx: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rules across the vNICs of one runtime (each item is already normalised)."""
    if not value:
        raise Invalid("At least one vNIC configuration is required")
    names: set[str] = set()
    macs: set[str] = set()
    ips: set[str] = set()
    networks: set[tuple[str, str | None]] = set()
    dedicated = {v["dedicated_interface"]: i for i, v in enumerate(value)
                 if v.get("dedicated_interface")}
    for i, vnic in enumerate(value):
        if vnic["name"] in names:
            raise Invalid(f"duplicate vNIC name {vnic['name']!r}", field=f"[{i}].name")
        names.add(vnic["name"])
        mac = vnic["mac_address"]
        if mac is not None:
            if mac in macs:
                raise Invalid(f"duplicate MAC address {mac}", field=f"[{i}].mac_address")
            macs.add(mac)
        ip = vnic["ip_address"]
        if ip is not None:
            if ip in ips:
                raise Invalid(f"duplicate IP address {ip}", field=f"[{i}].ip_address")
            ips.add(ip)
        if vnic.get("dedicated_interface"):
            if dedicated[vnic["dedicated_interface"]] != i:
                raise Invalid(f"interface {vnic['dedicated_interface']} is dedicated twice",
                              field=f"[{i}].dedicated_interface")
            continue  # no MACVLAN network: the NIC itself moves into the runtime
        if vnic["parent_interface"] in dedicated:
            raise Invalid(f"{vnic['parent_interface']} is dedicated by another vNIC and "
                          "cannot also be a MACVLAN parent", field=f"[{i}].parent_interface")
        # Docker gives a container one endpoint per network; one MACVLAN network exists
        # per parent and parent subnet (an unknown subnet will be detected as the same).
        key = (vnic["parent_interface"], vnic["parent_subnet"])
        if key in networks:
            where = key[1] or "its detected subnet"
            reason = f"a second vNIC on the MACVLAN network of {key[0]} / {where}"
            raise Invalid(reason, field=f"[{i}].parent_interface")
        networks.add(key)
    return value
