"""Shared library of the orchestrator agent: config, logging, the bus and its wire format."""
