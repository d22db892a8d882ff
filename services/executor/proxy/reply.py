"""Pure HTTP reply shaping for the run_command proxy (no I/O).

How a runtime's reply becomes the ack's ``http_response``; the request side is
:mod:`services.executor.proxy.http`.

* Reply ``body``: parsed JSON whenever a textual reply parses as JSON (the runtime
  answers JSON, sometimes a bare JSON string), else text decoded with the declared
  charset (UTF-8 by default, undecodable bytes replaced). A binary reply becomes
  ``{"content_base64": "...", "size": N}`` — the same key the cloud uses for files.
* Reply ``headers``: one string per name (repeated headers joined with ``", "``),
  hop-by-hop headers left out. ``content_type`` is the reply's Content-Type header as
  received (``""`` when absent).
"""

from __future__ import annotations

import base64
import codecs
import json
from collections.abc import Iterable
from typing import Any

from services.executor.proxy.http import HOP_BY_HOP, parse_content_type

__all__ = ["decode_body", "error_ack", "response_ack", "response_headers"]

# Deeper replies are returned as text: the bus codec refuses very deep nesting.
_MAX_JSON_DEPTH = 64
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

_TEXTUAL_APPLICATION = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/ecmascript",
        "application/x-www-form-urlencoded",
        "application/yaml",
        "application/x-yaml",
        "application/x-ndjson",
        "application/graphql",
    }
)


def _is_textual_mime(mime: str) -> bool:
    return (
        mime.startswith("text/")
        or mime in _TEXTUAL_APPLICATION
        or mime.endswith("+json")
        or mime.endswith("+xml")
    )


def response_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Reply headers as one string per name; hop-by-hop headers left out."""
    out: dict[str, str] = {}
    seen: dict[str, str] = {}  # lower-case name -> the spelling first seen
    for name, value in items:
        if name.lower() in HOP_BY_HOP:
            continue
        key = seen.setdefault(name.lower(), name)
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _bounded_int(text: str) -> int:
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise ValueError("integer out of the 64-bit range")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _too_deep(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_JSON_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


def _parse_json(text: str) -> tuple[bool, Any]:
    """``(True, value)`` when ``text`` is JSON the bus can carry, else ``(False, None)``."""
    stripped = text.strip()
    if not stripped:
        return False, None
    try:
        value = json.loads(stripped, parse_int=_bounded_int, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return False, None
    if _too_deep(value):
        return False, None
    return True, value


def _charset(name: str | None) -> str:
    if name:
        try:
            return codecs.lookup(name).name
        except LookupError:
            pass
    return "utf-8"


def decode_body(raw: bytes, content_type: str | None) -> Any:
    """The ack's ``body`` for a reply's bytes and Content-Type (see module docstring)."""
    if not raw:
        return ""
    mime, charset = parse_content_type(content_type)
    if mime and not _is_textual_mime(mime):
        return {"content_base64": base64.b64encode(raw).decode("ascii"), "size": len(raw)}
    if not mime and charset is None:
        # Undeclared: text only when it is valid UTF-8.
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"content_base64": base64.b64encode(raw).decode("ascii"), "size": len(raw)}
    else:
        text = raw.decode(_charset(charset), errors="replace")
    ok, value = _parse_json(text)
    return value if ok else text


def response_ack(
    status_code: int, headers: dict[str, str], body: Any, content_type: str
) -> dict[str, Any]:
    """The run_command ack body for a reply that reached us."""
    ok = 200 <= status_code < 400
    return {
        "status": "success" if ok else "error",
        "http_response": {
            "status_code": status_code,
            "headers": headers,
            "body": body,
            "ok": ok,
            "content_type": content_type,
        },
    }


def error_ack(status_code: int, message: str, **extra: Any) -> dict[str, Any]:
    """An ``http_response`` made here (no reply, or one we refused), body ``{"error"}``."""
    return response_ack(
        status_code,
        {"Content-Type": "application/json"},
        {"error": message, **extra},
        "application/json",
    )
