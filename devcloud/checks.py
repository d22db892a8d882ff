"""What the cloud expects of an agent's messages, checked and recorded, never enforced.

The development cloud accepts whatever an agent sends (as the real one does),
but it notes every departure from PROTOCOL.md so that end-to-end tests can
assert there was none.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

HEARTBEAT_NUMBERS = (
    "cpu_usage",
    "memory_usage",
    "memory_total",
    "disk_usage",
    "disk_total",
    "uptime",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_iso(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def heartbeat_problems(payload: Any, agent_id: str) -> list[str]:
    """Departures of a ``heartbeat`` payload from the protocol (empty when it conforms)."""
    if not isinstance(payload, dict):
        return [f"heartbeat payload is {type(payload).__name__}, not an object"]
    problems: list[str] = []
    if payload.get("agent_id") != agent_id:
        problems.append(
            f"agent_id {payload.get('agent_id')!r} is not the certificate CN {agent_id!r}"
        )
    for key in HEARTBEAT_NUMBERS:
        if key not in payload:
            problems.append(f"missing {key}")
        elif not _is_number(payload[key]):
            problems.append(f"{key} is not a number: {payload[key]!r}")
    if not isinstance(payload.get("status"), str):
        problems.append("status is missing or not a string")
    if not _is_iso(payload.get("timestamp")):
        problems.append(f"timestamp is not an ISO-8601 datetime: {payload.get('timestamp')!r}")
    return problems


def ack_problems(topic: str, sent: Any, ack_args: tuple[Any, ...]) -> list[str]:
    """Departures of a command's ack from "one JSON object with action and correlation_id"."""
    if len(ack_args) != 1:
        return [f"ack carries {len(ack_args)} values, expected exactly one object"]
    ack = ack_args[0]
    if not isinstance(ack, dict):
        return [f"ack is {type(ack).__name__}, not an object"]
    problems: list[str] = []
    if ack.get("action") != topic:
        problems.append(f"ack action {ack.get('action')!r} is not the topic {topic!r}")
    if "correlation_id" not in ack:
        problems.append("ack has no correlation_id key")
    else:
        expected = sent.get("correlation_id") if isinstance(sent, dict) else None
        # An id the agent rejects as "not a number" may come back as null.
        tolerated = {None} if not _is_number(expected) else set()
        if ack["correlation_id"] != expected and ack["correlation_id"] not in tolerated:
            problems.append(
                f"ack correlation_id {ack['correlation_id']!r} does not echo {expected!r}"
            )
    return problems
