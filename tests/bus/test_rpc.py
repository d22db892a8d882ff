"""Request/reply over real ipc sockets and real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from common import wire
from common.bus import Endpoints, RpcClient, RpcError, RpcTimeout, Subscriber
from testkit.helpers import agent_env, async_wait_for, start_module, stop_process

MODULE = "tests.bus.echo_service"


@pytest.fixture
def echo_proc(base_dir: Path):
    env = agent_env(base_dir)
    proc = start_module(MODULE, env, base_dir / "echo.log")
    yield proc, env
    stop_process(proc)


async def _client(zctx: zmq.asyncio.Context, base_dir: Path, timeout: float = 3.0) -> RpcClient:
    return RpcClient(zctx, Endpoints(base_dir / "run").rpc("echo"), wire.Stamper("test"), timeout)


async def _ready(client: RpcClient) -> None:
    async def pinged() -> bool:
        try:
            return bool(await client.call("ping", timeout=0.5))
        except RpcTimeout:
            return False
    await async_wait_for(pinged, 15, what="echo service to answer ping")


async def _slow_call_in_flight(client: RpcClient) -> None:
    async def sleeping() -> bool:
        return bool(await client.call("sleeping", timeout=1))
    await async_wait_for(sleeping, 5, what="the slow call to reach the server")


async def test_calls_and_error_replies(echo_proc, base_dir, zctx) -> None:
    client = await _client(zctx, base_dir)
    await _ready(client)
    assert await client.call("echo", {"a": [1, "b"]}) == {"a": [1, "b"]}
    with pytest.raises(RpcError) as refused:
        await client.call("refuse")
    assert (refused.value.kind, refused.value.message) == ("refused", "not today")
    with pytest.raises(RpcError) as crashed:
        await client.call("crash")
    assert crashed.value.kind == "internal" and "ZeroDivisionError" in crashed.value.message
    with pytest.raises(RpcError) as unknown:
        await client.call("no_such_method")
    assert unknown.value.kind == "unknown_method"
    # The server is still serving after all of that.
    assert await client.call("echo", {"n": 1}) == {"n": 1}
    client.close()


async def test_slow_handler_does_not_delay_fast_one(echo_proc, base_dir, zctx) -> None:
    client = await _client(zctx, base_dir)
    await _ready(client)
    slow = asyncio.create_task(client.call("slow", {"seconds": 1.5}))
    await _slow_call_in_flight(client)
    started = time.monotonic()
    assert await client.call("echo", {"fast": True}) == {"fast": True}
    assert time.monotonic() - started < 0.5
    assert not slow.done()
    assert await slow == "slept"
    client.close()


async def test_many_calls_in_flight(echo_proc, base_dir, zctx) -> None:
    client = await _client(zctx, base_dir)
    await _ready(client)
    results = await asyncio.gather(*(client.call("echo", {"i": i}) for i in range(50)))
    assert results == [{"i": i} for i in range(50)]
    client.close()


async def test_server_killed_mid_request_then_restarted(echo_proc, base_dir, zctx) -> None:
    proc, env = echo_proc
    client = await _client(zctx, base_dir, timeout=2.0)
    await _ready(client)
    outstanding = asyncio.create_task(client.call("slow", {"seconds": 30}, timeout=2.0))
    await _slow_call_in_flight(client)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    started = time.monotonic()
    with pytest.raises(RpcTimeout):
        await outstanding
    assert time.monotonic() - started < 2.5  # within its deadline, not later
    # While the server is gone, calls fail in time and are not parked for later.
    with pytest.raises(RpcTimeout):
        await client.call("echo", {"while": "down"}, timeout=0.5)
    restarted = start_module(MODULE, env, base_dir / "echo2.log")
    try:
        await _ready(client)
        for i in range(100):
            assert await client.call("echo", {"i": i}) == {"i": i}
    finally:
        stop_process(restarted)
    client.close()


async def test_garbage_requests_are_dropped_and_server_keeps_serving(echo_proc, base_dir,
                                                                     zctx) -> None:
    client = await _client(zctx, base_dir)
    await _ready(client)
    raw = zctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(Endpoints(base_dir / "run").rpc("echo"))
    for frames in ([b"only-one"], [b"t", b"\xc1", b"\xc1"], [b"t", b"x", b"y", b"z"]):
        await raw.send_multipart(frames)
    # A frame over the socket's size cap makes ZeroMQ drop the connection, not the server.
    await raw.send_multipart([b"t", b"h", b"x" * (wire.MAX_MESSAGE_BYTES + 8192)])
    raw.close()
    assert await client.call("echo", {"still": "alive"}) == {"still": "alive"}
    sub = Subscriber(zctx, [Endpoints(base_dir / "run").pub("echo")], ["svc.echo.alive"])
    # The server reads its peers fairly, not in send order: wait for a beat that has
    # counted the garbage.
    dropped = 0
    deadline = time.monotonic() + 10
    while dropped < 2 and time.monotonic() < deadline:
        envelope = await sub.recv(5)
        assert envelope is not None
        counters = envelope.body["counters"]
        dropped = sum(v for k, v in counters.items() if k.startswith("rpc_dropped_"))
    assert dropped >= 2
    sub.close()
    client.close()


async def test_expired_request_is_not_served(echo_proc, base_dir, zctx) -> None:
    client = await _client(zctx, base_dir)
    await _ready(client)
    # A deadline already in the past: the server refuses rather than doing late work.
    stamper = wire.Stamper("raw")
    raw = zctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(Endpoints(base_dir / "run").rpc("echo"))
    from common.messages import Reply, Request

    request = Request("echo", {"late": True}, time.time() - 1)
    await raw.send_multipart(wire.encode(request.topic(), stamper.header(request.topic()),
                                         request.to_body()))
    assert await raw.poll(3000)
    reply = Reply.from_body(wire.decode(await raw.recv_multipart()).body)
    assert not reply.ok and reply.error and reply.error["type"] == "expired"
    raw.close()
    client.close()


async def test_sigterm_is_a_clean_stop(echo_proc, base_dir, zctx) -> None:
    proc, _ = echo_proc
    client = await _client(zctx, base_dir)
    await _ready(client)
    sub = Subscriber(zctx, [Endpoints(base_dir / "run").pub("echo")], ["svc.echo."])
    # A beat received proves the subscription is live before the stop is triggered.
    first = await sub.recv(5)
    assert first is not None and first.topic == "svc.echo.alive"
    proc.terminate()
    assert await asyncio.to_thread(proc.wait, 10) == 0
    topics = []
    while (envelope := await sub.recv(0.5)) is not None:
        topics.append((envelope.topic, envelope.body.get("reason")))
    assert ("svc.echo.stopping", "signal") in topics
    sub.close()
    client.close()
