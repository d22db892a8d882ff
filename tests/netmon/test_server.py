"""The socket server in-process, with real Unix sockets and a fixed interface list."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from services.netmon.model import Iface, Ipv4Address
from services.netmon.server import AlreadyRunning, Server, ServerError

pytestmark = pytest.mark.timeout(30)


def iface(name: str = "oat0", n_addrs: int = 1) -> Iface:
    addrs = tuple(Ipv4Address(f"198.51.100.{1 + i % 250}", 24) for i in range(n_addrs))
    return Iface(name, 3, "UP", "02:00:00:00:00:01", addrs, "198.51.100.254", True, "t")


async def read_json(reader: asyncio.StreamReader) -> dict:
    line = await asyncio.wait_for(reader.readline(), 5)
    assert line.endswith(b"\n")
    return dict(json.loads(line))


def test_discovery_then_changes_to_every_client(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = Server(tmp_path / "netmon.sock", lambda: [iface()])
        await server.bind()
        await server.serve()
        try:
            clients = [
                await asyncio.open_unix_connection(server.path) for _ in range(2)
            ]
            for reader, _ in clients:
                first = await read_json(reader)
                assert first["type"] == "network_discovery"
                assert first["data"]["interfaces"][0]["interface"] == "oat0"
            server.broadcast(iface("oat1"))
            for reader, _ in clients:
                msg = await read_json(reader)
                assert msg == {
                    "type": "network_change",
                    "data": iface("oat1").to_wire(),
                }
            for _, writer in clients:
                writer.close()
        finally:
            await server.stop()
        assert not server.path.exists()

    asyncio.run(scenario())


def test_client_that_never_reads_is_dropped_without_delaying_others(
    tmp_path: Path,
) -> None:
    big = iface(n_addrs=1500)  # about 100 KiB per line

    async def scenario() -> None:
        server = Server(tmp_path / "netmon.sock", list, client_queue=4)
        await server.bind()
        await server.serve()
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(stuck, str(server.path))
            reader, writer = await asyncio.open_unix_connection(
                server.path, limit=1 << 20
            )
            await read_json(reader)
            for _ in range(40):
                server.broadcast(big)
                msg = await read_json(reader)
                assert len(msg["data"]["ipv4_addresses"]) == 1500
                if server.counters["dropped_slow"]:
                    break
            assert server.counters["dropped_slow"] == 1
            assert server.client_count == 1
            server.broadcast(iface("oat9"))
            assert (await read_json(reader))["data"]["interface"] == "oat9"
            writer.close()
        finally:
            stuck.close()
            await server.stop()

    asyncio.run(scenario())


def test_stale_socket_replaced_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "netmon.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()

    async def scenario() -> None:
        first = Server(path, list)
        await first.bind()
        await first.serve()
        assert path.stat().st_mode & 0o777 == 0o666
        inode = path.stat().st_ino
        second = Server(path, list)
        with pytest.raises(AlreadyRunning):
            await second.bind()
        await second.stop()
        assert path.stat().st_ino == inode, (
            "the loser must not remove the winner's socket"
        )
        await first.stop()
        assert not path.exists()

    asyncio.run(scenario())


def test_non_socket_at_path_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "netmon.sock"
    path.write_text("not a socket")

    async def scenario() -> None:
        with pytest.raises(ServerError):
            await Server(path, list).bind()

    asyncio.run(scenario())
    assert path.read_text() == "not a socket"
