"""Unix stream socket server: JSON lines to a bounded number of clients.

Each client gets the discovery line first, then every change line, in order (the
snapshot is queued in the same loop turn the client is registered, so no change can
slip between them). Every client has its own bounded queue and writer task: a client
that stops reading only fills its own queue, and is dropped when that overflows, so it
never delays the others.

The lines are those of `common/netmon_proto.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import netmon_proto
from services.netmon.model import Iface, utc_now_iso

log = logging.getLogger(__name__)

DEFAULT_CLIENT_QUEUE = 256
# Real clients: the agent's netbridge, a healthcheck, an operator's probe.  More at once
# is a flood; each extra connection is closed at once (counted, logged).
DEFAULT_MAX_CLIENTS = 8
# Owner and group only: the agent's processes reach it through the group (docs/netmon.md).
SOCKET_MODE = 0o660
_PROBE_TIMEOUT = 1.0
_READ_CHUNK = 4096

InterfacesProvider = Callable[[], list[Iface]]
SerialProvider = Callable[[], list[dict[str, Any]]]


class ServerError(Exception):
    """The server cannot take its socket path."""


class AlreadyRunning(ServerError):
    """Another live netmon answers on the socket path."""


def discovery_line(interfaces: list[Iface]) -> bytes:
    return netmon_proto.discovery_line([i.to_wire() for i in interfaces], utc_now_iso())


def change_line(iface: Iface) -> bytes:
    return netmon_proto.change_line(iface.to_wire())


def claim_socket_path(path: Path) -> None:
    """Make ``path`` free for binding: remove a stale socket file, refuse when a live
    server answers on it or when something that is not a socket sits there."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ServerError(f"{path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_PROBE_TIMEOUT)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ServerError(f"cannot probe {path}: {exc}") from exc
        log.info("removing stale socket file %s", path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    finally:
        probe.close()
    raise AlreadyRunning(f"another netmon is serving on {path}")


class _Client:
    def __init__(
        self, writer: asyncio.StreamWriter, queue_size: int, peer: str
    ) -> None:
        self.writer = writer
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_size)
        self.peer = peer
        self.tasks: list[asyncio.Task[None]] = []


class Server:
    def __init__(
        self,
        path: Path,
        interfaces: InterfacesProvider,
        *,
        client_queue: int = DEFAULT_CLIENT_QUEUE,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        group: int | None = None,
        serial: SerialProvider | None = None,
        links: SerialProvider | None = None,
    ) -> None:
        self.path = path
        self._interfaces = interfaces
        self._serial = serial
        self._links = links
        self._client_queue = client_queue
        self._max_clients = max_clients
        self._group = group
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[_Client] = set()
        self._inode: int | None = None
        self._seq = 0
        self.counters: dict[str, int] = {
            "connected": 0,
            "dropped_slow": 0,
            "refused_full": 0,
            "lines_queued": 0,
        }

    @property
    def client_count(self) -> int:
        return len(self._clients)

    async def bind(self) -> None:
        """Take the socket path without accepting yet: a second instance fails here,
        before any netlink work, and early clients wait in the backlog until
        ``serve`` (when there is a discovery to give them)."""
        claim_socket_path(self.path)
        self._server = await asyncio.start_unix_server(
            self._on_connect, path=str(self.path), start_serving=False
        )
        # The original used 0666; ours is open to the agent's group only (docs/netmon.md).
        if self._group is not None:
            os.chown(self.path, -1, self._group)
        os.chmod(self.path, SOCKET_MODE)
        self._inode = self.path.stat().st_ino

    async def serve(self) -> None:
        assert self._server is not None, "bind() first"
        await self._server.start_serving()
        log.info("serving on %s", self.path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for client in list(self._clients):
            self._drop(client)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        # Only remove the file if it is still ours (a successor may have replaced it).
        with contextlib.suppress(FileNotFoundError):
            if self._inode is not None and self.path.stat().st_ino == self._inode:
                self.path.unlink()

    def broadcast(self, iface: Iface) -> None:
        line = change_line(iface)
        for client in list(self._clients):
            self._enqueue(client, line)

    def broadcast_serial(self, devices: list[dict[str, Any]]) -> None:
        line = netmon_proto.serial_line(devices, utc_now_iso())
        for client in list(self._clients):
            self._enqueue(client, line)

    def broadcast_links(self, links: list[dict[str, Any]]) -> None:
        line = netmon_proto.links_line(links, utc_now_iso())
        for client in list(self._clients):
            self._enqueue(client, line)

    def _enqueue(self, client: _Client, line: bytes) -> None:
        try:
            client.queue.put_nowait(line)
            self.counters["lines_queued"] += 1
        except asyncio.QueueFull:
            self.counters["dropped_slow"] += 1
            log.warning("client %s is not reading; dropping it", client.peer)
            self._drop(client)

    async def _on_connect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._seq += 1
        if len(self._clients) >= self._max_clients:
            self.counters["refused_full"] += 1
            log.warning("refusing netmon client #%d: %d clients already connected (the "
                        "maximum)", self._seq, len(self._clients))
            writer.transport.abort()
            return
        client = _Client(writer, self._client_queue, f"#{self._seq}")
        self._clients.add(client)
        self.counters["connected"] += 1
        # Queued synchronously with registration: the snapshot and the changes that
        # follow form one consistent stream.
        self._enqueue(client, discovery_line(self._interfaces()))
        # Serial adapters follow only when there are any: a connection's discovery means
        # "no adapters" until a serial line says otherwise (and old readers see no change
        # on the many hosts without adapters).
        devices = self._serial() if self._serial is not None else []
        if devices:
            self._enqueue(client, netmon_proto.serial_line(devices, utc_now_iso()))
        links = self._links() if self._links is not None else []
        if links:  # likewise: "no up ethernet links" until a links line says otherwise
            self._enqueue(client, netmon_proto.links_line(links, utc_now_iso()))
        log.debug("client %s connected (%d total)", client.peer, len(self._clients))
        client.tasks = [
            asyncio.create_task(self._write_loop(client)),
            asyncio.create_task(self._read_loop(client, reader)),
        ]

    async def _write_loop(self, client: _Client) -> None:
        try:
            while True:
                line = await client.queue.get()
                client.writer.write(line)
                await client.writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("client %s write failed: %s", client.peer, exc)
        finally:
            self._drop(client)

    async def _read_loop(self, client: _Client, reader: asyncio.StreamReader) -> None:
        """Clients have nothing to say; reading only notices their going away early.
        A Unix socket peer that exits always yields EOF, so this wait cannot hang on a
        dead client."""
        try:
            while await reader.read(_READ_CHUNK):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        if client not in self._clients:
            return
        self._clients.discard(client)
        current = asyncio.current_task()
        for task in client.tasks:
            if task is not current:
                task.cancel()
        client.writer.transport.abort()
        log.debug("client %s gone (%d left)", client.peer, len(self._clients))
