"""The cloud command contracts: exact error texts, field order, meaning checks, limits."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from services.gateway.acks import validation_ack_for
from services.gateway.contracts import CONTRACTS, TOPICS, Command, ContractError, validate
from services.gateway.schema import TYPE_TEXTS, Kind
from tests.strategies import mutated_payload, valid_payload

MISSING = "Missing required field: 'Missing key: {}'"
NUMBER = "Invalid field type: Value must be a number."
STRING = "Invalid field type: Value must be a string."
NONEMPTY = "Invalid field type: Value must be a non-empty string."
BOOLEAN = "Invalid field type: Value must be a boolean."
LIST = "Invalid field type: Value must be a list."
DATETIME = "Invalid field type: Value must be a valid ISO datetime string."

# --- examples ------------------------------------------------------------------------

README_DHCP = {
    "correlation_id": 12345,
    "action": "create_new_runtime",
    "requested_at": "2025-11-20T20:30:45.123Z",
    "container_name": "plc-001",
    "vnic_configs": [
        {
            "name": "vnic0",
            "parent_interface": "oat0",
            "parent_subnet": "192.0.2.0/24",
            "parent_gateway": "192.0.2.1",
            "network_mode": "dhcp",
        }
    ],
}

README_MANUAL = {
    "correlation_id": 12346,
    "container_name": "plc-002",
    "runtime_version": "v4.0.1",
    "vnic_configs": [
        {
            "name": "vnic0",
            "parent_interface": "oat0",
            "parent_subnet": "192.0.2.0/24",
            "parent_gateway": "192.0.2.1",
            "network_mode": "manual",
            "ip_address": "192.0.2.50",
            "subnet": "255.255.255.0",
            "gateway": "192.0.2.1",
            "dns": ["192.0.2.53", "198.51.100.53"],
            "mac_address": "02:42:C0:00:02:32",
        }
    ],
}

MULTI_VNIC = {
    "correlation_id": 7,
    "container_name": "plc-003",
    "vnic_configs": [
        {"name": "field", "parent_interface": "oat0", "network_mode": "dhcp"},
        {
            "name": "cell",
            "parent_interface": "oat1",
            "network_mode": "manual",
            "ip_address": "198.51.100.20",
            "subnet": "198.51.100.0/24",
            "gateway": "198.51.100.1",
        },
        {
            "name": "office",
            "parent_interface": "oat1",
            "network_mode": "static",
            "ip": "203.0.113.20",
            "subnet": "203.0.113.0/24",
            "gateway": "203.0.113.1",
            "mac": "02-00-CB-00-71-14",
        },
    ],
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "create_new_runtime": README_MANUAL,
    "delete_device": {"correlation_id": 1, "device_id": "plc-001"},
    "start_device": {"correlation_id": 2, "device_id": "plc-001"},
    "stop_device": {"correlation_id": 3, "device_id": "plc-001"},
    "restart_device": {"correlation_id": 4, "device_id": "plc-001"},
    "get_device_status": {"correlation_id": 5, "device_id": "plc-001"},
    "run_command": {
        "correlation_id": 6,
        "device_id": "plc-001",
        "method": "POST",
        "api": "/api/upload-file?overwrite=1",
        "headers": {"Authorization": "Bearer abc"},
        "files": {
            "file": {
                "filename": "program.zip",
                "content_base64": base64.b64encode(b"PK\x03\x04").decode(),
                "content_type": "application/zip",
            }
        },
    },
    "get_consumption_device": {
        "correlation_id": 7,
        "device_id": "plc-001",
        "cpuPeriod": "1h",
        "memoryPeriod": "1760000000,1760003600",
    },
    "get_consumption_orchestrator": {"correlation_id": 8, "cpuPeriod": "2d", "memoryPeriod": "30m"},
    "get_host_interfaces": {"correlation_id": 9, "include_virtual": True, "detailed": False},
    "delete_orchestrator": {"correlation_id": 10, "action": "delete_orchestrator"},
    "get_serial_devices": {"correlation_id": 11},
}


def test_every_topic_has_a_contract_and_an_example() -> None:
    assert set(TOPICS) == set(EXAMPLES)
    assert len(TOPICS) == 12


def test_common_fields_come_first_in_every_contract() -> None:
    for contract in CONTRACTS.values():
        names = [f.name for f in contract.fields[:3]]
        assert names == ["correlation_id", "action", "requested_at"]


def error_of(topic: str, payload: Any) -> ContractError:
    with pytest.raises(ContractError) as info:
        validate(topic, payload)
    return info.value


def test_readme_dhcp_create() -> None:
    cmd = validate("create_new_runtime", README_DHCP)
    assert cmd.topic == "create_new_runtime"
    assert cmd.correlation_id == 12345
    assert cmd.action == "create_new_runtime"
    assert cmd.requested_at == "2025-11-20T20:30:45.123Z"
    assert cmd.params == {
        "container_name": "plc-001",
        "vnic_configs": [
            {
                "name": "vnic0",
                "parent_interface": "oat0",
                "network_mode": "dhcp",
                "parent_subnet": "192.0.2.0/24",
                "parent_gateway": "192.0.2.1",
                "ip_address": None,
                "subnet": None,
                "gateway": None,
                "dns": [],
                "mac_address": None,
            }
        ],
        "runtime_version": "latest",
        "serial_configs": [],
    }


def test_readme_manual_create_combines_mask_with_ip() -> None:
    vnic = validate("create_new_runtime", README_MANUAL).params["vnic_configs"][0]
    assert vnic == {
        "name": "vnic0",
        "parent_interface": "oat0",
        "network_mode": "manual",
        "parent_subnet": "192.0.2.0/24",
        "parent_gateway": "192.0.2.1",
        "ip_address": "192.0.2.50",
        "subnet": "192.0.2.0/24",
        "gateway": "192.0.2.1",
        "dns": ["192.0.2.53", "198.51.100.53"],
        "mac_address": "02:42:c0:00:02:32",
    }


def test_multi_vnic_create_with_current_cloud_aliases() -> None:
    params = validate("create_new_runtime", MULTI_VNIC).params
    field, cell, office = params["vnic_configs"]
    assert field["parent_subnet"] is None and field["network_mode"] == "dhcp"
    # subnet + gateway alone also describe the parent network
    assert cell["parent_subnet"] == "198.51.100.0/24"
    assert cell["parent_gateway"] == "198.51.100.1"
    assert office["network_mode"] == "manual"
    assert office["ip_address"] == "203.0.113.20"
    assert office["mac_address"] == "02:00:cb:00:71:14"
    assert office["parent_subnet"] == "203.0.113.0/24"
    assert "ip" not in office and "mac" not in office


@pytest.mark.parametrize("topic", sorted(EXAMPLES))
def test_protocol_examples_validate(topic: str) -> None:
    cmd = validate(topic, EXAMPLES[topic])
    assert isinstance(cmd, Command)
    assert cmd.correlation_id == EXAMPLES[topic]["correlation_id"]
    assert set(cmd.params) == {f.name for f in CONTRACTS[topic].fields[3:]}
    json.dumps(cmd.params, allow_nan=False)


def test_device_topics_normalise_to_device_id() -> None:
    for topic in ("delete_device", "start_device", "stop_device", "restart_device"):
        assert validate(topic, EXAMPLES[topic]).params == {"device_id": "plc-001"}


def test_run_command_defaults_and_normalisation() -> None:
    cmd = validate(
        "run_command", {"device_id": "plc-001", "method": "get", "api": "api/status?x=1"}
    )
    assert cmd.correlation_id is None
    assert cmd.params == {
        "device_id": "plc-001",
        "method": "GET",
        "api": "/api/status?x=1",
        "port": 8443,
        "headers": {},
        "params": {},
        "data": None,
        "files": {},
    }


def test_run_command_example_keeps_files_and_fills_content_type() -> None:
    payload = dict(EXAMPLES["run_command"])
    payload["files"] = {"file": {"filename": "a.st", "content_base64": "aGVsbG8="}}
    files = validate("run_command", payload).params["files"]
    assert files == {
        "file": {
            "filename": "a.st",
            "content_base64": "aGVsbG8=",
            "content_type": "application/octet-stream",
        }
    }


def test_consumption_periods_are_required_as_the_original_has_them() -> None:
    for topic, base in (("get_consumption_orchestrator", {}),
                        ("get_consumption_device", {"device_id": "plc-1"})):
        assert error_of(topic, {**base, "memoryPeriod": "1h"}).text == MISSING.format(
            "cpuPeriod")
        assert error_of(topic, {**base, "cpuPeriod": "1h"}).text == MISSING.format(
            "memoryPeriod")
        params = validate(topic, {**base, "cpuPeriod": "2h", "memoryPeriod": "x"}).params
        assert params == {**base, "cpuPeriod": "2h", "memoryPeriod": "x"}


def test_host_interfaces_defaults() -> None:
    params = validate("get_host_interfaces", {}).params
    assert params == {"include_virtual": False, "detailed": True}  # as the original


def test_delete_orchestrator_has_no_params() -> None:
    cmd = validate("delete_orchestrator", {"correlation_id": 3.5})
    assert cmd.params == {} and cmd.correlation_id == 3.5


def test_unknown_fields_are_ignored_and_not_forwarded() -> None:
    cmd = validate("stop_device", {"device_id": "plc-1", "force": True, "extra": {"a": [1]}})
    assert cmd.params == {"device_id": "plc-1"}


def test_null_optional_fields_count_as_absent() -> None:
    cmd = validate("run_command", {"device_id": "p", "method": "GET", "api": "/", "port": None})
    assert cmd.params["port"] == 8443
    assert (
        validate("start_device", {"device_id": "p", "correlation_id": None}).correlation_id is None
    )


def test_command_is_frozen() -> None:
    cmd = validate("start_device", {"device_id": "plc-1"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cmd.topic = "stop_device"  # type: ignore[misc]


def test_commands_do_not_share_default_containers() -> None:
    a = validate("run_command", {"device_id": "p", "method": "GET", "api": "/"})
    b = validate("run_command", {"device_id": "p", "method": "GET", "api": "/"})
    a.params["headers"]["X"] = "1"
    assert b.params["headers"] == {}


# --- missing fields and wrong types ---------------------------------------------------


def _required(topic: str) -> list[str]:
    return [f.name for f in CONTRACTS[topic].fields if f.required]


@pytest.mark.parametrize(
    ("topic", "name"), [(t, n) for t in sorted(EXAMPLES) for n in _required(t)]
)
def test_each_required_field_missing(topic: str, name: str) -> None:
    payload = dict(EXAMPLES[topic])
    del payload[name]
    err = error_of(topic, payload)
    assert err.text == MISSING.format(name)
    assert err.field == name


@pytest.mark.parametrize(
    ("topic", "name"), [(t, n) for t in sorted(EXAMPLES) for n in _required(t)]
)
def test_required_field_null_is_a_type_error(topic: str, name: str) -> None:
    payload = dict(EXAMPLES[topic])
    payload[name] = None
    kind = next(f.kind for f in CONTRACTS[topic].fields if f.name == name)
    # null is not a string: "a string.", as the original says; "non-empty" is for blanks.
    expected = TYPE_TEXTS[Kind.STRING if kind is Kind.NONEMPTY_STRING else kind]
    assert error_of(topic, payload).text == expected


WRONG: dict[Kind, tuple[Any, str]] = {
    Kind.NUMBER: ("12", NUMBER),
    Kind.STRING: (12, STRING),
    Kind.NONEMPTY_STRING: (12, STRING),  # a non-string; blank strings: test below
    Kind.BOOLEAN: ("true", BOOLEAN),
    Kind.LIST: ({"a": 1}, LIST),
    Kind.DATETIME: ("not a date", DATETIME),
}


def _typed_fields() -> list[tuple[str, str, Kind]]:
    return [
        (topic, f.name, f.kind)
        for topic in sorted(CONTRACTS)
        for f in CONTRACTS[topic].fields
        if f.kind in TYPE_TEXTS
    ]


@pytest.mark.parametrize(("topic", "name", "kind"), _typed_fields())
def test_each_wrong_type(topic: str, name: str, kind: Kind) -> None:
    value, text = WRONG[kind]
    payload = dict(EXAMPLES[topic])
    payload[name] = value
    err = error_of(topic, payload)
    assert err.text == text
    assert err.field == name


@pytest.mark.parametrize("field", ["correlation_id", "port"])
def test_booleans_are_not_numbers(field: str) -> None:
    payload = {"device_id": "p", "method": "GET", "api": "/", field: True}
    assert error_of("run_command", payload).text == NUMBER


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_device_id_is_a_type_error(value: str) -> None:
    assert error_of("start_device", {"device_id": value}).text == NONEMPTY


@pytest.mark.parametrize(
    "value", ["2025-11-20T20:30:45Z", "2025-11-20T20:30:45.123456", "2025-11-20T20:30:45+02:00"]
)
def test_requested_at_accepts_iso_forms(value: str) -> None:
    assert validate("delete_orchestrator", {"requested_at": value}).requested_at == value


@pytest.mark.parametrize("value", ["yesterday", "2025-13-01T00:00:00", 1760000000, "", "1" * 500])
def test_requested_at_rejects_the_rest(value: Any) -> None:
    assert error_of("delete_orchestrator", {"requested_at": value}).text == DATETIME


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("name", 5, STRING),
        ("parent_interface", "", NONEMPTY),
        ("network_mode", 1, STRING),
        ("parent_subnet", 24, STRING),
        ("ip_address", 3232235777, STRING),
        ("ip", ["192.0.2.1"], STRING),
        ("subnet", 24, STRING),
        ("gateway", False, STRING),
        ("dns", "192.0.2.53", LIST),
        ("mac_address", 0x020000000001, STRING),
    ],
)
def test_vnic_wrong_types(name: str, value: Any, text: str) -> None:
    vnic = {"name": "v", "parent_interface": "oat0", "network_mode": "dhcp", name: value}
    err = error_of("create_new_runtime", {"container_name": "p", "vnic_configs": [vnic]})
    assert err.text == text
    assert err.field is not None and err.field.startswith("vnic_configs[0].")


@pytest.mark.parametrize("name", ["name", "parent_interface", "network_mode"])
def test_vnic_required_fields_missing(name: str) -> None:
    vnic = {"name": "v", "parent_interface": "oat0", "network_mode": "dhcp"}
    del vnic[name]
    err = error_of("create_new_runtime", {"container_name": "p", "vnic_configs": [vnic]})
    assert err.text == MISSING.format(name)
    assert err.field == f"vnic_configs[0].{name}"


def test_dns_item_type_names_the_item() -> None:
    vnic = {"name": "v", "parent_interface": "oat0", "network_mode": "dhcp", "dns": ["1.1.1.1", 8]}
    err = error_of("create_new_runtime", {"container_name": "p", "vnic_configs": [vnic]})
    assert err.text == STRING
    assert err.field == "vnic_configs[0].dns[1]"


# --- non-object payloads --------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        ("plc-001", "a string"),
        (["plc-001"], "a list"),
        (None, "null"),
        (42, "a number"),
        (4.2, "a number"),
        (True, "a boolean"),
    ],
)
@pytest.mark.parametrize(
    "topic", ["create_new_runtime", "get_device_status", "delete_orchestrator"]
)
def test_non_object_payloads(topic: str, payload: Any, what: str) -> None:
    err = error_of(topic, payload)
    assert err.text == f"Validation error: payload must be a JSON object, not {what}"
    assert err.field is None


def test_unknown_topic_is_a_contract_error() -> None:
    assert error_of("format_disk", {}).text.startswith("Validation error: unknown command")


# --- first failure in field order ------------------------------------------------------


def test_common_fields_fail_before_topic_fields() -> None:
    err = error_of("start_device", {"correlation_id": "x"})
    assert err.text == NUMBER and err.field == "correlation_id"


def test_earlier_field_wins() -> None:
    err = error_of("create_new_runtime", {"container_name": "bad name!", "runtime_version": 4})
    assert err.field == "container_name"
    err = error_of("create_new_runtime", {"container_name": "ok", "runtime_version": 4})
    assert err.text == MISSING.format("vnic_configs")
    err = error_of(
        "run_command", {"device_id": "p", "method": 1, "api": 2, "port": "x", "headers": []}
    )
    assert err.text == STRING and err.field == "method"


def test_earlier_vnic_wins_and_earlier_key_within_it() -> None:
    bad_mac = {
        "name": "a",
        "parent_interface": "oat0",
        "network_mode": "dhcp",
        "mac": "01:00:5e:00:00:01",
    }
    no_name = {"parent_interface": "oat1", "network_mode": "bogus", "mac": "zz"}
    err = error_of(
        "create_new_runtime", {"container_name": "p", "vnic_configs": [no_name, bad_mac]}
    )
    assert err.text == MISSING.format("name") and err.field == "vnic_configs[0].name"
    err = error_of(
        "create_new_runtime", {"container_name": "p", "vnic_configs": [bad_mac, no_name]}
    )
    assert err.field == "vnic_configs[0].mac_address"


def test_vnic_checks_run_before_later_top_level_fields() -> None:
    payload = {"container_name": "p", "vnic_configs": [], "runtime_version": "bad tag"}
    err = error_of("create_new_runtime", payload)
    assert err.text == "Validation error: vnic_configs: At least one vNIC configuration is required"


# --- meaning checks ----------------------------------------------------------------------


def create(*vnics: dict[str, Any], name: str = "plc-1", **extra: Any) -> Command:
    return validate(
        "create_new_runtime", {"container_name": name, "vnic_configs": list(vnics), **extra}
    )


def create_error(*vnics: dict[str, Any], name: str = "plc-1", **extra: Any) -> ContractError:
    return error_of(
        "create_new_runtime", {"container_name": name, "vnic_configs": list(vnics), **extra}
    )


def dhcp(**kw: Any) -> dict[str, Any]:
    return {"name": "v0", "parent_interface": "oat0", "network_mode": "dhcp", **kw}


def manual(ip: str = "192.0.2.10", **kw: Any) -> dict[str, Any]:
    base = {"name": "v0", "parent_interface": "oat0", "network_mode": "manual", "ip_address": ip}
    return {**base, **kw}


@pytest.mark.parametrize("name", ["plc", "PLC_1", "a.b-c", "0", "x" * 54])
def test_container_names_accepted(name: str) -> None:
    assert create(dhcp(), name=name).params["container_name"] == name


@pytest.mark.parametrize(
    "name", ["-plc", "_plc", ".plc", "plc 1", "plc/1", "plé", "x" * 55, "plc\n"]
)
def test_container_names_rejected(name: str) -> None:
    err = create_error(dhcp(), name=name)
    assert err.text.startswith("Validation error: container_name: ")
    assert err.field == "container_name"


def test_existing_device_names_follow_dockers_rule_only() -> None:
    assert validate("start_device", {"device_id": "x" * 200}).params["device_id"] == "x" * 200
    err = error_of("start_device", {"device_id": "x" * 256})
    assert err.text.startswith("Validation error: device_id: ")
    err = error_of("delete_device", {"device_id": "../etc"})
    assert err.text.startswith("Validation error: device_id: ")


def test_orchestrator_pseudo_device_only_for_status() -> None:
    cmd = validate("get_device_status", {"device_id": "__orchestrator__"})
    assert cmd.params == {"device_id": "__orchestrator__"}
    for topic in ("delete_device", "stop_device", "run_command", "get_consumption_device"):
        payload = {**EXAMPLES[topic], "device_id": "__orchestrator__"}
        assert error_of(topic, payload).text.startswith("Validation error: device_id: ")


@pytest.mark.parametrize("ifname", ["oat0", "eth0.100", "enp0s31f6", "a", "x" * 15, "br_lan-1"])
def test_interface_names_accepted(ifname: str) -> None:
    assert (
        create(dhcp(parent_interface=ifname)).params["vnic_configs"][0]["parent_interface"]
        == ifname
    )


@pytest.mark.parametrize("ifname", ["x" * 16, "eth 0", "eth0:1", "eth/0", ".", "..", "éth0"])
def test_interface_names_rejected(ifname: str) -> None:
    err = create_error(dhcp(parent_interface=ifname))
    assert err.field == "vnic_configs[0].parent_interface"
    assert err.text.startswith("Validation error: vnic_configs[0].parent_interface: ")


@pytest.mark.parametrize(
    "ip",
    [
        "192.0.2.256",
        "192.0.2",
        "192.0.2.010",
        "::1",
        "host",
        "0.0.0.0",
        "127.0.0.1",
        "224.0.0.1",
        "255.255.255.255",
    ],
)
def test_bad_ip_addresses(ip: str) -> None:
    err = create_error(manual(ip))
    assert err.field == "vnic_configs[0].ip_address"
    assert err.text.startswith("Validation error: vnic_configs[0].ip_address: ")


@pytest.mark.parametrize(
    ("ip", "subnet"),
    [
        ("198.51.100.10", "192.0.2.0/24"),
        ("192.0.2.0", "192.0.2.0/24"),
        ("192.0.2.255", "255.255.255.0"),
    ],
)
def test_ip_must_be_a_host_inside_its_subnet(ip: str, subnet: str) -> None:
    err = create_error(manual(ip, subnet=subnet))
    assert err.field == "vnic_configs[0].subnet"


def test_ip_must_be_inside_parent_subnet() -> None:
    err = create_error(manual("198.51.100.10", parent_subnet="192.0.2.0/24"))
    assert err.field == "vnic_configs[0].ip_address"
    assert "outside parent_subnet 192.0.2.0/24" in err.text


def test_gateway_checks() -> None:
    err = create_error(manual(subnet="192.0.2.0/24", gateway="198.51.100.1"))
    assert err.field == "vnic_configs[0].gateway"
    err = create_error(manual(subnet="192.0.2.0/24", gateway="192.0.2.10"))
    assert "also the vNIC's ip_address" in err.text
    err = create_error(dhcp(parent_subnet="192.0.2.0/24", parent_gateway="192.0.2.255"))
    assert err.field == "vnic_configs[0].parent_gateway"


@pytest.mark.parametrize(
    ("subnet", "expected"),
    [
        ("255.255.255.0", "192.0.2.0/24"),
        ("255.255.255.128", "192.0.2.0/25"),
        ("192.0.2.0/24", "192.0.2.0/24"),
        ("192.0.2.77/24", "192.0.2.0/24"),
        ("192.0.2.0/255.255.255.0", "192.0.2.0/24"),
        (" 255.255.0.0 ", "192.0.0.0/16"),
    ],
)
def test_subnet_forms(subnet: str, expected: str) -> None:
    vnic = create(manual(subnet=subnet)).params["vnic_configs"][0]
    assert vnic["subnet"] == expected
    assert vnic["parent_subnet"] == expected


@pytest.mark.parametrize(
    "subnet",
    [
        "255.0.255.0",
        "0.0.0.0",
        "192.0.2.0",
        "192.0.2.0/31",
        "192.0.2.0/33",
        "10.0.0.0/0",
        "/24",
        "24",
    ],
)
def test_bad_subnets(subnet: str) -> None:
    assert create_error(manual(subnet=subnet)).field == "vnic_configs[0].subnet"


def test_mask_without_ip_cannot_form_a_subnet() -> None:
    err = create_error(dhcp(subnet="255.255.255.0"))
    assert "needs ip_address" in err.text


def test_parent_subnet_must_be_cidr() -> None:
    assert (
        create_error(dhcp(parent_subnet="255.255.255.0")).field == "vnic_configs[0].parent_subnet"
    )


def test_dns_must_be_ipv4() -> None:
    err = create_error(dhcp(dns=["192.0.2.53", "dns.example"]))
    assert err.field == "vnic_configs[0].dns[1]"
    assert create(dhcp(dns=[" 192.0.2.53"])).params["vnic_configs"][0]["dns"] == ["192.0.2.53"]
    err = create_error(dhcp(dns=["192.0.2.53"] * 9))
    assert err.text == "Validation error: vnic_configs[0].dns: has more than 8 entries"


@pytest.mark.parametrize(
    ("mac", "expected"),
    [
        ("02:42:AC:11:00:02", "02:42:ac:11:00:02"),
        ("02-42-ac-11-00-02", "02:42:ac:11:00:02"),
        ("00:1b:21:3a:4f:5e", "00:1b:21:3a:4f:5e"),
    ],
)
def test_mac_normalised(mac: str, expected: str) -> None:
    assert create(dhcp(mac_address=mac)).params["vnic_configs"][0]["mac_address"] == expected


@pytest.mark.parametrize(
    "mac",
    [
        "01:00:5e:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "00:00:00:00:00:00",
        "02:42:ac:11:00",
        "02:42-ac:11:00:02",
        "0242ac110002",
        "zz:42:ac:11:00:02",
    ],
)
def test_mac_rejected(mac: str) -> None:
    err = create_error(dhcp(mac=mac))
    assert err.field == "vnic_configs[0].mac_address"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("dhcp", "dhcp"),
        ("DHCP", "dhcp"),
        ("manual", "manual"),
        ("static", "manual"),
        ("Static", "manual"),
    ],
)
def test_network_modes(mode: str, expected: str) -> None:
    vnic = manual(network_mode=mode)
    assert create(vnic).params["vnic_configs"][0]["network_mode"] == expected


def test_bad_network_mode() -> None:
    err = create_error(dhcp(network_mode="bridge"))
    assert err.field == "vnic_configs[0].network_mode"


@pytest.mark.parametrize("mode", ["manual", "static"])
def test_manual_needs_an_ip(mode: str) -> None:
    err = create_error(dhcp(network_mode=mode, subnet="192.0.2.0/24"))
    assert (
        err.text
        == "Validation error: vnic_configs[0].ip_address: network_mode 'manual' needs an ip_address"
    )


def test_alias_and_field_must_agree() -> None:
    same = {**manual("192.0.2.10"), "ip": "192.0.2.10"}
    assert create(same).params["vnic_configs"][0]["ip_address"] == "192.0.2.10"
    err = create_error({**manual("192.0.2.10"), "ip": "192.0.2.11"})
    assert err.text == "Validation error: vnic_configs[0].ip_address: ip_address and ip disagree"


def test_explicit_parent_network_is_kept() -> None:
    vnic = create(
        manual(
            parent_subnet="192.0.2.0/24",
            parent_gateway="192.0.2.254",
            subnet="192.0.2.0/24",
            gateway="192.0.2.1",
        )
    ).params["vnic_configs"][0]
    assert vnic["parent_gateway"] == "192.0.2.254"


def test_no_duplicate_vnic_names() -> None:
    err = create_error(dhcp(), dhcp(parent_interface="oat1"))
    assert err.field == "vnic_configs[1].name"


def test_no_duplicate_macs() -> None:
    a = dhcp(mac="02:00:00:00:00:01")
    b = dhcp(name="v1", parent_interface="oat1", mac_address="02-00-00-00-00-01")
    assert create_error(a, b).field == "vnic_configs[1].mac_address"


def test_no_duplicate_ips() -> None:
    a = manual("192.0.2.10", parent_interface="oat0")
    b = manual("192.0.2.10", name="v1", parent_interface="oat1")
    assert create_error(a, b).field == "vnic_configs[1].ip_address"


def test_no_two_vnics_on_one_macvlan_network() -> None:
    a = manual("192.0.2.10", subnet="192.0.2.0/24")
    b = manual("192.0.2.11", name="v1", subnet="255.255.255.0")
    err = create_error(a, b)
    assert err.field == "vnic_configs[1].parent_interface"
    # both left to detection on one parent would land on the same network too
    assert create_error(dhcp(), dhcp(name="v1")).field == "vnic_configs[1].parent_interface"


def test_one_parent_two_subnets_is_fine() -> None:
    a = manual("192.0.2.10", subnet="192.0.2.0/24")
    b = manual("198.51.100.10", name="v1", subnet="198.51.100.0/24")
    assert len(create(a, b).params["vnic_configs"]) == 2


def test_vnic_items_must_be_objects() -> None:
    err = create_error("oat0")  # type: ignore[arg-type]
    assert err.text == "Validation error: vnic_configs[0]: must be an object"


def test_vnic_name_is_trimmed_and_printable() -> None:
    assert create(dhcp(name=" lan ")).params["vnic_configs"][0]["name"] == "lan"
    assert create_error(dhcp(name="a\tb")).field == "vnic_configs[0].name"


@pytest.mark.parametrize(
    ("tag", "expected"), [(None, "latest"), ("", "latest"), ("v4.0.1", "v4.0.1"), ("_x", "_x")]
)
def test_runtime_version(tag: str | None, expected: str) -> None:
    extra = {} if tag is None else {"runtime_version": tag}
    assert create(dhcp(), **extra).params["runtime_version"] == expected


@pytest.mark.parametrize("tag", ["-x", ".x", "a:b", "a/b", "x" * 129, "v 1"])
def test_bad_runtime_version(tag: str) -> None:
    assert create_error(dhcp(), runtime_version=tag).field == "runtime_version"


# --- run_command -----------------------------------------------------------------------


def run(**kw: Any) -> Command:
    return validate(
        "run_command", {"device_id": "plc-1", "method": "GET", "api": "/api/ping", **kw}
    )


def run_error(**kw: Any) -> ContractError:
    return error_of(
        "run_command", {"device_id": "plc-1", "method": "GET", "api": "/api/ping", **kw}
    )


@pytest.mark.parametrize("method", ["PATCH", "TRACE", "whatever"])
def test_unsupported_method_is_left_to_the_executor(method: str) -> None:
    assert run(method=method).params["method"] == method.upper()


@pytest.mark.parametrize(
    ("api", "expected"),
    [
        ("/api/ping", "/api/ping"),
        ("api/ping", "/api/ping"),
        ("/api/logs?level=info&from=a:b", "/api/logs?level=info&from=a:b"),
        ("", "/"),
        ("/api/x..y", "/api/x..y"),
        ("@evil.example/x", "/@evil.example/x"),
    ],
)
def test_api_paths_accepted(api: str, expected: str) -> None:
    assert run(api=api).params["api"] == expected


@pytest.mark.parametrize(
    "api",
    [
        "https://203.0.113.5/api",
        "http:/x",
        "//203.0.113.5/api",
        "/api/../../etc/passwd",
        "..",
        "/api/%2e%2e/secret",
        "/api/.%2E/x",
        "/api%2f..%2fx",
        "/api/ping\r\nHost: evil",
        "/api/\x00",
        "\\\\host\\share",
        "file:///etc/passwd",
    ],
)
def test_api_paths_rejected(api: str) -> None:
    err = run_error(api=api)
    assert err.field == "api" and err.text.startswith("Validation error: api: ")


@pytest.mark.parametrize(("port", "expected"), [(1, 1), (65535, 65535), (8080.0, 8080)])
def test_ports_accepted(port: Any, expected: int) -> None:
    assert run(port=port).params["port"] == expected


@pytest.mark.parametrize("port", [0, 65536, -1, 80.5, 10**30])
def test_ports_rejected(port: Any) -> None:
    assert run_error(port=port).text.startswith("Validation error: port: ")


def test_headers() -> None:
    assert run(headers={"Content-Type": "application/json", "X-N": 3}).params["headers"] == {
        "Content-Type": "application/json",
        "X-N": "3",
    }
    assert run_error(headers=[]).text == "Validation error: headers: must be an object"
    assert run_error(headers={"X": "a\r\nb"}).field == "headers"
    assert run_error(headers={"Bad Name": "a"}).field == "headers"
    assert run_error(headers={"X": ["a"]}).field == "headers"
    assert run_error(headers={f"X-{i}": "v" for i in range(65)}).field == "headers"


def test_query_params() -> None:
    assert run(params={"a": "1", "b": [1, 2], "c": None}).params["params"] == {
        "a": "1",
        "b": [1, 2],
        "c": None,
    }
    assert run_error(params="a=1").field == "params"
    assert run_error(params={"a": {"nested": 1}}).field == "params"


def test_data_any_json_but_bounded() -> None:
    body = {"a": [1, 2.5, None, True, "x"], "b": {"c": {}}}
    assert run(data=body).params["data"] == body
    assert run(data="raw text").params["data"] == "raw text"
    assert run_error(data=float("nan")).field == "data"
    assert run_error(data=2**64).field == "data"


def test_files_checked() -> None:
    good = {"filename": "p.zip", "content_base64": "UEsDBA==", "content_type": "application/zip"}
    assert run(files={"file": good}).params["files"]["file"] == good
    for broken in (
        {"filename": "p.zip", "content_base64": "not base64!"},
        {"filename": "p.zip", "content_base64": "UEsDBA="},
        {"content_base64": "UEsDBA=="},
        {"filename": "", "content_base64": "UEsDBA=="},
        {"filename": "p.zip", "content_base64": 5},
        {"filename": "p.zip", "content_base64": "UEsDBA==", "content_type": 5},
        "UEsDBA==",
    ):
        assert run_error(files={"file": broken}).field == "files", broken


# --- huge payloads: rejected by size before anything iterates over them ---------------


def test_huge_vnic_list_rejected_by_length() -> None:
    err = create_error(*(["not an object"] * 1_000_000))  # type: ignore[arg-type]
    assert err.text == "Validation error: vnic_configs: has more than 16 entries"


def test_huge_strings_rejected_by_length() -> None:
    err = create_error(dhcp(), name="p" * 10_000_000)
    assert err.text == "Validation error: container_name: has more than 256 characters"
    err = run_error(api="/" + "a" * 5000)
    assert err.text == "Validation error: api: has more than 4096 characters"
    err = run_error(method="G" * 1_000_000)
    assert err.field == "method"


def test_huge_objects_rejected_by_entry_count() -> None:
    err = run_error(headers={str(i): "v" for i in range(100_000)})
    assert err.text == "Validation error: headers: has more than 64 entries"


def test_deep_data_rejected_without_recursion() -> None:
    deep: Any = 0
    for _ in range(200_000):
        deep = [deep]
    err = run_error(data=deep)
    assert err.text == "Validation error: data: is nested deeper than 32 levels"


def test_wide_data_rejected_by_node_count() -> None:
    err = run_error(data=[0] * 200_000)
    assert err.text == "Validation error: data: has more than 100000 values"


def test_huge_unknown_fields_cost_nothing() -> None:
    cmd = validate("start_device", {"device_id": "p", "junk": [0] * 1_000_000})
    assert cmd.params == {"device_id": "p"}


@pytest.mark.parametrize("cid", [2**64, -(2**63) - 1, math.inf, math.nan])
def test_correlation_id_must_fit_the_bus(cid: Any) -> None:
    err = error_of("delete_orchestrator", {"correlation_id": cid})
    assert err.field == "correlation_id" and err.text.startswith("Validation error: ")


# --- properties ---------------------------------------------------------------------------

PREFIXES = ("Missing required field: ", "Invalid field type: ", "Validation error: ")
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("topic", TOPICS)
def test_valid_payloads_always_validate(topic: str) -> None:
    @FUZZ
    @given(valid_payload(topic))
    def check(payload: dict[str, Any]) -> None:
        cmd = validate(topic, payload)
        assert cmd.topic == topic
        json.dumps(cmd.params, allow_nan=False)

    check()


@pytest.mark.parametrize("topic", TOPICS)
def test_mutated_payloads_yield_a_command_or_a_contract_error(topic: str) -> None:
    @FUZZ
    @given(mutated_payload(topic))
    def check(payload: Any) -> None:
        try:
            cmd = validate(topic, payload)
        except ContractError as exc:
            assert exc.text.startswith(PREFIXES)
            assert exc.field is None or isinstance(exc.field, str)
            # the ack itself must always be sendable
            ack = validation_ack_for(topic, payload, exc)
            assert list(ack)[:2] == ["action", "correlation_id"]
            json.dumps(ack, allow_nan=False)
        else:
            # whatever passes is safe to put on the bus and in a JSON body
            json.dumps(cmd.params, allow_nan=False)

    check()


@pytest.mark.parametrize("field", ["headers", "params", "files"])
def test_non_string_keys_are_contract_errors(field: str) -> None:
    # JSON cannot carry them, but a payload decoded from another encoding could.
    assert run_error(**{field: {1: "x"}}).field == field
