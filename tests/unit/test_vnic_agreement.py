"""The gateway's contract and the executor's own check apply one set of vNIC rules
(`common/vnic_rules.py`): the same request is accepted by both with the same normalised
vNICs, or refused by both with the same text."""

from __future__ import annotations

from typing import Any

import pytest

from services.executor.errors import InvalidRequest
from services.executor.runtime.validate import check_request
from services.gateway.contracts import validate
from services.gateway.schema import ContractError


def vnic(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "eth0", "parent_interface": "oat0",
                            "network_mode": "manual", "ip_address": "198.51.100.20",
                            "subnet": "198.51.100.0/24", "gateway": "198.51.100.1"}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


GOOD = [
    vnic(),
    vnic(network_mode="dhcp", ip_address=None, subnet=None, gateway=None),
    vnic(network_mode="static", ip="198.51.100.30", ip_address=None),
    vnic(subnet="255.255.255.0"),
    vnic(subnet="255.255.255.128", gateway="198.51.100.126"),
    vnic(mac="02-AA-00-00-00-01"),
    vnic(mac_address="02:aa:00:00:00:02"),
    vnic(parent_subnet="198.51.100.0/24", parent_gateway="198.51.100.254"),
    vnic(subnet="198.51.100.0/25", parent_subnet="198.51.100.0/24"),
    vnic(dns=["192.0.2.53", " 192.0.2.54 "]),
    vnic(name="  plant floor  ", parent_interface="eth0.100"),
    vnic(gateway="203.0.113.1", subnet=None, ip_address=None, network_mode="dhcp"),
    # The current cloud's forms.
    vnic(ip_address=None, ip="198.51.100.20/24", subnet=None),
    vnic(ip_address="198.51.100.20/25", subnet=None, gateway="198.51.100.1"),
    vnic(ip="198.51.100.20/24", ip_address=None, subnet="255.255.255.0"),
    vnic(ip="198.51.100.20/24", ip_address=None, subnet="198.51.100.0/24"),
    vnic(network_mode="static", ip="198.51.100.20/24", ip_address=None, subnet=None,
         gateway=None),
    vnic(network_mode="dhcp", ip_address=None, subnet="255.255.255.0"),
    vnic(network_mode="dhcp", ip_address=None, subnet="255.255.0.0", gateway="198.51.0.1"),
]

# What the gateway (and the executor alike) make of the current cloud's forms.
NORMALISED = [
    (vnic(ip_address=None, ip="198.51.100.20/24", subnet=None),
     {"ip_address": "198.51.100.20", "subnet": "198.51.100.0/24",
      "parent_subnet": "198.51.100.0/24", "parent_gateway": "198.51.100.1"}),
    (vnic(ip_address="198.51.100.20/25", subnet=None, gateway="198.51.100.1"),
     {"ip_address": "198.51.100.20", "subnet": "198.51.100.0/25"}),
    (vnic(network_mode="dhcp", ip_address=None, subnet="255.255.255.0"),
     {"ip_address": None, "subnet": "198.51.100.0/24", "parent_subnet": "198.51.100.0/24",
      "gateway": "198.51.100.1", "parent_gateway": "198.51.100.1"}),
    (vnic(network_mode="dhcp", ip_address=None, subnet="255.255.0.0", gateway="198.51.0.1"),
     {"subnet": "198.51.0.0/16", "parent_subnet": "198.51.0.0/16",
      "parent_gateway": "198.51.0.1"}),
    (vnic(network_mode="static", ip="198.51.100.30", ip_address=None,
          mac="02:AA:00:00:00:09"),
     {"network_mode": "manual", "ip_address": "198.51.100.30",
      "mac_address": "02:aa:00:00:00:09"}),
]

BAD = [
    vnic(subnet="0.0.0.255"),  # a hostmask, not a netmask
    vnic(subnet="255.0.255.0"),  # not contiguous
    vnic(subnet="198.51.100.0/31"),
    vnic(subnet="255.255.255.0", ip_address=None, network_mode="dhcp", gateway=None),
    vnic(ip="198.51.100.20/24", ip_address=None, subnet="198.51.100.0/25"),
    vnic(ip="198.51.100.20/24", ip_address=None, subnet="255.255.0.0"),
    vnic(ip="198.51.100.20/31", ip_address=None, subnet=None),
    vnic(ip="198.51.100.0/24", ip_address=None, subnet=None),
    vnic(ip="198.51.100.20/abc", ip_address=None),
    vnic(ip="198.51.100.20/24", ip_address=None, subnet=None, gateway="198.51.101.1"),
    vnic(network_mode="dhcp", ip_address=None, subnet="255.255.255.0",
         gateway="198.51.100.255"),
    vnic(ip_address="203.0.113.5"),
    vnic(ip_address="198.51.100.255"),
    vnic(ip_address="198.51.100.0"),
    vnic(ip_address="127.0.0.1", subnet=None, gateway=None),
    vnic(ip_address="224.0.0.1", subnet=None, gateway=None),
    vnic(ip_address="not-an-ip"),
    vnic(gateway="203.0.113.1"),
    vnic(gateway="198.51.100.20"),
    vnic(parent_subnet="198.51.100.7"),
    vnic(parent_subnet="198.51.100.0/24", parent_gateway="203.0.113.1"),
    vnic(parent_subnet="203.0.113.0/24"),
    vnic(mac_address="01:00:5e:00:00:01"),
    vnic(mac_address="ff:ff:ff:ff:ff:ff"),
    vnic(mac_address="00:00:00:00:00:00"),
    vnic(mac_address="02:aa:bb"),
    vnic(mac_address="02:aa-bb:cc:dd:ee"),
    vnic(parent_interface="way-too-long-name0"),
    vnic(parent_interface=".."),
    vnic(parent_interface="eth 0"),
    vnic(network_mode="bridge"),
    vnic(network_mode="manual", ip_address=None),
    vnic(name="x" * 65),
    vnic(name="tab\there"),
    vnic(dns=["192.0.2.53", "dns.example"]),
]

SETS = [
    [vnic(), vnic(name="eth0", parent_interface="oat1")],
    [vnic(mac_address="02:00:00:00:00:01"),
     vnic(name="b", parent_interface="oat1", ip_address="198.51.100.21",
          mac_address="02:00:00:00:00:01")],
    [vnic(), vnic(name="b", parent_interface="oat1")],
    [vnic(), vnic(name="b", ip_address="198.51.100.21")],
]


def both(vnics: list[dict[str, Any]], name: str = "plc-1") -> tuple[Any, Any]:
    """(gateway outcome, executor outcome): the normalised vNICs, or the error text."""
    payload = {"container_name": name, "vnic_configs": vnics, "runtime_version": "latest"}
    try:
        gateway: Any = validate("create_new_runtime", payload).params["vnic_configs"]
    except ContractError as exc:
        gateway = exc.text
    try:
        executor: Any = check_request(payload).vnics
        for item in executor:
            del item["network"]  # the executor's own addition: the network it will use
    except InvalidRequest as exc:
        executor = exc.text
    return gateway, executor


@pytest.mark.parametrize("item", GOOD)
def test_both_accept_alike(item: dict[str, Any]) -> None:
    gateway, executor = both([item])
    assert isinstance(gateway, list), gateway
    assert executor == gateway


@pytest.mark.parametrize("item", BAD)
def test_both_refuse_alike(item: dict[str, Any]) -> None:
    gateway, executor = both([item])
    assert isinstance(gateway, str) and gateway.startswith("Validation error: ")
    assert executor == gateway


@pytest.mark.parametrize("vnics", SETS)
def test_sets_refused_alike(vnics: list[dict[str, Any]]) -> None:
    gateway, executor = both(vnics)
    assert isinstance(gateway, str), gateway
    assert executor == gateway


@pytest.mark.parametrize("name", ["bad name", "__orchestrator__", "-x", "a" * 55])
def test_container_names_refused_alike(name: str) -> None:
    gateway, executor = both([vnic()], name=name)
    assert isinstance(gateway, str)
    assert executor == gateway


def test_mask_must_be_contiguous_on_both_sides() -> None:
    gateway, executor = both([vnic(subnet="0.0.0.255")])
    assert "neither a CIDR subnet nor a dotted netmask" in gateway
    assert executor == gateway


@pytest.mark.parametrize(("item", "expected"), NORMALISED)
def test_current_cloud_forms_normalise_alike(item: dict[str, Any],
                                             expected: dict[str, Any]) -> None:
    gateway, executor = both([item])
    assert isinstance(gateway, list), gateway
    assert executor == gateway
    for key, value in expected.items():
        assert gateway[0][key] == value, (key, gateway[0])
    assert not any(key.startswith("_") for key in gateway[0])


def test_a_prefix_that_disagrees_with_the_subnet_says_so() -> None:
    gateway, executor = both([vnic(ip="198.51.100.20/24", ip_address=None,
                                   subnet="198.51.100.0/25")])
    assert gateway == executor
    assert gateway == ("Validation error: vnic_configs[0].subnet: 198.51.100.0/25 disagrees "
                       "with the prefix length /24 given with ip_address 198.51.100.20")


def test_a_dhcp_mask_without_gateway_says_what_it_needs() -> None:
    gateway, executor = both([vnic(network_mode="dhcp", ip_address=None,
                                   subnet="255.255.255.0", gateway=None)])
    assert gateway == executor
    assert "a dotted netmask needs ip_address or gateway to form a subnet" in gateway
