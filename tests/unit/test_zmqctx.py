"""The tests' ZeroMQ context: a socket left open fails the test that left it."""

from __future__ import annotations

import pytest
import zmq

from testkit.zmqctx import LeakedSockets, SyncTrackingContext, TrackingContext, finish


def test_closed_sockets_terminate_quietly() -> None:
    ctx = TrackingContext()
    sock = ctx.socket(zmq.DEALER)
    sock.close(linger=0)
    finish(ctx, timeout=2)
    assert ctx.closed


def test_a_socket_left_open_is_reported_and_closed() -> None:
    ctx = TrackingContext()
    left = ctx.socket(zmq.ROUTER)
    left.bind("inproc://leak")
    ctx.socket(zmq.PUB).close(linger=0)
    with pytest.raises(LeakedSockets, match=r"1 ZeroMQ socket\(s\) left open by the test: ROUTER"):
        finish(ctx, timeout=2)
    assert left.closed and ctx.closed


def test_the_blocking_context_reports_leaks_too() -> None:
    ctx = SyncTrackingContext()
    ctx.socket(zmq.SUB)
    with pytest.raises(LeakedSockets, match="SUB"):
        finish(ctx, timeout=2)
    assert ctx.closed
