"""The JSON module the Socket.IO client decodes packets with.

Socket.IO reads a packet's ack id before its JSON, so a command whose JSON cannot be
decoded (nested deeper than Python's recursion allows, an integer of hundreds of digits)
or is larger than the gateway accepts would otherwise vanish inside the library: no
handler call, no ack, and the cloud waits for its timeout.  Here such an event array is
replaced by `[<event name>, Undecodable(reason)]`, so the handler still runs and acks
with a validation error.  Everything else behaves like the library's own module.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from engineio import json as _library_json

from common import wire

# The bus carries a command's params in one message; a packet larger than that could
# never be forwarded, so it is refused before parsing.
MAX_PACKET_CHARS = wire.MAX_MESSAGE_BYTES - 64 * 1024

# The start of a Socket.IO event array: ["<event name>", ...
_EVENT_HEAD = re.compile(r'\s*\[\s*("(?:[^"\\]|\\.){0,512}")')

JSONDecodeError = json.JSONDecodeError
dumps = json.dumps


@dataclass(frozen=True)
class Undecodable:
    """Stands for a command payload the gateway could not decode; `reason` says why."""

    reason: str


def _event_name(text: str) -> str | None:
    match = _EVENT_HEAD.match(text, 0, 600)
    if match is None:
        return None
    try:
        name = json.loads(match.group(1))
    except ValueError:
        return None
    return name if isinstance(name, str) else None


def loads(text: str | bytes, *args: Any, **kwargs: Any) -> Any:
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8", "replace")
    if len(text) > MAX_PACKET_CHARS:
        event = _event_name(text)
        if event is not None:
            return [event, Undecodable(f"payload is larger than {MAX_PACKET_CHARS} bytes")]
    try:
        return _library_json.loads(text, *args, **kwargs)
    except RecursionError:
        reason = "payload is nested too deeply to decode"
    except ValueError as exc:
        reason = f"payload is not valid JSON ({str(exc)[:80]})"
    event = _event_name(text)
    if event is None:
        raise ValueError(reason)
    return [event, Undecodable(reason)]
