"""The local development cloud: a stand-in for the Autonomy Edge Cloud.

It owns a small CA, the provisioning endpoints an installer calls (orchestrator
id, certificate enrolment), a Socket.IO server that only admits agents with a
client certificate it issued, and a loopback admin interface that sends
commands to agents and reports their heartbeats. It never talks to Docker.
"""

from __future__ import annotations

from devcloud.errors import (
    AckTimeout,
    AgentNotConnected,
    DevCloudError,
    PkiError,
    ProvisioningError,
)

__all__ = ["AckTimeout", "AgentNotConnected", "DevCloudError", "PkiError", "ProvisioningError"]
