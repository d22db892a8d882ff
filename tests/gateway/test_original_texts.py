"""Every text and shape the cloud can see where the original agent's behaviour is
matched (PROTOCOL.md, "Compatibility details"), as one table against the contracts, plus
the heartbeat's keys and figures."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import psutil
import pytest

from common.messages import HostMetrics
from services.gateway.acks import validation_ack_for
from services.gateway.contracts import ContractError, validate
from services.gateway.heartbeat import Heartbeat
from services.gateway.peers import PeerWatch

NUMBER = "Invalid field type: Value must be a number."
STRING = "Invalid field type: Value must be a string."
NONEMPTY = "Invalid field type: Value must be a non-empty string."


def missing(name: str) -> str:
    return f"Missing required field: 'Missing key: {name}'"


PERIODS = {"cpuPeriod": "1h", "memoryPeriod": "1h"}

# (topic, payload, correlation_id echoed in the ack, error text)
TABLE: list[tuple[str, Any, Any, str]] = [
    # a non-string where a string is required: "a string."; blank strings: "non-empty".
    ("start_device", {"device_id": 5, "correlation_id": 1}, 1, STRING),
    ("stop_device", {"device_id": None, "correlation_id": 2}, 2, STRING),
    ("delete_device", {"device_id": ["plc"], "correlation_id": 3}, 3, STRING),
    ("restart_device", {"device_id": {"a": 1}, "correlation_id": 4}, 4, STRING),
    ("get_device_status", {"device_id": True, "correlation_id": 5}, 5, STRING),
    ("run_command", {"device_id": 7, "method": "GET", "api": "/", "correlation_id": 6}, 6,
     STRING),
    ("run_command", {"device_id": "p", "method": 1, "api": "/", "correlation_id": 7}, 7,
     STRING),
    ("get_consumption_device", {"device_id": 1.5, **PERIODS}, None, STRING),
    ("create_new_runtime", {"container_name": 12, "vnic_configs": []}, None, STRING),
    ("start_device", {"device_id": ""}, None, NONEMPTY),
    ("start_device", {"device_id": "   "}, None, NONEMPTY),
    ("create_new_runtime", {"container_name": "", "vnic_configs": []}, None, NONEMPTY),
    ("get_consumption_orchestrator", {"cpuPeriod": 1, "memoryPeriod": "1h"}, None, STRING),
    # an invalid correlation_id is echoed back as received, and the ack still goes out.
    ("start_device", {"device_id": "p", "correlation_id": "abc"}, "abc", NUMBER),
    ("start_device", {"device_id": "p", "correlation_id": True}, True, NUMBER),
    ("start_device", {"device_id": "p", "correlation_id": [1, 2]}, [1, 2], NUMBER),
    ("start_device", {"device_id": "p", "correlation_id": {"n": 1}}, {"n": 1}, NUMBER),
    ("get_device_status", {"device_id": "p", "correlation_id": "7"}, "7", NUMBER),
    ("delete_orchestrator", {"correlation_id": "x-1"}, "x-1", NUMBER),
    # cpuPeriod and memoryPeriod are required on both consumption topics.
    ("get_consumption_orchestrator", {"correlation_id": 8}, 8, missing("cpuPeriod")),
    ("get_consumption_orchestrator", {"cpuPeriod": "1h", "correlation_id": 9}, 9,
     missing("memoryPeriod")),
    ("get_consumption_device", {"device_id": "p", "memoryPeriod": "1h", "correlation_id": 10},
     10, missing("cpuPeriod")),
    ("get_consumption_device", {"device_id": "p", "cpuPeriod": "1h", "correlation_id": 11},
     11, missing("memoryPeriod")),
    ("get_consumption_device", {**PERIODS, "correlation_id": 12}, 12, missing("device_id")),
]


@pytest.mark.parametrize(("topic", "payload", "echoed", "text"), TABLE)
def test_original_texts(topic: str, payload: Any, echoed: Any, text: str) -> None:
    wire = json.loads(json.dumps(payload))  # what the cloud's JSON carries
    with pytest.raises(ContractError) as info:
        validate(topic, wire)
    ack = validation_ack_for(topic, wire, info.value)
    assert list(ack)[:4] == ["action", "correlation_id", "status", "error"]
    assert ack["action"] == topic and ack["status"] == "error"
    assert ack["error"] == text
    assert ack["correlation_id"] == echoed and type(ack["correlation_id"]) is type(echoed)
    json.dumps(ack, allow_nan=False)  # always sendable


@pytest.mark.parametrize("topic", ["get_consumption_orchestrator", "get_consumption_device"])
def test_consumption_periods_pass_through_when_given(topic: str) -> None:
    base = {"device_id": "p"} if topic == "get_consumption_device" else {}
    cmd = validate(topic, {**base, "cpuPeriod": "7d", "memoryPeriod": "garbage"})
    assert cmd.params == {**base, "cpuPeriod": "7d", "memoryPeriod": "garbage"}


@pytest.mark.parametrize("cid", [math.nan, math.inf])
def test_a_correlation_id_json_cannot_carry_back_is_null(cid: float) -> None:
    payload = {"device_id": "p", "correlation_id": cid}
    with pytest.raises(ContractError) as info:
        validate("start_device", payload)
    assert validation_ack_for("start_device", payload, info.value)["correlation_id"] is None


HEARTBEAT_KEYS = ("agent_id", "cpu_usage", "memory_usage", "memory_total", "disk_usage",
                  "disk_total", "uptime", "status", "timestamp")


async def test_heartbeat_keys_status_uptime_and_memory_as_the_original() -> None:
    beat = Heartbeat(5.0, PeerWatch(0.2), stale_after=15.0)
    started = psutil.Process().create_time()  # under pytest the agent is this process
    payload = await beat.payload("07048933")
    assert list(payload)[:len(HEARTBEAT_KEYS)] == list(HEARTBEAT_KEYS)
    assert payload["agent_id"] == "07048933"
    assert payload["status"] == "active"
    assert isinstance(payload["uptime"], int)
    assert abs(payload["uptime"] - (time.time() - started)) <= 2
    assert payload["uptime"] < time.time() - psutil.boot_time()  # not the host's
    mem = psutil.virtual_memory()
    assert payload["memory_total"] == round(mem.total / 1024**3, 1)
    assert abs(payload["memory_usage"] - mem.used / 1024**3) <= 0.2
    assert payload["memory_usage"] == round(payload["memory_usage"], 1)
    assert payload["agent_version"]  # extra keys stay


def _metrics_body(age: float) -> dict[str, Any]:
    return HostMetrics(cpu_usage=12.5, memory_usage=1.25, memory_total=8.0, disk_usage=3.0,
                       disk_total=30.0, uptime=99, timestamp="t",
                       sampled_at=time.time() - age).to_body()


async def test_heartbeat_primed_with_metrics_latest_sample() -> None:
    """A sample published before the gateway's subscription joined never arrives: at start
    the gateway asks metrics for its latest one, so the first beat need not sample the host
    itself."""
    asked: list[int] = []

    async def ask() -> dict[str, Any]:
        asked.append(1)
        if len(asked) < 3:
            raise RuntimeError("not_ready")  # metrics has not sampled yet
        return _metrics_body(age=1.0)

    watch = PeerWatch(0.2)
    beat = Heartbeat(5.0, watch, stale_after=15.0, ask_metrics=ask)
    assert await beat.prime(asyncio.Event(), attempts=5)
    assert len(asked) == 3 and watch.host_sample is not None
    payload = await beat.payload("07048933")
    assert payload["sample_source"] == "metrics" and payload["cpu_usage"] == 12.5
    assert 0.9 <= payload["sample_age"] <= 2.0 and payload["unavailable"] == []
    assert await beat.prime(asyncio.Event())
    assert len(asked) == 3  # a known sample: nothing more is asked


@pytest.mark.parametrize("answer", ["stale", "error", "slow"])
async def test_heartbeat_samples_itself_when_metrics_cannot_answer(answer: str) -> None:
    async def ask() -> dict[str, Any]:
        if answer == "error":
            raise RuntimeError("not_ready")
        if answer == "slow":
            await asyncio.sleep(5)
        return _metrics_body(age=60.0)

    beat = Heartbeat(5.0, PeerWatch(0.2), stale_after=15.0, ask_metrics=ask)
    started = time.monotonic()
    assert not await beat.prime(asyncio.Event(), attempts=2)
    assert time.monotonic() - started < 3.5  # each ask bounded (1 s) plus a short pause
    payload = await beat.payload("07048933")
    assert payload["sample_source"] == "gateway" and "metrics" in payload["unavailable"]
    assert payload["cpu_usage"] != 12.5 or payload["disk_total"] != 30.0
