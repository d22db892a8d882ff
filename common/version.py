"""The agent's version, reported in liveness beats and the cloud heartbeat."""

__version__ = "0.1.0"
