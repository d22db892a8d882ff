"""Shared pieces of the development cloud tests: a Socket.IO agent client over mTLS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

import aiohttp
import socketio

T = TypeVar("T")

SCENARIO_TIMEOUT = 20.0


def run(coro: Coroutine[Any, Any, T], timeout: float = SCENARIO_TIMEOUT) -> T:
    """Run one async scenario with a hard deadline (no pytest-asyncio here)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def heartbeat_payload(agent_id: str) -> dict[str, Any]:
    """A heartbeat shaped like the protocol's example."""
    return {
        "agent_id": agent_id,
        "cpu_usage": 15.2,
        "memory_usage": 2.5,
        "memory_total": 16.0,
        "disk_usage": 45.8,
        "disk_total": 500.0,
        "uptime": 86400,
        "status": "active",
        "timestamp": "2025-11-20T20:30:45.123456",
    }


@contextlib.asynccontextmanager
async def agent_client(
    url: str,
    ctx: ssl.SSLContext,
    handlers: Mapping[str, Callable[..., Awaitable[Any]]] | None = None,
    *,
    connect: bool = True,
    transports: list[str] | None = None,
) -> AsyncIterator[socketio.AsyncClient]:
    """A python-socketio client configured like the agent's gateway (no reconnection)."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
    client = socketio.AsyncClient(reconnection=False, http_session=session, ssl_verify=True)
    for name, handler in (handlers or {}).items():
        client.on(name, handler)
    try:
        if connect:
            await client.connect(url, wait_timeout=5, transports=transports)
        yield client
    finally:
        if client.connected:
            await client.disconnect()
        await session.close()
