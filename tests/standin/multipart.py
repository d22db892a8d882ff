"""multipart/form-data decoding for the stand-in (the cgi module is going away)."""

from __future__ import annotations

import email.message
import email.parser
from dataclasses import dataclass


class MultipartError(ValueError):
    """The body is not a well-formed multipart/form-data document."""


@dataclass(frozen=True)
class Part:
    name: str | None
    filename: str | None
    content_type: str | None
    data: bytes


def boundary_of(content_type: str) -> str | None:
    """The boundary parameter of a multipart/form-data Content-Type, if any."""
    msg = email.message.Message()
    msg["Content-Type"] = content_type
    if msg.get_content_type() != "multipart/form-data":
        return None
    boundary = msg.get_param("boundary")
    return boundary if isinstance(boundary, str) and boundary else None


def parse(content_type: str, body: bytes) -> list[Part]:
    """Split a multipart/form-data body into its parts, bytes kept exact."""
    boundary = boundary_of(content_type)
    if boundary is None:
        raise MultipartError("not multipart/form-data with a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    sections = body.split(delimiter)
    if len(sections) < 3:
        raise MultipartError("no parts or no closing delimiter")
    parts: list[Part] = []
    # sections[0] is the preamble; the section after the closing delimiter starts with "--".
    for section in sections[1:]:
        if section.startswith(b"--"):
            return parts
        if not section.startswith(b"\r\n"):
            raise MultipartError("delimiter not followed by CRLF")
        head, sep, data = section[2:].partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("part without a header block")
        if not data.endswith(b"\r\n"):
            raise MultipartError("part not terminated by CRLF")
        headers = email.parser.HeaderParser().parsestr(head.decode("utf-8", "replace"))
        name = headers.get_param("name", header="content-disposition")
        filename = headers.get_param("filename", header="content-disposition")
        parts.append(
            Part(
                name=name if isinstance(name, str) else None,
                filename=filename if isinstance(filename, str) else None,
                content_type=headers.get("Content-Type"),
                data=data[:-2],
            )
        )
    raise MultipartError("missing closing delimiter")
