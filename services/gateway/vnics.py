"""Meaning checks for the vNIC items of ``create_new_runtime``.

The normalised vNIC the executor receives always has every key, in this order::

    name              str            trimmed, 1-64 printable characters
    parent_interface  str            host interface, 1-15 chars [A-Za-z0-9_.-]
    network_mode      "dhcp" | "manual"   ("static" is read as "manual")
    parent_subnet     str | None     network CIDR such as "192.0.2.0/24"
    parent_gateway    str | None     IPv4 inside parent_subnet
    ip_address        str | None     IPv4 host address (alias "ip")
    subnet            str | None     network CIDR; a dotted mask is combined with ip_address
    gateway           str | None     IPv4 inside subnet
    dns               list[str]      IPv4 addresses, possibly empty
    mac_address       str | None     lower-case colon form, unicast, not zero (alias "mac")

``parent_subnet`` / ``parent_gateway`` fall back to ``subnet`` / ``gateway``: the current
cloud sends only the latter, and on a MACVLAN network the vNIC's network is the parent's.
``None`` means "detect it from the host's interface cache" (subnet, gateway) or
"generate one" (MAC).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from services.gateway.validators import (
    VNIC_NAME_MAX,
    Invalid,
    host_address,
    in_network,
    mask_prefix,
    network,
    parse_ipv4,
)


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


def ip_address(value: str, ctx: Mapping[str, Any]) -> str:
    addr = host_address(value)
    _inside_parent(addr, ctx)
    return str(addr)


def subnet(value: str, ctx: Mapping[str, Any]) -> str:
    """A CIDR, or a dotted mask combined with the vNIC's ip_address into a CIDR."""
    ip = ctx.get("ip_address")
    if "/" in value:
        net = network(value)
    else:
        prefix = mask_prefix(value)
        if not ip:
            raise Invalid("a dotted netmask needs ip_address to form a subnet")
        net = network(f"{ip}/{prefix}")
    if ip:
        in_network(ipaddress.IPv4Address(ip), net, "subnet")
    return str(net)


def gateway(value: str, ctx: Mapping[str, Any]) -> str:
    addr = host_address(value)
    net = ctx.get("subnet") or ctx.get("parent_subnet")
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
    """Whole-vNIC rules; fills the parent network from subnet/gateway when absent."""
    if vnic["network_mode"] == "manual" and not vnic["ip_address"]:
        raise Invalid("network_mode 'manual' needs an ip_address", field="ip_address")
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
        # Docker gives a container one endpoint per network; one MACVLAN network exists
        # per parent and parent subnet (an unknown subnet will be detected as the same).
        key = (vnic["parent_interface"], vnic["parent_subnet"])
        if key in networks:
            where = key[1] or "its detected subnet"
            reason = f"a second vNIC on the MACVLAN network of {key[0]} / {where}"
            raise Invalid(reason, field=f"[{i}].parent_interface")
        networks.add(key)
    return value
