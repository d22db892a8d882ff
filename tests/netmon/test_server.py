"""The socket server in-process, with real Unix sockets and a fixed interface list."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
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
        assert path.stat().st_mode & 0o777 == 0o660
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


def test_clients_beyond_the_maximum_are_refused(tmp_path: Path) -> None:
    """A flood of connections costs a counter: the ninth client is closed at once while
    the eight connected ones keep getting every line; a freed slot is usable again."""
    async def scenario() -> None:
        server = Server(tmp_path / "netmon.sock", lambda: [iface()], max_clients=8)
        await server.bind()
        await server.serve()
        try:
            clients = [await asyncio.open_unix_connection(server.path) for _ in range(8)]
            for reader, _ in clients:
                assert (await read_json(reader))["type"] == "network_discovery"
            extra_reader, extra_writer = await asyncio.open_unix_connection(server.path)
            assert await asyncio.wait_for(extra_reader.read(), 5) == b"", "closed at once"
            extra_writer.close()
            assert server.counters["refused_full"] == 1 and server.client_count == 8
            server.broadcast(iface("oat1"))
            for reader, _ in clients:
                assert (await read_json(reader))["data"]["interface"] == "oat1"
            clients[0][1].close()
            for _ in range(50):  # bounded: the server notices the EOF within a few turns
                if server.client_count < 8:
                    break
                await asyncio.sleep(0.05)
            reader, writer = await asyncio.open_unix_connection(server.path)
            assert (await read_json(reader))["type"] == "network_discovery"
            writer.close()
            for _, other in clients[1:]:
                other.close()
        finally:
            await server.stop()

    asyncio.run(scenario())


PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin") or "/usr/bin/python3"
CONNECT = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); " \
          "print(s.recv(64)[:40])"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as other users")
def test_socket_is_open_to_the_agent_group_only() -> None:
    """Mode 0660 with the configured group: a user outside the group cannot connect, a
    member can (the original's 0666 let every local user read and flood it)."""
    gid = 64123  # a group nobody on the test host uses
    # Reachable by the other user: pytest's own temporary tree is private to root.
    with tempfile.TemporaryDirectory(prefix="oat-netmon-") as base:
        os.chmod(base, 0o755)
        _group_scenario(Path(base), gid)


def _group_scenario(tmp_path: Path, gid: int) -> None:
    def connect(groups: list[int]) -> subprocess.CompletedProcess[str]:
        # The system interpreter: the test's virtual environment may be private.
        return subprocess.run([PYTHON, "-c", CONNECT, str(tmp_path / "netmon.sock")],
                              user=65534, group=65534, extra_groups=groups,
                              capture_output=True, text=True, timeout=20)

    async def scenario() -> None:
        server = Server(tmp_path / "netmon.sock", lambda: [iface()], group=gid)
        await server.bind()
        await server.serve()
        try:
            info = server.path.stat()
            assert (info.st_mode & 0o777, info.st_gid) == (0o660, gid)
            outsider = await asyncio.to_thread(connect, [])
            assert "PermissionError" in outsider.stderr, outsider
            member = await asyncio.to_thread(connect, [gid])
            assert member.returncode == 0 and "network_discovery" in member.stdout, member
        finally:
            await server.stop()

    asyncio.run(scenario())
