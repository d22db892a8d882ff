"""The agent as the cloud sees it: the real suite under supervisord, real mTLS, the
development cloud on loopback.

The order of the tests matters only for speed: the heartbeat rhythm is measured over
whatever ran before it on the same connection (commands, fuzzing), which is the point —
the rhythm must hold whatever else the agent is doing.  The tests that cut the link or
stop processes come last.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import os
import signal
import time
from collections import Counter
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.contracts import CONTRACTS, TOPICS, ContractError, validate
from services.gateway.router import ROUTES
from services.gateway.schema import TYPE_TEXTS, Kind, missing_text
from testkit.helpers import wait_for
from tests.e2e.conftest import RPC_TIMEOUT, Agent
from tests.strategies import mutated_payload, valid_payload

VALID: dict[str, dict[str, Any]] = {
    "create_new_runtime": {
        "container_name": "plc-001",
        "vnic_configs": [{"name": "eth0", "parent_interface": "oat0", "network_mode": "manual",
                          "ip_address": "192.0.2.50", "subnet": "255.255.255.0",
                          "gateway": "192.0.2.1"}],
        "runtime_version": "latest",
    },
    "delete_device": {"device_id": "plc-001"},
    "start_device": {"device_id": "plc-001"},
    "stop_device": {"device_id": "plc-001"},
    "restart_device": {"device_id": "plc-001"},
    "get_device_status": {"device_id": "plc-001"},
    "run_command": {"device_id": "plc-001", "method": "GET", "api": "/api/status"},
    "get_consumption_device": {"device_id": "plc-001", "cpuPeriod": "1h",
                               "memoryPeriod": "1h"},
    "get_consumption_orchestrator": {"cpuPeriod": "1h", "memoryPeriod": "1h"},
    "get_host_interfaces": {"include_virtual": False, "detailed": True},
    "get_serial_devices": {},
    "delete_orchestrator": {},
}

# The keys PROTOCOL.md documents for each topic's reply, by `status` (None: no status).
DOCUMENTED: dict[str, dict[Any, set[str]]] = {
    "create_new_runtime": {"creating": {"container_id", "message"}, "error": {"error"}},
    "delete_device": {"deleting": {"device_id", "message"}, "error": {"error"}},
    "start_device": {"success": {"success", "device_id", "container_status"},
                     "error": {"success", "device_id", "error"}},
    "get_device_status": {"success": {"device_id", "container_status", "networks"},
                          "not_found": {"device_id", "message"},
                          "creating": {"device_id", "operation", "step"},
                          "deleting": {"device_id", "operation", "step"},
                          "error": {"error"}},
    "run_command": {"success": {"http_response"}, "error": {"error"}},
    "get_consumption_device": {None: {"device_id", "memory", "cpu", "cpu_usage",
                                      "memory_usage"}, "error": {"error"}},
    "get_consumption_orchestrator": {None: {"ip_addresses", "memory", "cpu", "os", "kernel",
                                            "disk", "cpu_usage", "memory_usage"}},
    "get_host_interfaces": {"success": {"interfaces"}, "error": {"error"}},
    "get_serial_devices": {"success": {"devices", "count"}, "error": {"error"}},
    "delete_orchestrator": {"accepted": {"message", "poll_device_id"}, "error": {"error"}},
}
DOCUMENTED["stop_device"] = DOCUMENTED["restart_device"] = DOCUMENTED["start_device"]

# Error reasons that mean the owning process did not answer.
SILENT = ("unavailable", "timeout")

WRONG: dict[Kind, Any] = {
    Kind.NUMBER: "12", Kind.STRING: 12, Kind.NONEMPTY_STRING: "", Kind.BOOLEAN: "true",
    Kind.LIST: "eth0", Kind.DATETIME: "yesterday", Kind.OBJECT: "x",
}


def head(ack: Any, topic: str, cid: Any) -> None:
    assert isinstance(ack, dict), ack
    assert list(ack)[:2] == ["action", "correlation_id"], ack
    assert ack["action"] == topic and ack["correlation_id"] == cid, ack


def check_documented(topic: str, ack: dict[str, Any]) -> None:
    """The documented reply of `topic`; or an explicit error of the owning process (its
    part has not landed — `not_available` — or it cannot do the work here, e.g. no Docker
    engine); never a validation error for a valid request."""
    assert not str(ack.get("error", "")).startswith(("Validation error", "Missing required",
                                                    "Invalid field type")), ack
    if ack.get("reason") == "not_available":
        route = ROUTES[topic]
        assert ack["status"] == "error"
        assert ack["error"] == (f"{topic} is not available on this agent: {route.process} "
                                f"does not serve {route.method!r}")
        return
    if ack.get("status") == "error" and ack.get("reason") is not None:
        assert isinstance(ack["error"], str) and ack["error"], ack
        return
    shapes = DOCUMENTED[topic]
    status = ack.get("status")
    assert status in shapes, ack
    assert shapes[status] <= set(ack), (shapes[status] - set(ack), ack)


# --- every topic: valid, missing, wrong types, not objects -----------------------------


@pytest.mark.parametrize("topic", TOPICS)
def test_topic_contract_end_to_end(agent: Agent, topic: str) -> None:
    contract = CONTRACTS[topic]
    base = VALID[topic]
    validate(topic, base)  # the examples themselves are valid

    cid = agent.next_cid()
    record = agent.send(topic, {**base, "correlation_id": cid})
    head(record.ack, topic, cid)
    check_documented(topic, record.ack)
    assert record.elapsed < RPC_TIMEOUT + 1

    for f in contract.fields:
        if f.required:
            cid = agent.next_cid()
            payload = {k: v for k, v in base.items() if k != f.name}
            ack = agent.send(topic, {**payload, "correlation_id": cid}).ack
            head(ack, topic, cid)
            assert ack["status"] == "error"
            assert ack["error"] == missing_text(f.name) == \
                f"Missing required field: 'Missing key: {f.name}'"
        if f.kind in WRONG:
            cid = agent.next_cid()
            payload = {**base, "correlation_id": cid}
            payload[f.name] = WRONG[f.kind]
            ack = agent.send(topic, payload).ack
            expected = TYPE_TEXTS.get(f.kind, f"Validation error: {f.name}: must be an object")
            # An invalid correlation_id is echoed back as received.
            head(ack, topic, WRONG[f.kind] if f.name == "correlation_id" else cid)
            assert (ack["status"], ack["error"]) == ("error", expected), f.name

    for payload, kind in (("text", "a string"), ([base], "a list"), (None, "null")):
        ack = agent.send(topic, payload).ack
        head(ack, topic, None)
        assert ack["error"] == f"Validation error: payload must be a JSON object, not {kind}"

    # A huge object: 20 000 unknown keys and a 1 MB string; unknown fields are ignored.
    cid = agent.next_cid()
    huge = {**base, "correlation_id": cid, "blob": "x" * 1_000_000,
            **{f"extra{i}": i for i in range(20_000)}}
    record = agent.send(topic, huge)
    head(record.ack, topic, cid)
    check_documented(topic, record.ack)


# --- fuzzing over every topic, end to end ------------------------------------------------


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float)
                      and math.isnan(a) and math.isnan(b))


def test_fuzzed_commands_always_get_one_ack_and_invalid_ones_never_reach_the_executor(
        agent: Agent) -> None:
    gateway_pid = agent.suite.status()["gateway"][1]
    agent.sentinel("executor")  # start from a clean slate of traces
    expected: Counter[str] = Counter()
    sent = invalid = 0

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data(), topic=st.sampled_from(TOPICS), mutate=st.booleans())
    def one(data: st.DataObject, topic: str, mutate: bool) -> None:
        nonlocal sent, invalid
        strategy = mutated_payload(topic) if mutate else valid_payload(topic)
        payload = data.draw(strategy)
        # What crosses the wire is JSON; Python's encoder cannot go deeper than this.
        if _depth(payload) > 800:
            return
        if isinstance(payload, dict) and isinstance(payload.get("correlation_id"), int | float) \
                and not isinstance(payload["correlation_id"], bool):
            # A fresh id per example, so the replay cache never hides a second execution.
            payload["correlation_id"] = agent.next_cid()
        wire_payload = json.loads(json.dumps(payload))
        try:
            command = validate(topic, wire_payload)
        except ContractError as exc:
            command, error = None, exc.text
        record = agent.send(topic, payload)
        sent += 1
        ack = record.ack
        assert isinstance(ack, dict) and ack["action"] == topic, ack
        cid = wire_payload.get("correlation_id") if isinstance(wire_payload, dict) else None
        if command is None:
            invalid += 1
            assert ack["status"] == "error" and ack["error"] == error, (payload, ack)
            assert "reason" not in ack
        else:
            assert _same(ack["correlation_id"], command.correlation_id)
            assert ack.get("error", "").startswith("Validation error") is False, ack
            route = ROUTES[topic]
            if route.process == "executor":
                expected[route.method] += 1
        if isinstance(cid, int) and not isinstance(cid, bool) and cid < 2**53:
            assert ack["correlation_id"] == cid or command is None

    one()
    assert sent >= 100 and invalid >= 30 and sum(expected.values()) >= 20, \
        (sent, invalid, expected)
    traces = agent.sentinel("executor")
    got = Counter(t["method"] for t in traces if t["caller"] == "gateway")
    assert got == expected, (got, expected)
    assert all(t["outcome"] in ("ok", "error", "unknown_method") for t in traces)
    # Every emit got exactly one ack, and the gateway never restarted.
    ours = [r.correlation_id for r in agent.cloud.acks
            if type(r.correlation_id) is int and r.correlation_id >= 9_000_000_000_000]
    assert len(ours) == len(set(ours))
    assert all(r.error is None for r in agent.cloud.acks)
    assert agent.suite.status()["gateway"] == ("RUNNING", gateway_pid)


# --- heartbeat: real TLS, real rhythm --------------------------------------------------


def test_heartbeats_every_five_seconds_with_documented_fields(agent: Agent) -> None:
    state = agent.cloud.hub.agent(agent.id)
    assert state is not None and state.connected_at is not None
    since = state.connected_at

    def beats() -> list[Any]:
        return [b for b in agent.cloud.hub.heartbeats(agent.id) if b.received_at >= since]

    got = wait_for(lambda: len(b := beats()) >= 4 and b, 25, interval=0.2,
                   what="four heartbeats")
    intervals = [b.received_at - a.received_at for a, b in itertools.pairwise(got[-10:])]
    assert all(4.5 <= i <= 5.5 for i in intervals), intervals
    mean = sum(intervals) / len(intervals)
    assert abs(mean - 5.0) < 0.1, intervals

    last = got[-1]
    assert last.problems == ()
    p = last.payload
    assert p["agent_id"] == agent.id and p["status"] == "active"
    assert p["sample_source"] == "metrics" and p["unavailable"] == []
    assert 0 <= p["sample_age"] < 2.5
    assert 0.0 <= p["cpu_usage"] <= 100.0
    mem = psutil.virtual_memory()
    assert p["memory_total"] == round(mem.total / 1024**3, 1)
    assert abs(p["memory_usage"] - mem.used / 1024**3) <= 0.3  # psutil's `used`
    assert 0 < p["disk_usage"] < p["disk_total"]
    # The agent's own uptime (since supervisord started the suite), in whole seconds.
    assert agent.suite.proc is not None
    suite_age = time.time() - psutil.Process(agent.suite.proc.pid).create_time()
    assert isinstance(p["uptime"], int) and 0 <= p["uptime"] <= suite_age + 1
    stamp = dt.datetime.fromisoformat(p["timestamp"])
    assert abs((dt.datetime.now() - stamp).total_seconds()) < 10
    assert isinstance(p["agent_version"], str) and p["agent_version"]


# --- the owning process goes away ----------------------------------------------------------


def test_owning_process_down_gives_an_error_in_time_and_back_without_a_gateway_restart(
        agent: Agent) -> None:
    gateway_pid = agent.suite.status()["gateway"][1]
    assert "executor: stopped" in agent.suite.ctl("stop", "executor")
    cid = agent.next_cid()
    record = agent.send("get_device_status", {"device_id": "plc-1", "correlation_id": cid})
    head(record.ack, "get_device_status", cid)
    assert record.ack["status"] == "error" and record.ack["reason"] == "unavailable"
    assert record.ack["error"].startswith("executor is not running")
    assert record.elapsed < RPC_TIMEOUT + 1

    assert "executor: started" in agent.suite.ctl("start", "executor")
    record = agent.send("get_device_status", {"device_id": "plc-1",
                                              "correlation_id": agent.next_cid()})
    check_documented("get_device_status", record.ack)
    assert record.ack.get("reason") not in SILENT  # the executor answered

    # kill -9 in the middle of a stream of commands: one ack each, all in time.
    old = agent.suite.status()["executor"][1]
    assert old is not None
    stream = [agent.clouds.submit(agent.cloud.send_record(
        agent.id, "get_device_status", {"device_id": f"plc-{i}", "correlation_id": cid + i},
        timeout=RPC_TIMEOUT + 3, stamp=False)) for i in range(1, 31)]
    os.kill(old, signal.SIGKILL)
    records = [f.result(RPC_TIMEOUT + 10) for f in stream]
    assert all(r.elapsed < RPC_TIMEOUT + 1 for r in records)
    for r in records:
        check_documented("get_device_status", r.ack)
    wait_for(lambda: (s := agent.suite.status()["executor"])[0] == "RUNNING" and s[1] != old,
             20, interval=0.2, what="executor back")
    record = agent.send("get_device_status", {"device_id": "plc-1",
                                              "correlation_id": agent.next_cid()})
    check_documented("get_device_status", record.ack)
    assert record.ack.get("reason") not in SILENT
    assert agent.suite.status()["gateway"] == ("RUNNING", gateway_pid)


# --- the link is cut, the cloud restarts -----------------------------------------------------


def test_link_cut_and_cloud_restart_reconnect_and_replay(agent: Agent) -> None:
    cid = agent.next_cid()
    payload = {"cpuPeriod": "1h", "memoryPeriod": "1h", "correlation_id": cid}
    first = agent.send("get_consumption_orchestrator", payload).ack
    check_documented("get_consumption_orchestrator", first)
    assert "reason" not in first
    change = {"device_id": "plc-link-cut", "correlation_id": cid}
    changed = agent.send("stop_device", change).ack
    agent.sentinel("metrics")
    agent.sentinel("executor")

    def fresh_read_and_replayed_change() -> None:
        # A read is answered fresh.  The change's first answer was "Docker unavailable"
        # (this executor has no engine), which proves it did not run: a resend with the
        # same id runs once more rather than replaying that answer.
        again = agent.send("get_consumption_orchestrator", payload).ack
        check_documented("get_consumption_orchestrator", again)
        assert [t for t in agent.sentinel("metrics")
                if t["method"] == "consumption_orchestrator"]
        assert changed["error"].startswith("Docker unavailable"), changed
        assert agent.send("stop_device", change).ack == changed
        assert len([t for t in agent.sentinel("executor")
                    if t["method"] == "stop_device"]) == 1

    def connections() -> int:
        state = agent.cloud.hub.agent(agent.id)
        return state.connections if state is not None else 0

    # The cloud cuts the link.
    before = connections()
    assert agent.clouds.call(agent.cloud.disconnect_agent(agent.id))
    cut = time.monotonic()
    wait_for(lambda: connections() == before + 1 and agent.cloud.hub.is_connected(agent.id),
             10, what="reconnection")
    assert time.monotonic() - cut < 1.0 + 1.0  # the first backoff step is about 1 s
    # A beat on the new link: the newest beat on record may still be the old link's when
    # the first one after the reconnect has not arrived yet, so wait by time, not by count.
    hub = agent.cloud.hub
    connected_at = hub.agent(agent.id).connected_at
    assert connected_at is not None
    assert agent.clouds.call(hub.wait_for(
        lambda: any(b.received_at >= connected_at for b in hub.heartbeats(agent.id)), 10))
    fresh_read_and_replayed_change()

    # The cloud goes away and comes back on the same address.
    agent.clouds.stop()
    down = time.monotonic()
    wait_for(lambda: "cannot connect to" in agent.suite.output().split("disconnected from")[-1],
             15, interval=0.2, what="failed attempts")
    agent.clouds.start()
    agent.wait_connected(10)
    assert time.monotonic() - down < 15
    assert agent.clouds.call(agent.cloud.wait_heartbeats(agent.id, 1, timeout=10))
    fresh_read_and_replayed_change()

    log = agent.suite.output()
    assert f"connected to {agent.cloud.url} as agent {agent.id}" in log
    assert "server disconnect" in log and "Connect call failed" in log
    assert f"command stop_device correlation_id={cid}: replayed" not in log  # not kept
    assert f"command get_consumption_orchestrator correlation_id={cid}: replayed" not in log
