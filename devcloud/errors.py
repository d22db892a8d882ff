"""Typed errors of the development cloud, caught at its edges (HTTP handlers, CLI)."""

from __future__ import annotations


class DevCloudError(Exception):
    """Base of every error the development cloud raises on purpose."""


class PkiError(DevCloudError):
    """A key, certificate or CSR could not be made, read or accepted."""


class ProvisioningError(DevCloudError):
    """An id request or an enrolment was refused.

    ``status`` is the HTTP status the provisioning endpoint answers with.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class AgentNotConnected(DevCloudError):
    """A command was addressed to an agent that has no live connection."""


class AckTimeout(DevCloudError):
    """The agent did not acknowledge a command within the deadline."""


class AdminError(DevCloudError):
    """The admin interface answered with an error (client side)."""
