"""Codec and lease-file units: malformed input, names that could escape the directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.executor.dhcp import DhcpError, LeaseKeeper, VnicTarget, packet
from services.executor.dhcp.lease import Lease, LeaseStore, file_name
from tests.dhcp.fakes import read, reply


def test_request_is_a_well_formed_bootp_message() -> None:
    data = packet.Request(packet.DISCOVER, 0x1234, "02:00:00:00:00:01", hostname="x").build()
    assert len(data) >= 300
    sent = read(data, "255.255.255.255")
    assert sent.kind == packet.DISCOVER and sent.xid == 0x1234


@pytest.mark.parametrize("data", [b"", b"\x02" * 239, b"\x02\x01\x06" + b"\0" * 240])
def test_short_or_cookieless_messages_are_refused(data: bytes) -> None:
    with pytest.raises(packet.BadPacket):
        packet.parse(data)


def test_options_running_past_the_end_are_refused() -> None:
    sent = read(packet.Request(packet.DISCOVER, 1, "02:00:00:00:00:01").build(), "x")
    good = reply(sent, packet.OFFER, "198.51.100.5")
    assert packet.parse(good).yiaddr == "198.51.100.5"
    with pytest.raises(packet.BadPacket):
        packet.parse(good[:-1] + bytes([packet.OPT_DNS, 40, 1, 2]))
    with pytest.raises(packet.BadPacket):  # a request is not a reply
        packet.parse(packet.Request(packet.DISCOVER, 1, "02:00:00:00:00:01").build())


def test_repeated_options_are_concatenated() -> None:
    assert packet.parse_options(bytes([6, 4, 1, 2, 3, 4, 6, 4, 5, 6, 7, 8, 255])) == {
        6: bytes([1, 2, 3, 4, 5, 6, 7, 8])}


@pytest.mark.parametrize("device,vnic", [("../x", "eth0"), ("a", "../../etc"),
                                         ("a/b", "eth0"), ("", "eth0"), ("a", "e@0"),
                                         (".hidden", "eth0"), ("a..b", "eth0")])
def test_names_that_could_escape_are_refused(device: str, vnic: str) -> None:
    with pytest.raises(ValueError):
        file_name(device, vnic)


def test_store_round_trip_and_listing(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path)
    lease = Lease("198.51.100.7", 24, "198.51.100.1", 10.0, 120, 60.0, 105.0, "198.51.100.1")
    store.save("plc-1", "eth0", {"lease": lease.__dict__, "mac_address": "m"})
    assert store.keys() == [("plc-1", "eth0")]
    loaded = store.load("plc-1", "eth0")
    assert loaded is not None and Lease.from_dict(loaded["lease"]) == lease
    (tmp_path / "dhcp" / "plc-2@eth0.json").write_text("{not json")
    assert store.load("plc-2", "eth0") is None  # unreadable: start afresh, no crash
    store.remove("plc-1", "eth0")
    assert store.load("plc-1", "eth0") is None


def test_keeper_refuses_bad_names_and_missing_namespaces(tmp_path: Path) -> None:
    keeper = LeaseKeeper(tmp_path).start()
    try:
        with pytest.raises(ValueError):
            keeper.attach(VnicTarget("../etc", "eth0", "02:00:00:00:00:01", "/nonexistent"))
        with pytest.raises(DhcpError, match="not visible"):
            keeper.attach(VnicTarget("plc-1", "eth0", "02:00:00:00:00:01",
                                     str(tmp_path / "no-such-netns")))
        assert keeper.managed() == [] and keeper.known() == []
        assert not (tmp_path / "dhcp").exists()
        assert keeper.status("plc-1", "eth0") is None
        assert keeper.release("plc-1", "eth0") is False
    finally:
        keeper.stop()
    with pytest.raises(DhcpError, match="not running"):
        keeper.attach(VnicTarget("plc-1", "eth0", "02:00:00:00:00:01", "/nonexistent"))
