"""Meaning checks for cloud command fields: pure functions, no I/O.

Every check takes an already type-checked value and returns its normalised form, or
raises :class:`Invalid` with a short reason. The contract engine in
:mod:`services.gateway.contracts` adds the field path and the ``Validation error:``
prefix, so the texts here never repeat either.

Limits that keep a hostile payload cheap to reject live here as constants, next to the
checks that use them; the contract table refers to them by name.  The rules of names,
addresses and vNICs, which the executor applies too, live in :mod:`common.vnic_rules`.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from typing import Any

from common.vnic_rules import Check, Invalid

__all__ = ["Check", "Invalid"]  # the names the contract engine takes from here


# --- limits -------------------------------------------------------------------------

API_PATH_MAX = 4096
HEADERS_MAX = 64
HEADER_NAME_MAX = 256
HEADER_VALUE_MAX = 8192
QUERY_PARAMS_MAX = 256
QUERY_VALUE_MAX = 8192
FILES_MAX = 16
FILENAME_MAX = 255
CONTENT_TYPE_MAX = 255
# A PLC program upload is a zip of a few MB; the gateway's raw frame cap is the real bound.
FILE_BASE64_MAX = 64 * 1024 * 1024
JSON_DEPTH_MAX = 32
JSON_NODES_MAX = 100_000
PERIOD_MAX = 64
DEFAULT_STRING_MAX = 256
# msgpack carries integers in 64 bits; anything wider could not cross the bus.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1



# --- names --------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An HTTP header name is an RFC 9110 token.
_TOKEN = re.compile(rf"[!#$%&'*+.^_`|~0-9A-Za-z-]{{1,{HEADER_NAME_MAX}}}")


def plain_text(value: str, _ctx: Mapping[str, Any]) -> str:
    if _CONTROL.search(value):
        raise Invalid("contains control characters")
    return value


# --- numbers ------------------------------------------------------------------------


def correlation_id(value: float, _ctx: Mapping[str, Any]) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid("must be a finite number")
    if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        raise Invalid("is out of the 64-bit integer range")
    return value


def tcp_port(value: float, _ctx: Mapping[str, Any]) -> int:
    if isinstance(value, float):
        if not value.is_integer():
            raise Invalid(f"{value!r} is not a whole number")
        value = int(value)
    if not 1 <= value <= 65535:
        raise Invalid(f"{value} is not a TCP port (1-65535)")
    return value


# --- run_command --------------------------------------------------------------------


def http_method(value: str, _ctx: Mapping[str, Any]) -> str:
    # Unsupported methods are the executor's to answer with an HTTP 400, not ours.
    return value.strip().upper()


def api_path(value: str, _ctx: Mapping[str, Any]) -> str:
    """A path (with optional query) on the runtime; never a URL that names a host."""
    if _CONTROL.search(value):
        raise Invalid("contains control characters")
    if "\\" in value:
        raise Invalid("contains a backslash")
    path = value.strip()
    if path.startswith("//") or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", path):
        raise Invalid("must be a path on the runtime, not a URL with a scheme or host")
    route = path.split("?", 1)[0].split("#", 1)[0]
    segments = re.split(r"/|%2[fF]", route)
    if any(re.fullmatch(r"(?:\.|%2[eE]){2}", seg) for seg in segments):
        raise Invalid("must not contain '..' segments")
    # A leading slash keeps `https://<ip>:<port>` + path from ever reading as userinfo.
    return path if path.startswith("/") else "/" + path


def headers(value: Mapping[str, Any], _ctx: Mapping[str, Any]) -> dict[str, str]:
    if len(value) > HEADERS_MAX:
        raise Invalid(f"has more than {HEADERS_MAX} headers")
    out: dict[str, str] = {}
    for name, raw in value.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise Invalid(f"{str(name)[:40]!r} is not a valid header name")
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise Invalid(f"value of header {name!r} must be a string")
        text = raw if isinstance(raw, str) else str(raw)
        if len(text) > HEADER_VALUE_MAX:
            raise Invalid(f"value of header {name!r} is longer than {HEADER_VALUE_MAX}")
        if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", text):
            raise Invalid(f"value of header {name!r} contains control characters")
        out[name] = text
    return out


def _query_scalar(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= QUERY_VALUE_MAX
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (bool, int))


def query_params(value: Mapping[str, Any], _ctx: Mapping[str, Any]) -> dict[str, Any]:
    if len(value) > QUERY_PARAMS_MAX:
        raise Invalid(f"has more than {QUERY_PARAMS_MAX} entries")
    out: dict[str, Any] = {}
    for key, raw in value.items():
        if not isinstance(key, str) or len(key) > DEFAULT_STRING_MAX:
            raise Invalid(f"keys must be strings of at most {DEFAULT_STRING_MAX} characters")
        if isinstance(raw, list):
            if len(raw) > QUERY_PARAMS_MAX or not all(_query_scalar(v) for v in raw):
                raise Invalid(f"value of {key[:40]!r} must be a scalar or a short list of scalars")
            out[key] = list(raw)
        elif _query_scalar(raw):
            out[key] = raw
        else:
            raise Invalid(f"value of {key[:40]!r} must be a scalar or a short list of scalars")
    return out


def json_body(value: Any, _ctx: Mapping[str, Any]) -> Any:
    """Any JSON value, bounded in depth and node count, and encodable on the bus."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > JSON_NODES_MAX:
            raise Invalid(f"has more than {JSON_NODES_MAX} values")
        if depth > JSON_DEPTH_MAX:
            raise Invalid(f"is nested deeper than {JSON_DEPTH_MAX} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise Invalid("has a non-string object key")
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise Invalid("contains a non-finite number")
        elif isinstance(item, int) and not isinstance(item, bool):
            if not INT_MIN <= item <= INT_MAX:
                raise Invalid("contains an integer out of the 64-bit range")
        elif item is not None and not isinstance(item, (str, bool)):
            raise Invalid(f"contains a non-JSON value of type {type(item).__name__}")
    return value


def _file_entry(field: str, entry: Any) -> dict[str, str]:
    if not isinstance(entry, dict):
        raise Invalid(f"{field!r} must be an object with filename and content_base64")
    name = entry.get("filename")
    content = entry.get("content_base64")
    ctype = entry.get("content_type")
    if not isinstance(name, str) or not name.strip() or len(name) > FILENAME_MAX:
        raise Invalid(f"{field!r} needs a filename of 1-{FILENAME_MAX} characters")
    if _CONTROL.search(name):
        raise Invalid(f"filename of {field!r} contains control characters")
    if not isinstance(content, str):
        raise Invalid(f"{field!r} needs content_base64 as a string")
    if len(content) > FILE_BASE64_MAX:
        raise Invalid(f"content_base64 of {field!r} is longer than {FILE_BASE64_MAX}")
    try:
        base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"content_base64 of {field!r} is not valid base64") from None
    if ctype is None:
        ctype = "application/octet-stream"
    if not isinstance(ctype, str) or len(ctype) > CONTENT_TYPE_MAX or _CONTROL.search(ctype):
        raise Invalid(f"content_type of {field!r} must be a short string")
    return {"filename": name, "content_base64": content, "content_type": ctype}


def files(value: Mapping[str, Any], _ctx: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    if len(value) > FILES_MAX:
        raise Invalid(f"has more than {FILES_MAX} files")
    out = {}
    for field, entry in value.items():
        if not isinstance(field, str) or not field or len(field) > DEFAULT_STRING_MAX:
            raise Invalid("has an empty, overlong or non-string form field name")
        if _CONTROL.search(field):
            raise Invalid("has a form field name with control characters")
        out[field] = _file_entry(field, entry)
    return out
