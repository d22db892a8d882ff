"""Validation of `create_runtime` requests, before any engine call.

The gateway validates and normalises every cloud command (`services/gateway/contracts.py`);
the executor checks again because it is the last line before the engine and because other
callers (tests, the tap, a future CLI) reach it on the bus directly.  It accepts the
normalised vNIC shape and the cloud's aliases (`ip`, `mac`, `static`).

Two stages:
* `check_request` — pure rules plus what the executor knows locally (its stored vNICs, the
  live view, the host's interfaces when it runs on the host).  A failure here is answered
  at once and changes nothing.
* `resolve_vnics` (in `create.py`, step `validating_config`) — what needs the network
  monitor's interface cache: subnet and gateway detection, the parent's presence when the
  executor runs in a container.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.executor.errors import InvalidRequest
from services.executor.net import names

VNICS_MAX = 16
MODES = {"dhcp": "dhcp", "manual": "manual", "static": "manual"}
OPTIONAL = ("parent_subnet", "parent_gateway", "ip_address", "subnet", "gateway",
            "mac_address")


@dataclass(frozen=True)
class CreateRequest:
    device: str
    tag: str
    vnics: list[dict[str, Any]]


def _str(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}: must be a string")
    value = value.strip()
    return value or None


def _host(text: str, where: str) -> ipaddress.IPv4Address:
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        raise InvalidRequest(f"{where}: {text!r} is not an IPv4 address") from None
    if addr.is_unspecified or addr.is_loopback or addr.is_multicast or addr.is_reserved:
        raise InvalidRequest(f"{where}: {addr} is not a usable host address")
    return addr


def _net(text: str, where: str, ip: str | None = None) -> ipaddress.IPv4Network:
    try:
        if "/" in text:
            net = ipaddress.IPv4Network(text, strict=False)
        elif ip is not None:
            net = ipaddress.IPv4Network(f"{ip}/{text}", strict=False)
        else:
            raise InvalidRequest(f"{where}: a dotted netmask needs ip_address")
    except ValueError:
        raise InvalidRequest(f"{where}: {text!r} is not an IPv4 subnet") from None
    if not 1 <= net.prefixlen <= 30:
        raise InvalidRequest(f"{where}: {net} has a prefix length outside 1-30")
    return net


def _inside(addr: ipaddress.IPv4Address, net: ipaddress.IPv4Network, where: str) -> None:
    if addr not in net:
        raise InvalidRequest(f"{where}: {addr} is outside the subnet {net}")
    if addr in (net.network_address, net.broadcast_address):
        raise InvalidRequest(f"{where}: {addr} is the network or broadcast address of {net}")


def normalise_vnic(raw: Any, i: int) -> dict[str, Any]:
    where = f"vnic_configs[{i}]"
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"{where}: must be an object")
    item = dict(raw)
    for alias, key in (("ip", "ip_address"), ("mac", "mac_address")):
        if item.get(key) is None and item.get(alias) is not None:
            item[key] = item[alias]
    name = _str(item.get("name"), f"{where}.name")
    if not name or len(name) > 64:
        raise InvalidRequest(f"{where}.name: must be 1-64 characters")
    parent = _str(item.get("parent_interface"), f"{where}.parent_interface")
    if not parent or not names.valid_ifname(parent):
        raise InvalidRequest(f"{where}.parent_interface: {parent!r} is not a valid interface "
                             "name (1-15 characters [A-Za-z0-9_.-])")
    mode = MODES.get((_str(item.get("network_mode"), f"{where}.network_mode") or "").lower())
    if mode is None:
        raise InvalidRequest(f"{where}.network_mode: must be dhcp, manual or static")
    vnic: dict[str, Any] = {"name": name, "parent_interface": parent, "network_mode": mode}
    for key in OPTIONAL:
        vnic[key] = _str(item.get(key), f"{where}.{key}")
    dns = item.get("dns") or []
    if not isinstance(dns, list) or not all(isinstance(d, str) for d in dns):
        raise InvalidRequest(f"{where}.dns: must be a list of strings")
    vnic["dns"] = [str(_host(d.strip(), f"{where}.dns")) for d in dns]
    ip = str(_host(vnic["ip_address"], f"{where}.ip_address")) if vnic["ip_address"] else None
    vnic["ip_address"] = ip
    if vnic["subnet"]:
        subnet = _net(vnic["subnet"], f"{where}.subnet", ip)
        vnic["subnet"] = str(subnet)
        if ip:
            _inside(ipaddress.IPv4Address(ip), subnet, f"{where}.ip_address")
    if vnic["parent_subnet"]:
        if "/" not in vnic["parent_subnet"]:
            raise InvalidRequest(f"{where}.parent_subnet: must be a CIDR subnet")
        vnic["parent_subnet"] = str(_net(vnic["parent_subnet"], f"{where}.parent_subnet"))
    elif vnic["subnet"]:
        vnic["parent_subnet"] = vnic["subnet"]
    if vnic["parent_gateway"] is None and vnic["gateway"] is not None:
        vnic["parent_gateway"] = vnic["gateway"]
    parent_net = ipaddress.IPv4Network(vnic["parent_subnet"]) if vnic["parent_subnet"] else None
    for key in ("gateway", "parent_gateway"):
        if vnic[key]:
            addr = _host(vnic[key], f"{where}.{key}")
            vnic[key] = str(addr)
            if parent_net is not None:
                _inside(addr, parent_net, f"{where}.{key}")
    if ip and parent_net is not None:
        _inside(ipaddress.IPv4Address(ip), parent_net, f"{where}.ip_address")
    if ip and ip == vnic["parent_gateway"]:
        raise InvalidRequest(f"{where}.ip_address: {ip} is also the gateway")
    if mode == "manual" and not ip:
        raise InvalidRequest(f"{where}.ip_address: network_mode 'manual' needs an ip_address")
    if vnic["mac_address"]:
        mac = names.normalise_mac(vnic["mac_address"])
        if mac is None:
            raise InvalidRequest(f"{where}.mac_address: {vnic['mac_address']!r} is not a "
                                 "unicast MAC address")
        vnic["mac_address"] = mac
    vnic["network"] = (names.macvlan_network(parent, vnic["parent_subnet"])
                       if vnic["parent_subnet"] else None)
    return vnic


def check_request(params: Mapping[str, Any]) -> CreateRequest:
    """Pure rules: names, addresses, MACs, duplicates within the request."""
    device = params.get("container_name")
    if not isinstance(device, str) or not device:
        raise InvalidRequest("container_name: must be a non-empty string")
    if not names.valid_container_name(device, names.NEW_NAME_MAX) \
            or device == names.ORCHESTRATOR_DEVICE:
        raise InvalidRequest(f"container_name: {device!r} is not a valid container name "
                             f"([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most {names.NEW_NAME_MAX} "
                             "characters)")
    tag = params.get("runtime_version") or "latest"
    if not isinstance(tag, str) or not names.IMAGE_TAG.fullmatch(tag):
        raise InvalidRequest(f"runtime_version: {tag!r} is not a valid image tag")
    raw_vnics = params.get("vnic_configs")
    if raw_vnics is None:
        raw_vnics = []
    if not isinstance(raw_vnics, list) or len(raw_vnics) > VNICS_MAX:
        raise InvalidRequest(f"vnic_configs: must be a list of at most {VNICS_MAX} vNICs")
    vnics = [normalise_vnic(raw, i) for i, raw in enumerate(raw_vnics)]
    seen_names: set[str] = set()
    seen_macs: set[str] = set()
    seen_ips: set[str] = set()
    seen_nets: set[tuple[str, str | None]] = set()
    for i, vnic in enumerate(vnics):
        where = f"vnic_configs[{i}]"
        if vnic["name"] in seen_names:
            raise InvalidRequest(f"{where}.name: duplicate vNIC name {vnic['name']!r}")
        seen_names.add(vnic["name"])
        if vnic["mac_address"]:
            if vnic["mac_address"] in seen_macs:
                raise InvalidRequest(f"{where}.mac_address: duplicate MAC address "
                                     f"{vnic['mac_address']}")
            seen_macs.add(vnic["mac_address"])
        if vnic["ip_address"]:
            if vnic["ip_address"] in seen_ips:
                raise InvalidRequest(f"{where}.ip_address: duplicate IP address "
                                     f"{vnic['ip_address']}")
            seen_ips.add(vnic["ip_address"])
        key = (vnic["parent_interface"], vnic["parent_subnet"])
        if key in seen_nets:
            raise InvalidRequest(f"{where}.parent_interface: a second vNIC on the MACVLAN "
                                 f"network of {key[0]} / {key[1] or 'its detected subnet'}")
        seen_nets.add(key)
    return CreateRequest(device, tag, vnics)


def check_conflicts(req: CreateRequest, macs_in_use: Mapping[str, str],
                    ips_in_use: Mapping[tuple[str, str], str]) -> None:
    """MACs and static IPs already taken by another runtime of this agent."""
    for i, vnic in enumerate(req.vnics):
        where = f"vnic_configs[{i}]"
        owner = macs_in_use.get(vnic["mac_address"] or "")
        if owner and owner != req.device:
            raise InvalidRequest(f"{where}.mac_address: MAC address {vnic['mac_address']} is "
                                 f"already used by runtime {owner}")
        if vnic["ip_address"] and vnic["network"]:
            owner = ips_in_use.get((vnic["network"], vnic["ip_address"]))
            if owner and owner != req.device:
                raise InvalidRequest(f"{where}.ip_address: {vnic['ip_address']} is already "
                                     f"used by runtime {owner} on {vnic['network']}")


def check_parents_local(req: CreateRequest, sysfs: str = "/sys/class/net") -> None:
    """When the executor shares the host's network namespace, every parent must exist."""
    for i, vnic in enumerate(req.vnics):
        if not os.path.exists(os.path.join(sysfs, vnic["parent_interface"])):
            raise InvalidRequest(f"vnic_configs[{i}].parent_interface: interface "
                                 f"{vnic['parent_interface']} does not exist on the host")
