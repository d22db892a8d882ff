"""The netbridge's netmon client: parsing, the cache, bad input, reconnection."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.netmon_proto import BadLine, parse_line
from services.netbridge.netmon_client import (
    LineSplitter,
    NetmonClient,
    host_interfaces,
)
from testkit.helpers import async_wait_for
from tests.netmon.nsutil import NetmonProcess, ip

pytestmark = pytest.mark.timeout(60)


def wire_iface(
    name: str, *addrs: str, gateway: str | None = None, **extra: Any
) -> dict:
    entries = [
        {"address": a, "prefixlen": 24, "subnet": a.rsplit(".", 1)[0] + ".0/24"}
        for a in addrs
    ]
    return {"interface": name, "ipv4_addresses": entries, "gateway": gateway, **extra}


def line(message: Any) -> bytes:
    return json.dumps(message).encode() + b"\n"


def discovery(*ifaces: dict) -> bytes:
    return line({"type": "network_discovery", "data": {"interfaces": list(ifaces)}})


def change(iface: dict) -> bytes:
    return line({"type": "network_change", "data": iface})


# --- pure parts ----------------------------------------------------------------------


def test_splitter_caps_long_lines_and_resynchronises() -> None:
    splitter = LineSplitter(max_line=10)
    assert splitter.feed(b"short\n0123456789\n") == [b"short", b"0123456789"]
    assert splitter.feed(b"x" * 11 + b"\nok\n") == [None, b"ok"]
    # A long line spread over many chunks is reported once and never buffered.
    out = []
    for _ in range(100):
        out += splitter.feed(b"y" * 7)
        assert splitter.buffered <= 10
    out += splitter.feed(b"tail\nafter\n")
    assert out == [None, b"after"]


@given(
    st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    st.integers(min_value=1, max_value=16),
)
def test_splitter_matches_split_for_any_chunking(
    lines: list[bytes], chunk: int
) -> None:
    data = b"".join(x + b"\n" for x in lines)
    splitter = LineSplitter(max_line=20)
    out: list[bytes | None] = []
    for i in range(0, len(data), chunk):
        out += splitter.feed(data[i : i + chunk])
    assert out == [x if len(x) <= 20 else None for x in lines]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{}", "dropped_invalid_utf8"),
        (b"{not json", "dropped_not_json"),
        (b"[1, 2]", "dropped_not_object"),
        (b"42", "dropped_not_object"),
        (b'{"type": "hello", "data": {}}', "dropped_unknown_type"),
        (b'{"data": {}}', "dropped_unknown_type"),
        (b'{"type": "network_change", "data": []}', "dropped_bad_shape"),
        (b'{"type": "network_change", "data": {"interface": 3}}', "dropped_bad_shape"),
        (
            b'{"type": "network_discovery", "data": {"interfaces": {}}}',
            "dropped_bad_shape",
        ),
        (
            b'{"type": "network_change", "data": {"interface": "x", "ipv4_addresses": [1]}}',
            "dropped_bad_shape",
        ),
    ],
)
def test_parse_line_rejects(raw: bytes, reason: str) -> None:
    with pytest.raises(BadLine) as info:
        parse_line(raw)
    assert info.value.reason == reason


def test_host_interfaces_shape_filter_and_order() -> None:
    cache = {
        "oat1": wire_iface(
            "oat1",
            "198.51.100.5",
            "203.0.113.5",
            gateway="198.51.100.1",
            mac_address="02:00:00:00:00:05",
        ),
        "docker0": wire_iface("docker0", "203.0.113.1"),
        "oat0": wire_iface("oat0", "192.0.2.10"),
    }
    rows = host_interfaces(cache)
    assert [r["name"] for r in rows] == ["oat0", "oat1"]
    assert rows[1] == {
        "name": "oat1",
        "ip_address": "198.51.100.5",
        "ipv4_addresses": ["198.51.100.5", "203.0.113.5"],
        "mac_address": "02:00:00:00:00:05",
        "subnet": "198.51.100.0/24",
        "gateway": "198.51.100.1",
    }
    assert rows[0]["mac_address"] is None and rows[0]["gateway"] is None
    assert [r["name"] for r in host_interfaces(cache, include_virtual=True)] == [
        "docker0",
        "oat0",
        "oat1",
    ]
    assert host_interfaces({}) == []


# --- against a fake server -------------------------------------------------------------


class FakeNetmon:
    """A Unix socket server that sends what the test tells it to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        async def on_connect(
            _: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            self.writers.append(writer)

        self.server = await asyncio.start_unix_server(on_connect, path=str(self.path))

    async def send(self, data: bytes) -> None:
        writer = self.writers[-1]
        writer.write(data)
        await writer.drain()

    async def stop(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def run_with_client(
    tmp_path: Path,
    scenario: Callable[[FakeNetmon, NetmonClient, list], Awaitable[None]],
    callback: Callable[[Any], None] | None = None,
) -> None:
    """Run ``scenario`` against a connected client. Events are recorded in the
    scenario's list unless ``callback`` replaces both callbacks."""

    async def main() -> None:
        fake = FakeNetmon(tmp_path / "netmon.sock")
        seen: list = []
        client = NetmonClient(
            fake.path,
            on_discovery=callback
            or (lambda ifaces: seen.append(("discovery", ifaces))),
            on_change=callback or (lambda iface: seen.append(("change", iface))),
            backoff_initial=0.05,
            backoff_max=0.2,
        )
        await fake.start()
        task = asyncio.create_task(client.run())
        try:
            await async_wait_for(lambda: fake.writers, 5, "the client to connect")
            await scenario(fake, client, seen)
            assert not task.done(), "the client task ended"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await fake.stop()

    asyncio.run(main())


def test_cache_follows_discovery_and_changes(tmp_path: Path) -> None:
    async def scenario(fake: FakeNetmon, client: NetmonClient, seen: list) -> None:
        assert client.stale
        await fake.send(
            discovery(
                wire_iface("oat0", "192.0.2.10"), wire_iface("oat1", "198.51.100.1")
            )
        )
        await async_wait_for(lambda: not client.stale, 5, "discovery")
        assert set(client.interfaces) == {"oat0", "oat1"}
        await fake.send(
            change(wire_iface("oat0", "203.0.113.7", gateway="203.0.113.1"))
        )
        await fake.send(
            change(wire_iface("oat1", active=False, operstate="NOTPRESENT"))
        )
        await async_wait_for(lambda: client.counters["changes"] == 2, 5, "changes")
        assert set(client.interfaces) == {"oat0"}
        assert client.interfaces["oat0"]["gateway"] == "203.0.113.1"
        assert [kind for kind, _ in seen] == ["discovery", "change", "change"]
        assert seen[2][1]["active"] is False, "the bridge is told about the removal"
        # A later discovery replaces the cache entirely.
        await fake.send(discovery(wire_iface("oat2", "198.51.100.2")))
        await async_wait_for(lambda: "oat2" in client.interfaces, 5, "second discovery")
        assert set(client.interfaces) == {"oat2"}

    run_with_client(tmp_path, scenario)


def test_bad_lines_dropped_counted_and_service_continues(tmp_path: Path) -> None:
    async def scenario(fake: FakeNetmon, client: NetmonClient, seen: list) -> None:
        await fake.send(discovery(wire_iface("oat0", "192.0.2.10")))
        await async_wait_for(lambda: not client.stale, 5, "discovery")
        await fake.send(b"not json at all\n")
        await fake.send(b"\xc3\x28\xa0\xa1 invalid utf-8\n")
        await fake.send(b'["an", "array"]\n')
        await fake.send(b'{"type": "mystery", "data": {}}\n')
        await fake.send(b'{"type": "network_change", "data": "oat0"}\n')
        # Three megabytes without a newline, in pieces, then the tail of that line.
        for _ in range(48):
            await fake.send(b"z" * 65536)
        await fake.send(b"still the same line\n")
        await fake.send(b"\n")
        await fake.send(change(wire_iface("oat0", "198.51.100.9")))
        await async_wait_for(lambda: client.counters["changes"] == 1, 10, "the good change")
        assert (
            client.interfaces["oat0"]["ipv4_addresses"][0]["address"] == "198.51.100.9"
        )
        assert client.counters["dropped_not_json"] == 1
        assert client.counters["dropped_invalid_utf8"] == 1
        assert client.counters["dropped_not_object"] == 1
        assert client.counters["dropped_unknown_type"] == 1
        assert client.counters["dropped_bad_shape"] == 1
        assert client.counters["dropped_too_long"] == 1
        assert client.counters["disconnects"] == 0
        assert len(seen) == 2

    run_with_client(tmp_path, scenario)


def test_callback_errors_are_counted_not_fatal(tmp_path: Path) -> None:
    def boom(_: Any) -> None:
        raise RuntimeError("consumer bug")

    async def scenario(fake: FakeNetmon, client: NetmonClient, seen: list) -> None:
        await fake.send(discovery(wire_iface("oat0", "192.0.2.10")))
        await fake.send(change(wire_iface("oat0", "192.0.2.11")))
        await async_wait_for(lambda: client.counters["changes"] == 1, 5, "change")
        assert client.counters["callback_errors"] == 2
        addrs = client.interfaces["oat0"]["ipv4_addresses"]
        assert [a["address"] for a in addrs] == ["192.0.2.11"]

    run_with_client(tmp_path, scenario, callback=boom)


def test_waits_quietly_for_a_missing_socket(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        fake = FakeNetmon(tmp_path / "netmon.sock")
        client = NetmonClient(fake.path, backoff_initial=0.01, backoff_max=0.05)
        task = asyncio.create_task(client.run())
        try:
            await asyncio.sleep(0.5)  # the absence is the condition under test
            assert client.stale and not client.connected.is_set()
            await fake.start()
            await async_wait_for(
                lambda: client.connected.is_set(), 5, "connect once the socket exists"
            )
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await fake.stop()

    caplog.set_level("DEBUG", logger="services.netbridge.netmon_client")
    asyncio.run(main())
    loud = [r for r in caplog.records if r.levelname != "DEBUG"]
    assert [r.getMessage().split(" ")[0:2] for r in loud] == [
        ["netmon", "socket"],
        ["connected", "to"],
    ], [r.getMessage() for r in loud]
    retries = [r for r in caplog.records if r.levelname == "DEBUG"]
    # Capped backoff: many quiet retries, not a busy loop.
    assert 3 <= len(retries) <= 60


# --- against the real netmon -----------------------------------------------------------


def test_reconnects_after_netmon_restart_and_cache_recovers(
    netmon: NetmonProcess, lan: str
) -> None:
    async def main() -> None:
        client = NetmonClient(netmon.sock_path, backoff_initial=0.05, backoff_max=0.5)
        task = asyncio.create_task(client.run())
        try:
            await async_wait_for(lambda: "oat0" in client.interfaces, 10, "initial discovery")
            assert not client.stale
            netmon.kill()  # no clean shutdown: the socket file stays behind
            await async_wait_for(lambda: client.stale, 5, "stale after netmon died")
            assert "oat0" in client.interfaces, "last known state kept while stale"
            ip(lan, "addr", "add", "203.0.113.77/24", "dev", "oat0")
            await asyncio.to_thread(netmon.start)
            await async_wait_for(lambda: not client.stale, 10, "reconnect")
            addrs = [a["address"] for a in client.interfaces["oat0"]["ipv4_addresses"]]
            assert addrs == ["192.0.2.10", "203.0.113.77"]
            assert client.counters["connects"] >= 2
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())


def test_host_interfaces_reply_matches_the_original() -> None:
    from services.netbridge.service import host_interfaces_reply
    cache = {name: wire_iface(name, f"198.51.100.{i + 1}")
             for i, name in enumerate(["Tailscale0", "wg0", "zt5", "oat0", "lo", "br-1a",
                                       "CAN0", "sit1", "kube-ipvs0", "eth0", "tap0"])}
    default = host_interfaces_reply(cache, False, True)
    assert default["status"] == "success"
    assert [r["name"] for r in default["interfaces"]] == ["eth0", "oat0", "tap0"]
    assert all("subnet" in r and "gateway" in r for r in default["interfaces"])
    brief = host_interfaces_reply(cache, False, False)
    assert all("subnet" not in r and "gateway" not in r for r in brief["interfaces"])
    everything = host_interfaces_reply(cache, True, True)
    assert [r["name"] for r in everything["interfaces"]] == sorted(cache)
    only_virtual = {n: cache[n] for n in ("lo", "wg0", "br-1a")}
    assert host_interfaces_reply(only_virtual, False, True) == {"status": "success",
                                                                "interfaces": []}
    assert host_interfaces_reply({}, False, True) == {
        "status": "error",
        "error": "Network interface cache is empty. The netmon sidecar may not be running "
                 "or has not yet discovered interfaces."}
