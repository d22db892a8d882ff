"""The gateway's Socket.IO packet class answers the binary question as the library's."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from socketio import packet

from services.gateway.packets import Packet

leaves = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
          | st.binary(max_size=3) | st.builds(bytearray, st.binary(max_size=3))
          | st.tuples(st.binary(max_size=2)))
data = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=4), max_leaves=30)


@given(data)
def test_same_answer_as_the_library(value: Any) -> None:
    assert Packet.data_is_binary(value) == packet.Packet.data_is_binary(value)


def test_binary_anywhere_makes_a_binary_ack() -> None:
    ack = {"cpu_usage": [{"timestamp": 1, "cpu": 0.5}] * 300, "memory_usage": []}
    assert Packet(packet.ACK, data=[ack], id=3).packet_type == packet.ACK
    ack["memory_usage"] = [{"timestamp": 1, "raw": b"\x00"}]
    assert Packet(packet.ACK, data=[ack], id=3).packet_type == packet.BINARY_ACK
    # A tuple is not looked into, as the library does not.
    assert Packet(packet.ACK, data=[(b"\x00",)], id=3).packet_type == packet.ACK


def test_encoded_json_is_the_library_s() -> None:
    ack = [{"device_id": "plc-1", "cpu_usage": [{"timestamp": 5, "cpu": 1.5}], "n": None}]
    ours, theirs = Packet(packet.ACK, data=ack, id=7), packet.Packet(packet.ACK, data=ack, id=7)
    assert ours.encode() == theirs.encode() == \
        '37[{"device_id":"plc-1","cpu_usage":[{"timestamp":5,"cpu":1.5}],"n":null}]'
