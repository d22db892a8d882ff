"""Ack builders: key order, correlation id echo, error shapes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from services.gateway.acks import error_ack, validation_ack, validation_ack_for, wrap_reply
from services.gateway.contracts import ContractError, echo_correlation_id, validate


def test_wrap_reply_puts_action_and_correlation_id_first() -> None:
    reply = {
        "status": "creating",
        "container_id": "plc-001",
        "action": "wrong",
        "correlation_id": 9,
    }
    ack = wrap_reply("create_new_runtime", 12345, reply)
    assert list(ack) == ["action", "correlation_id", "status", "container_id"]
    assert ack["action"] == "create_new_runtime"
    assert ack["correlation_id"] == 12345


def test_wrap_reply_does_not_touch_the_reply() -> None:
    reply = {"status": "success"}
    wrap_reply("get_host_interfaces", 1, reply)
    assert reply == {"status": "success"}


@pytest.mark.parametrize("cid", [math.nan, math.inf, -math.inf, "x" * 2000, [math.nan]])
def test_correlation_ids_the_cloud_cannot_read_back_become_null(cid: Any) -> None:
    ack = wrap_reply("stop_device", cid, {})
    assert ack["correlation_id"] is None
    json.dumps(ack, allow_nan=False)


@pytest.mark.parametrize("cid", [0, 12345, -3, 1.5, 2**63, None, "12", True, 2**64, [1],
                                 {"a": 1}])
def test_usable_correlation_ids_are_echoed(cid: Any) -> None:
    assert wrap_reply("stop_device", cid, {})["correlation_id"] == cid


def test_error_ack_shape() -> None:
    ack = error_ack(
        "delete_device", 5, "Container plc-001 already has a delete operation in progress"
    )
    assert ack == {
        "action": "delete_device",
        "correlation_id": 5,
        "status": "error",
        "error": "Container plc-001 already has a delete operation in progress",
    }
    ack = error_ack("start_device", 6, "boom", field="device_id", success=False, device_id="x")
    assert list(ack) == [
        "action",
        "correlation_id",
        "status",
        "error",
        "field",
        "success",
        "device_id",
    ]


def test_validation_ack_carries_the_exact_text_and_field() -> None:
    payload = {"correlation_id": 77, "device_id": 5}
    with pytest.raises(ContractError) as info:
        validate("start_device", payload)
    ack = validation_ack("start_device", 77, info.value)
    assert ack == {
        "action": "start_device",
        "correlation_id": 77,
        "status": "error",
        "error": "Invalid field type: Value must be a string.",
        "field": "device_id",
    }
    assert validation_ack_for("start_device", payload, info.value) == ack


def test_validation_ack_for_a_non_object_payload() -> None:
    with pytest.raises(ContractError) as info:
        validate("get_device_status", "plc-001")
    ack = validation_ack_for("get_device_status", "plc-001", info.value)
    assert ack == {
        "action": "get_device_status",
        "correlation_id": None,
        "status": "error",
        "error": "Validation error: payload must be a JSON object, not a string",
    }


def test_validation_ack_for_a_bad_correlation_id_echoes_it_raw() -> None:
    payload = {"correlation_id": "abc", "device_id": "plc-1"}
    with pytest.raises(ContractError) as info:
        validate("start_device", payload)
    ack = validation_ack_for("start_device", payload, info.value)
    assert ack["correlation_id"] == "abc"
    assert ack["error"] == "Invalid field type: Value must be a number."


@pytest.mark.parametrize(
    ("payload", "expected"),
    [({"correlation_id": 3}, 3), ({"correlation_id": False}, False), ({}, None), ([3], None)],
)
def test_echo_correlation_id(payload: Any, expected: Any) -> None:
    assert echo_correlation_id(payload) == expected
