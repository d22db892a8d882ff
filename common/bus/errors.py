"""The bus's typed errors and the per-process event counters."""

from __future__ import annotations

from collections import Counter


class BusError(Exception):
    """Base of the bus's typed errors."""


class RpcTimeout(BusError):
    """No reply before the deadline: the server is down, slow, or unreachable.

    `delivered` is False when the request never left the socket (no server connected),
    so the caller knows for sure that nothing ran."""

    def __init__(self, message: str, delivered: bool = True) -> None:
        super().__init__(message)
        self.delivered = delivered


class RpcError(BusError):
    """The server answered with an error reply."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class RemoteError(Exception):
    """Raise in a handler to send an error reply with a chosen type and message; any
    other exception becomes an `internal` error reply and is logged as a bug."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Counters(Counter[str]):
    """Named event counts of one process, reported in its liveness beat."""
