"""Pure HTTP request shaping for the run_command proxy (no I/O).

Which caller headers are forwarded, how ``params`` become a query, and how ``data`` /
``files`` become a body (JSON, form, raw text or multipart). The reply side is
:mod:`services.executor.proxy.reply`.

Decisions:

* ``data`` is sent as JSON unless the caller gives a non-JSON ``Content-Type``. Then a
  dict (or a list of ``[key, value]`` pairs) is URL-encoded, a string is sent as is
  (UTF-8), anything else is refused. ``multipart/form-data`` without files builds a
  multipart body from the ``data`` fields.
* Form and query values: ``None`` is left out, booleans are ``true``/``false``,
  numbers their JSON text, lists repeat the key, objects are sent as JSON text.
* With ``files``, ``data`` (an object) supplies extra form fields; the caller's
  ``Content-Type`` is dropped because the boundary must be ours.
* Every text that becomes part of a header line — the caller's header names and
  values, multipart field names, file names and content types — is checked here and
  refused with 400 when it holds a control character (CR and LF above all: they would
  start a header of the caller's choosing).  Header names must be RFC 9110 tokens.
  The gateway checks the same; the executor does not rely on it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "HOP_BY_HOP",
    "SUPPORTED_METHODS",
    "Body",
    "FormPart",
    "RequestBuildError",
    "build_body",
    "checked_headers",
    "forward_headers",
    "query_pairs",
]

SUPPORTED_METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})

# RFC 9110 §7.6.1 connection-specific fields, plus the pre-standard ones still seen.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the transport, never by the caller: the target, the framing, the encodings we
# can decode (and cap), and the interim-response dance.
_NEVER_FORWARDED = HOP_BY_HOP | {"host", "content-length", "accept-encoding", "expect"}


class RequestBuildError(ValueError):
    """The command's fields cannot be turned into an HTTP request (answered with 400)."""


# RFC 9110 §5.6.2 token; a field value may hold visible characters, spaces and tabs.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_TAB = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _line_text(what: str, value: str, *, tab: bool = False) -> str:
    """``value`` when it can sit in a header line, else :class:`RequestBuildError`."""
    if (_CONTROL_BUT_TAB if tab else _CONTROL).search(value):
        raise RequestBuildError(f"{what} must not contain control characters (CR, LF, ...)")
    return value


def checked_headers(headers: Any) -> dict[str, str]:
    """The caller's headers as ``{name: value}`` strings, or :class:`RequestBuildError`."""
    if not isinstance(headers, Mapping):
        raise RequestBuildError("headers must be an object")
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise RequestBuildError(f"header name {str(name)[:64]!r} is not a valid token")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise RequestBuildError(f"header {name!r} must have a string value")
        out[name] = _line_text(f"header {name!r}", str(value), tab=True)
    return out


@dataclass(frozen=True)
class FormPart:
    """One multipart field: a plain value (``filename`` None) or a file."""

    name: str
    value: bytes | str
    filename: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Body:
    """What to send: raw bytes, or multipart parts (the transport adds the boundary)."""

    raw: bytes | None = None
    parts: tuple[FormPart, ...] = ()
    multipart: bool = False
    # Content-Type to set when the caller gave none (multipart sets its own).
    default_content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


# -- helpers -----------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def parse_content_type(value: str | None) -> tuple[str, str | None]:
    """``(mime type lower-cased, charset or None)`` of a Content-Type value."""
    if not value:
        return "", None
    mime, _, rest = value.partition(";")
    charset = None
    for param in rest.split(";"):
        key, _, val = param.strip().partition("=")
        if key.strip().lower() == "charset" and val.strip():
            charset = val.strip().strip('"').strip("'") or None
    return mime.strip().lower(), charset


def _is_json_mime(mime: str) -> bool:
    return mime == "application/json" or mime.endswith("+json")


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _field_values(value: Any) -> list[str]:
    """A form or query value as the list of strings sent under its key."""
    if value is None:
        return []
    if isinstance(value, list):
        return [_scalar_text(item) for item in value if item is not None]
    return [_scalar_text(value)]


def _pairs(data: Any) -> list[tuple[str, str]] | None:
    """``data`` as form pairs, or None when it is neither an object nor a pair list."""
    if isinstance(data, dict):
        return [(str(key), text) for key, value in data.items() for text in _field_values(value)]
    if isinstance(data, list) and all(
        isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) for item in data
    ):
        return [(key, text) for key, value in data for text in _field_values(value)]
    return None


# -- request -------------------------------------------------------------------------


def forward_headers(
    headers: Mapping[str, str], *, drop_content_type: bool = False
) -> dict[str, str]:
    """The caller's headers minus those the transport owns (case-insensitive)."""
    connection = _header(headers, "connection") or ""
    # Fields named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    named = {token.strip().lower() for token in connection.split(",") if token.strip()}
    dropped = _NEVER_FORWARDED | named
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in dropped or lower.startswith("proxy-"):
            continue
        if drop_content_type and lower == "content-type":
            continue
        out[name] = value
    return out


def query_pairs(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``params`` as ordered query pairs (appended to any query the ``api`` carries)."""
    return [(str(key), text) for key, value in params.items() for text in _field_values(value)]


def _decode_files(files: Mapping[str, Any]) -> list[FormPart]:
    parts = []
    for name, entry in files.items():
        if not isinstance(entry, Mapping):
            raise RequestBuildError(f"file {name!r} must be an object")
        filename = entry.get("filename")
        content = entry.get("content_base64")
        if not isinstance(filename, str) or not filename or not isinstance(content, str):
            raise RequestBuildError(f"file {name!r} needs filename and content_base64")
        try:
            raw = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise RequestBuildError(f"content_base64 of {name!r} is not valid base64") from None
        ctype = entry.get("content_type") or "application/octet-stream"
        if not isinstance(ctype, str):
            raise RequestBuildError(f"content_type of file {name!r} must be a string")
        parts.append(
            FormPart(
                _line_text("file field name", str(name)),
                raw,
                filename=_line_text(f"filename of {name!r}", filename),
                content_type=_line_text(f"content_type of {name!r}", ctype),
            )
        )
    return parts


def build_body(data: Any, files: Mapping[str, Any] | None, headers: Any) -> Body:
    """The request body for ``data`` / ``files``, with the headers to forward."""
    headers = checked_headers(headers)
    if files is not None and not isinstance(files, Mapping):
        raise RequestBuildError("files must be an object")
    caller_type = _header(headers, "content-type")
    mime, _ = parse_content_type(caller_type)
    if files:
        return _multipart(data, _decode_files(files), headers)
    if data is None:
        return Body(headers=forward_headers(headers))
    if not caller_type or _is_json_mime(mime):
        raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        return Body(
            raw=raw, default_content_type="application/json", headers=forward_headers(headers)
        )
    if mime == "multipart/form-data":
        return _multipart(data, [], headers)
    if isinstance(data, str):
        return Body(raw=data.encode(), headers=forward_headers(headers))
    pairs = _pairs(data)
    if pairs is None:
        raise RequestBuildError(
            f"data of type {type(data).__name__} cannot be sent as {mime or 'form data'}"
        )
    raw = urllib.parse.urlencode(pairs).encode("ascii")
    return Body(raw=raw, headers=forward_headers(headers))


def _multipart(data: Any, file_parts: list[FormPart], headers: Mapping[str, str]) -> Body:
    fields: list[FormPart] = []
    if data is not None:
        pairs = _pairs(data)
        if pairs is None:
            raise RequestBuildError("with files, data must be an object of form fields")
        fields = [FormPart(_line_text("form field name", key), value) for key, value in pairs]
    return Body(
        parts=tuple(fields + file_parts),
        multipart=True,
        headers=forward_headers(headers, drop_content_type=True),
    )
