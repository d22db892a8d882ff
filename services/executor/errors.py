"""Typed errors of the executor, caught at the request edges (`service.py`)."""

from __future__ import annotations

import docker.errors

from common.errors import AgentError, DockerUnavailable

# The executor's errors are the agent's kinded errors; DockerUnavailable is shared with
# metrics, so both live in common/errors.py.
ExecutorError = AgentError

__all__ = ["AgentError", "Busy", "Conflict", "DetectionUnavailable", "DockerUnavailable",
           "ExecutorError", "InvalidRequest", "NotManaged", "OperationFailed", "error_text"]


class InvalidRequest(ExecutorError):
    """The request cannot be carried out as given; nothing was changed."""

    kind = "invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(f"Validation error: {reason}")
        self.reason = reason


class Busy(ExecutorError):
    kind = "busy"

    def __init__(self, device: str, operation: str) -> None:
        super().__init__(f"Container {device} already has a {operation} operation in progress")


class Conflict(ExecutorError):
    """The request clashes with what exists (a name taken, an object not ours)."""

    kind = "conflict"


class NotManaged(Conflict):
    """The named container exists but this agent does not own it."""

    def __init__(self, device: str, action: str) -> None:
        super().__init__(f"Container {device} is not managed by this agent; refusing to "
                         f"{action} it")


class OperationFailed(ExecutorError):
    """A step of an operation failed; the text says which and why."""

    kind = "failed"


class DetectionUnavailable(OperationFailed):
    """A vNIC needs the host's interface cache, and the network monitor has not answered."""


def error_text(exc: BaseException) -> str:
    """The text an operation's failure is reported with."""
    if isinstance(exc, ExecutorError):
        return exc.text
    if isinstance(exc, docker.errors.APIError):
        return f"Docker error: {exc.explanation or exc}"
    return f"{type(exc).__name__}: {exc}"
