"""The wire codec and the message registry: round trips and garbage."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from common import wire
from common.messages import (
    REGISTRY,
    Alive,
    HostMetrics,
    LifecycleBoot,
    LifecycleCrashLoop,
    LifecycleDesired,
    LifecycleRestarted,
    LifecycleRestartScheduled,
    MessageError,
    NetChange,
    NetDiscovery,
    Reply,
    Request,
    RpcTrace,
    RuntimeRehomed,
    Stopping,
    parse,
)

SAMPLES: list[Any] = [
    Alive("metrics", 42, 1.5, "0.1.0", {"pub_sent": 3}),
    Stopping("executor", "signal"),
    Request("get_status", {"device_id": "plc-1", "nested": {"a": [1, 2.5, None, True]}}, 1.0),
    Reply("get_status", True, {"status": "success"}),
    Reply("get_status", False, None, {"type": "busy", "message": "busy"}),
    RpcTrace("executor", "get_status", "id1", "gateway", 0.25, "ok"),
    HostMetrics(15.2, 2.5, 16.0, 45.8, 500.0, 86400, "2025-11-20T20:30:45.123456", 1.0),
    NetDiscovery([{"interface": "oat0", "ipv4_addresses": []}], "2025-11-20T20:30:45"),
    NetChange({"interface": "oat0", "gateway": "192.0.2.1"}),
    RuntimeRehomed("plc-1", {"outcome": "rehomed", "network": "macvlan_oat0_198.51.100.0_24"}),
    LifecycleBoot("start", 3, 2, 1, 0, 0, 0, "reported", 1.5, 4.25),
    LifecycleRestartScheduled("plc-1", 2.0, 137, False, 1),
    LifecycleRestarted("plc-1", False, "Docker error: no such network"),
    LifecycleCrashLoop("plc-1", [{"at": "2026-01-01T00:00:00Z", "exit_code": 1,
                                  "oom_killed": True}]),
    LifecycleDesired("plc-1", "stopped", "stop_device"),
]


def test_every_registered_type_has_a_sample() -> None:
    assert {type(s) for s in SAMPLES} == set(REGISTRY)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Any) -> None:
    stamper = wire.Stamper("test")
    frames = wire.encode(message.topic(), stamper.header(message.topic(), "re1"),
                         message.to_body())
    envelope = wire.decode(frames)
    assert envelope.topic == message.topic()
    assert envelope.header.source == "test"
    assert envelope.header.seq == 1
    assert envelope.header.reply_to == "re1"
    assert parse(envelope) == message


def test_topics_derive_from_type() -> None:
    assert Alive("gateway", 1, 0, "v").topic() == "svc.gateway.alive"
    assert RpcTrace("executor", "create", "i", "c", 1, "ok").topic() == "rpc.executor.create"
    assert Alive.matches("svc.x.alive") and not Alive.matches("svc.x.y.alive")


def test_sequence_is_per_topic_and_ids_unique() -> None:
    stamper = wire.Stamper("s")
    a1, b1, a2 = stamper.header("a"), stamper.header("b"), stamper.header("a")
    assert (a1.seq, b1.seq, a2.seq) == (1, 1, 2)
    assert len({a1.msg_id, b1.msg_id, a2.msg_id}) == 3


def test_unknown_body_keys_are_ignored_and_missing_ones_refused() -> None:
    body = Stopping("x", "signal").to_body() | {"future_field": 1}
    assert Stopping.from_body(body) == Stopping("x", "signal")
    with pytest.raises(MessageError):
        Stopping.from_body({"name": "x"})


def _frames(head: Any = None, body: Any = None, topic: bytes = b"t.x") -> list[bytes]:
    default_head = {"v": 1, "id": "i", "ts": 1.0, "src": "s", "seq": 1}
    return [topic, msgpack.packb(default_head if head is None else head),
            msgpack.packb({} if body is None else body)]


@pytest.mark.parametrize(("frames", "reason"), [
    ([b"t", b"\xc1garbage", b"\x80"], "undecodable"),
    (_frames()[:2], "frame_count"),
    ([*_frames(), b""], "frame_count"),
    (_frames(head={"v": 2, "id": "i", "ts": 1.0, "src": "s", "seq": 1}), "wrong_version"),
    (_frames(head={"v": 1, "id": "i", "ts": 1.0, "src": "s"}), "missing_field"),
    (_frames(head={"v": 1, "id": 5, "ts": 1.0, "src": "s", "seq": 1}), "bad_header"),
    (_frames(head={"v": 1, "id": "i", "ts": 1.0, "src": "s", "seq": True}), "bad_header"),
    (_frames(body=[1, 2]), "not_a_map"),
    (_frames(topic=b""), "bad_topic"),
    (_frames(topic=b"x" * 300), "bad_topic"),
    ([b"t", msgpack.packb({"v": 1}), b"\xa2\xff\xfe"], "undecodable"),  # invalid UTF-8
    ([b"t", msgpack.packb({"v": 1}), msgpack.packb({1: 2})], "undecodable"),  # int key
    ([b"t", b"x", b"x" * (wire.MAX_MESSAGE_BYTES + 1)], "oversized"),
    ([b"t", msgpack.packb({"v": 1}) + b"\x00", b"\x80"], "undecodable"),  # trailing data
])
def test_garbage_is_a_wire_error(frames: list[bytes], reason: str) -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.decode(frames)
    assert caught.value.reason == reason


def test_encode_refuses_oversized_and_unencodable_bodies() -> None:
    header = wire.Stamper("s").header("t")
    with pytest.raises(wire.WireError, match="oversized"):
        wire.encode("t", header, {"blob": b"x" * (wire.MAX_MESSAGE_BYTES + 1)})
    with pytest.raises(wire.WireError, match="unencodable"):
        wire.encode("t", header, {"obj": object()})


def test_header_is_frozen() -> None:
    header = wire.Stamper("s").header("t")
    with pytest.raises(dataclasses.FrozenInstanceError):
        header.seq = 9  # type: ignore[misc]
