"""Reply shaping of the run_command proxy: headers, body and the ack."""

from __future__ import annotations

import base64

import pytest

from services.executor.proxy import reply

# -- reply headers -----------------------------------------------------------------------


def test_response_headers_join_repeats_and_drop_hop_by_hop() -> None:
    items = [
        ("Content-Type", "application/json"),
        ("Set-Cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("X-OpenPLC-Runtime-Version", "v4.0.0"),
    ]
    assert reply.response_headers(items) == {
        "Content-Type": "application/json",
        "Set-Cookie": "a=1, b=2",
        "X-OpenPLC-Runtime-Version": "v4.0.0",
    }


# -- reply bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "ctype", "expected"),
    [
        (b'{"version":"v4.0.0"}\n', "application/json", {"version": "v4.0.0"}),
        (b'"Wrong username or password"\n', "application/json", "Wrong username or password"),
        (b'{"a":1}', "application/problem+json; charset=utf-8", {"a": 1}),
        (b'{"a":1}', "text/plain", {"a": 1}),
        (b'{"a":1}', None, {"a": 1}),
        (b"not json", "application/json", "not json"),
        (b"<h1>Not Found</h1>", "text/html; charset=utf-8", "<h1>Not Found</h1>"),
        (b"", "application/json", ""),
        ("café".encode("latin-1"), "text/plain; charset=ISO-8859-1", "café"),
        (b"caf\xe9", "text/plain", "caf\ufffd"),
        (b"x", "text/plain; charset=no-such-charset", "x"),
        (b"[NaN]", "application/json", "[NaN]"),
        (
            b"[123456789012345678901234567890]",
            "application/json",
            "[123456789012345678901234567890]",
        ),
    ],
)
def test_decode_body(raw: bytes, ctype: str | None, expected: object) -> None:
    assert reply.decode_body(raw, ctype) == expected


def test_decode_body_too_deep_json_stays_text() -> None:
    raw = b"[" * 100 + b"]" * 100
    assert reply.decode_body(raw, "application/json") == raw.decode()


@pytest.mark.parametrize(
    ("raw", "ctype"),
    [
        (b"\x00\x01\xff", "application/octet-stream"),
        (b"PK\x03\x04", "application/zip"),
        (b"\xff\xfe\x00", None),
    ],
)
def test_decode_body_binary_is_base64(raw: bytes, ctype: str | None) -> None:
    body = reply.decode_body(raw, ctype)
    assert body == {"content_base64": base64.b64encode(raw).decode(), "size": len(raw)}


def test_response_ack_status_follows_ok() -> None:
    assert reply.response_ack(201, {}, {}, "")["status"] == "success"
    redirect = reply.response_ack(302, {"Location": "x"}, "", "")
    assert redirect["status"] == "success" and redirect["http_response"]["ok"] is True
    failed = reply.response_ack(401, {}, "Wrong username or password", "application/json")
    assert failed["status"] == "error"
    assert failed["http_response"] == {
        "status_code": 401,
        "headers": {},
        "body": "Wrong username or password",
        "ok": False,
        "content_type": "application/json",
    }
    made = reply.error_ack(500, "boom")
    assert made["status"] == "error"
    assert made["http_response"]["body"] == {"error": "boom"}
