"""Builders for the acks the gateway returns to the cloud.

Every ack is one JSON object whose first two keys are ``action`` (the topic) and
``correlation_id`` (as received, see ``contracts.echo_correlation_id``, else ``null``); the
rest follows in the order the reply gave it. Handlers build acks only through these
functions, so that shape is written once.

Shapes::

    reply:       {"action", "correlation_id", **reply}
    error:       {"action", "correlation_id", "status": "error", "error": <text>[, "field"]}
    validation:  the error ack of a ContractError, its text verbatim
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.gateway.contracts import echo_correlation_id, echo_value
from services.gateway.schema import ContractError

_HEAD = ("action", "correlation_id")


def wrap_reply(topic: str, correlation_id: Any, reply: Mapping[str, Any]) -> dict[str, Any]:
    """Put ``action`` and ``correlation_id`` first; whatever the reply said about either
    is overridden, since only the gateway knows which request this answers."""
    ack: dict[str, Any] = {
        "action": topic,
        "correlation_id": echo_value(correlation_id),
    }
    ack.update((key, value) for key, value in reply.items() if key not in _HEAD)
    return ack


def error_ack(
    topic: str,
    correlation_id: Any,
    error: str,
    field: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """``status: error`` with a human-readable ``error``; ``extra`` keys follow it."""
    reply: dict[str, Any] = {"status": "error", "error": error}
    if field is not None:
        reply["field"] = field
    reply.update(extra)
    return wrap_reply(topic, correlation_id, reply)


def validation_ack(topic: str, correlation_id: Any, exc: ContractError) -> dict[str, Any]:
    return error_ack(topic, correlation_id, exc.text, exc.field)


def validation_ack_for(topic: str, payload: Any, exc: ContractError) -> dict[str, Any]:
    """The validation ack of a raw payload, whatever its shape."""
    return validation_ack(topic, echo_correlation_id(payload), exc)
