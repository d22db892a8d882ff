"""Errors that more than one process raises or catches.

`AgentError` carries a short kind (the bus error type) and the text the cloud sees; the
executor's own errors derive from it.  `DockerUnavailable` is raised by every engine
handle (`common/enginepool.py`), the executor's and metrics' alike.
"""

from __future__ import annotations


class AgentError(Exception):
    """A failure with a short kind (bus error type) and the text the cloud sees."""

    kind = "internal"

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class DockerUnavailable(AgentError):
    """The engine does not answer (daemon stopped, socket missing, call timed out)."""

    kind = "docker_unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(f"Docker unavailable: {detail}")
        self.detail = detail
