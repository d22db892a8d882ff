"""The netmon line protocol: what the server encodes, the client parses back."""

from __future__ import annotations

import pytest

from common import netmon_proto as proto

IFACE = {"interface": "oat0",
         "ipv4_addresses": [{"address": "192.0.2.10", "subnet": "192.0.2.0/24"}],
         "mac_address": "02:00:00:00:00:01", "gateway": "192.0.2.1"}


def test_discovery_round_trip() -> None:
    line = proto.discovery_line([IFACE], "2026-01-01T00:00:00Z")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert proto.parse_line(line.rstrip(b"\n")) == (proto.DISCOVERY, [IFACE])


def test_change_round_trip() -> None:
    assert proto.parse_line(proto.change_line(IFACE).rstrip(b"\n")) == (proto.CHANGE, IFACE)


@pytest.mark.parametrize("raw,reason", [
    (b'{"type":"network_gone","data":{}}', "dropped_unknown_type"),
    (b'{"type":"network_change","data":{"interface":""}}', "dropped_bad_shape"),
    (b"[1]", "dropped_not_object"),
])
def test_bad_lines_name_their_counter(raw: bytes, reason: str) -> None:
    with pytest.raises(proto.BadLine) as info:
        proto.parse_line(raw)
    assert info.value.reason == reason


def test_virtual_names() -> None:
    assert proto.is_virtual("docker0") and proto.is_virtual("veth12ab")
    assert not proto.is_virtual("eth0") and not proto.is_virtual("oat0")


def test_deep_nesting_is_refused_before_decoding() -> None:
    deep = b'{"type":"network_change","data":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(proto.BadLine) as info:
        proto.parse_line(deep)
    assert info.value.reason == "dropped_too_deep"


@pytest.mark.parametrize("raw,deep", [
    (b'["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]', False),  # brackets inside a string
    (b'["\\\\", ' + b"[" * 20 + b"]" * 20 + b"]", True),  # an escaped backslash ends no string
    (b'["\\"[[[[[[[[[[[[[[[[[[[[[[[[[["]', False),  # an escaped quote does not end it
    (b"[" * 16 + b"]" * 16, False),
    (b"[" * 17 + b"]" * 17, True),
    (b"[" * 40, False),  # unbalanced: left to the decoder
])
def test_nesting_depth(raw: bytes, deep: bool) -> None:
    assert proto.nesting_depth_exceeds(raw) is deep


def test_parsed_interface_keeps_only_known_fields() -> None:
    line = proto.change_line({**IFACE, "extra": "x" * 10_000, "index": 3})
    assert proto.parse_line(line.rstrip(b"\n")) == (proto.CHANGE, {**IFACE, "index": 3})
