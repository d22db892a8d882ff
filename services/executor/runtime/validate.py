"""Validation of `create_runtime` requests, before any engine call.

The gateway validates and normalises every cloud command (`services/gateway/contracts.py`);
the executor checks again, with the same rules in the same order (`common/vnic_rules.py`),
because it is the last line before the engine and because other callers (tests, the tap,
a future CLI) reach it on the bus directly.  It accepts the normalised vNIC shape and the
cloud's aliases (`ip`, `mac`, `static`).

Two stages:
* `check_request` — pure rules plus what the executor knows locally (its stored vNICs, the
  live view, the host's interfaces when it runs on the host).  A failure here is answered
  at once and changes nothing.
* `resolve_vnics` (in `create.py`, step `validating_config`) — what needs the network
  monitor's interface cache: subnet and gateway detection, the parent's presence when the
  executor runs in a container.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import vnic_rules as rules
from services.executor.errors import InvalidRequest
from services.executor.net import names
from services.executor.runtime.serial import check_serials

MODES = {"dhcp": "dhcp", "manual": "manual", "static": "manual"}
REQUIRED = ("name", "parent_interface", "network_mode")
# The meaning check of each vNIC field, in the order of `rules.VNIC_FIELDS`.
CHECKS: dict[str, rules.Check] = {
    "name": rules.vnic_name, "parent_interface": rules.interface_name,
    "network_mode": rules.network_mode, "parent_subnet": rules.parent_subnet,
    "parent_gateway": rules.parent_gateway, "ip_address": rules.ip_address,
    "subnet": rules.subnet, "gateway": rules.gateway, "dns": rules.dns_servers,
    "mac_address": rules.mac_address, "dedicated_interface": rules.dedicated_interface,
}


@dataclass(frozen=True)
class CreateRequest:
    device: str
    tag: str
    vnics: list[dict[str, Any]]
    serials: list[dict[str, str]] = field(default_factory=list)
    # vNICs with `dedicated_interface`: no MACVLAN network, the NIC itself moves in
    # (`dedicated.py`); `vnics` holds the others only.
    dedicated: list[dict[str, Any]] = field(default_factory=list)


def _invalid(where: str, exc: rules.Invalid) -> InvalidRequest:
    return InvalidRequest(f"{where}{exc.field or ''}: {exc.reason}")


def _str(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}: must be a string")
    value = value.strip()
    return value or None


def _typed(raw: Any, where: str) -> dict[str, Any]:
    """Step 1: the fields by their names (aliases resolved), each of its type or None."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"{where}: must be an object")
    item = dict(raw)
    for alias, key in (("ip", "ip_address"), ("mac", "mac_address")):
        if item.get(key) is None and item.get(alias) is not None:
            item[key] = item[alias]
    typed: dict[str, Any] = {}
    for key in rules.VNIC_FIELDS:
        if key != "dns":
            typed[key] = _str(item.get(key), f"{where}.{key}")
    dns = item.get("dns") or []
    if not isinstance(dns, list) or not all(isinstance(d, str) for d in dns):
        raise InvalidRequest(f"{where}.dns: must be a list of strings")
    typed["dns"] = dns
    for key in REQUIRED:
        if typed[key] is None:
            raise InvalidRequest(f"{where}.{key}: is required")
    return typed


def _checked(typed: dict[str, Any], where: str) -> dict[str, Any]:
    """Step 2: each field's meaning check, in order, over the fields before it; then the
    whole-vNIC rules."""
    vnic: dict[str, Any] = {}
    for key in rules.VNIC_FIELDS:
        value = typed[key]
        try:
            vnic[key] = None if value is None else CHECKS[key](value, vnic)
        except rules.Invalid as exc:
            raise _invalid(f"{where}.{key}", exc) from None
    try:
        rules.vnic_post(vnic)
    except rules.Invalid as exc:
        raise _invalid(f"{where}.", exc) from None
    return vnic


def normalise_vnic(raw: Any, i: int) -> dict[str, Any]:
    """One vNIC as the gateway normalises it, plus the MACVLAN network it will be on."""
    vnic = _checked(_typed(raw, f"vnic_configs[{i}]"), f"vnic_configs[{i}]")
    vnic["network"] = (names.macvlan_network(vnic["parent_interface"], vnic["parent_subnet"])
                       if vnic["parent_subnet"] and not vnic.get("dedicated_interface")
                       else None)
    return vnic


def _top(params: Mapping[str, Any], key: str, check: rules.Check, default: Any = None) -> Any:
    """A top-level field: a non-empty string that passes its rule."""
    value = params.get(key) or default
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{key}: must be a non-empty string")
    try:
        return check(value, {})
    except rules.Invalid as exc:
        raise _invalid(key, exc) from None


def check_request(params: Mapping[str, Any],
                  by_id_dir: Path = Path("/dev/serial/by-id")) -> CreateRequest:
    """Pure rules: names, addresses, MACs, duplicates within the request; serial configs
    must name entries of `by_id_dir`."""
    device = _top(params, "container_name", rules.new_container_name)
    tag = _top(params, "runtime_version", rules.image_tag, rules.DEFAULT_IMAGE_TAG)
    raw_vnics = params.get("vnic_configs")
    if raw_vnics is None:
        raw_vnics = []
    if not isinstance(raw_vnics, list) or len(raw_vnics) > rules.VNICS_MAX:
        raise InvalidRequest(f"vnic_configs: must be a list of at most {rules.VNICS_MAX} vNICs")
    vnics = [normalise_vnic(raw, i) for i, raw in enumerate(raw_vnics)]
    # Unlike the cloud's command, a bus request may ask for a runtime without vNICs.
    if vnics:
        try:
            rules.vnic_set(vnics, {})
        except rules.Invalid as exc:
            raise _invalid("vnic_configs", exc) from None
    serials = check_serials(params.get("serial_configs"), by_id_dir)
    return CreateRequest(device, tag, [v for v in vnics if not v.get("dedicated_interface")],
                         serials, [v for v in vnics if v.get("dedicated_interface")])


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
