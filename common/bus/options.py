"""Socket options: the one place where a bus socket is tuned.

Every socket drops rather than lingers at close, has bounded queues (high-water marks),
refuses messages larger than the codec allows, and reconnects by itself with a capped
back-off.  Request clients also set `ZMQ_IMMEDIATE`, so a request is never parked in a
queue for a server that is not there (it would otherwise run long after its caller gave
up).
"""

from __future__ import annotations

from typing import Any

import zmq

from common import wire

PUB_HWM = 1000
SUB_HWM = PUB_HWM * 10
RPC_HWM = 1000


def tune(sock: zmq.Socket[Any], hwm: int, *, immediate: bool = False) -> None:
    """Set linger, high-water marks, maximum message size, reconnect intervals and,
    for request clients, `immediate`."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE_BYTES + 4096)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    if immediate:
        sock.setsockopt(zmq.IMMEDIATE, 1)
