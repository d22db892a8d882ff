"""Unit tests of the run_command proxy's message shaping and address rules (no Docker)."""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import urllib.parse
from collections.abc import Iterator

import psutil
import pytest

from services.executor.proxy import http
from services.executor.proxy.forward import (
    ProxyLimits,
    TargetRefused,
    _build_url,
    check_target,
    internal_limits,
    proxy,
)
from services.executor.proxy.http import RequestBuildError

# -- headers ---------------------------------------------------------------------------


def test_forward_headers_drops_what_the_transport_owns() -> None:
    given = {
        "Authorization": "Bearer t",
        "X-Custom": "1",
        "Host": "evil.example",
        "content-length": "99",
        "Connection": "keep-alive, X-Secret",
        "X-Secret": "hop",
        "Keep-Alive": "timeout=5",
        "Transfer-Encoding": "chunked",
        "Upgrade": "websocket",
        "Proxy-Authorization": "Basic x",
        "Proxy-Whatever": "x",
        "TE": "trailers",
        "Accept-Encoding": "br",
        "Expect": "100-continue",
        "Content-Type": "application/json",
        "Cookie": "a=b",
    }
    assert http.forward_headers(given) == {
        "Authorization": "Bearer t",
        "X-Custom": "1",
        "Content-Type": "application/json",
        "Cookie": "a=b",
    }


def test_forward_headers_can_drop_content_type() -> None:
    out = http.forward_headers(
        {"content-TYPE": "multipart/form-data", "A": "b"}, drop_content_type=True
    )
    assert out == {"A": "b"}


# -- query and url -----------------------------------------------------------------------


def test_query_pairs_convert_scalars_and_lists() -> None:
    params = {"s": "a b", "i": 3, "f": 1.5, "t": True, "n": None, "l": [1, "x", None, False]}
    assert http.query_pairs(params) == [
        ("s", "a b"),
        ("i", "3"),
        ("f", "1.5"),
        ("t", "true"),
        ("l", "1"),
        ("l", "x"),
        ("l", "false"),
    ]


def test_build_url_keeps_the_api_query_and_appends_params() -> None:
    address = ipaddress.IPv4Address("203.0.113.2")
    url = _build_url(address, 8443, "/api/runtime-logs?id=5#frag", {"level": "INFO"}, True)
    assert str(url) == "https://203.0.113.2:8443/api/runtime-logs?id=5&level=INFO"
    plain = _build_url(address, 8080, "api/x y", None, False)
    assert str(plain) == "http://203.0.113.2:8080/api/x%20y"


@pytest.mark.parametrize("api", ["/@evil.example/x", "//evil.example/x", "/api/%2F%2Fevil"])
def test_build_url_never_leaves_the_target(api: str) -> None:
    url = _build_url(ipaddress.IPv4Address("203.0.113.2"), 8443, api, None, True)
    assert url.host == "203.0.113.2"
    assert url.port == 8443


# -- request bodies --------------------------------------------------------------------


def test_no_data_no_body() -> None:
    body = http.build_body(None, {}, {"Authorization": "Bearer t"})
    assert body.raw is None and not body.multipart
    assert body.headers == {"Authorization": "Bearer t"}


@pytest.mark.parametrize("data", [{"username": "a", "n": 1}, [1, 2], "text", 5, False])
def test_data_is_json_by_default(data: object) -> None:
    body = http.build_body(data, None, {})
    assert body.raw is not None
    assert json.loads(body.raw) == data
    assert body.default_content_type == "application/json"


def test_json_content_type_of_the_caller_is_kept() -> None:
    body = http.build_body({"a": "é"}, None, {"Content-Type": "application/merge-patch+json"})
    assert json.loads(body.raw or b"") == {"a": "é"}
    assert body.headers == {"Content-Type": "application/merge-patch+json"}


def test_form_content_type_urlencodes_an_object() -> None:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    body = http.build_body(
        {"a": "x y", "b": [1, 2], "c": None, "d": True, "e": {"k": 1}}, None, headers
    )
    assert body.raw is not None
    assert urllib.parse.parse_qsl(body.raw.decode()) == [
        ("a", "x y"),
        ("b", "1"),
        ("b", "2"),
        ("d", "true"),
        ("e", '{"k":1}'),
    ]
    assert body.headers == headers
    assert body.default_content_type is None


def test_form_content_type_accepts_pairs_and_raw_strings() -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert http.build_body([["a", "1"], ["a", "2"]], None, form).raw == b"a=1&a=2"
    text = http.build_body("héllo", None, {"Content-Type": "text/plain; charset=utf-8"})
    assert text.raw == "héllo".encode()


def test_form_content_type_refuses_other_values() -> None:
    with pytest.raises(RequestBuildError):
        http.build_body(42, None, {"Content-Type": "application/x-www-form-urlencoded"})


def _file(content: bytes, name: str = "prog.zip", ctype: str | None = "application/zip") -> dict:
    entry = {"filename": name, "content_base64": base64.b64encode(content).decode()}
    if ctype:
        entry["content_type"] = ctype
    return entry


def test_files_become_multipart_with_data_fields() -> None:
    files = {"file": _file(b"\x00\x01zip"), "other": _file(b"txt", "a.txt", None)}
    headers = {"Content-Type": "application/json", "Authorization": "Bearer t"}
    body = http.build_body({"comment": "hi", "n": 2}, files, headers)
    assert body.multipart
    assert body.headers == {"Authorization": "Bearer t"}  # the boundary must be ours
    assert body.parts == (
        http.FormPart("comment", "hi"),
        http.FormPart("n", "2"),
        http.FormPart("file", b"\x00\x01zip", "prog.zip", "application/zip"),
        http.FormPart("other", b"txt", "a.txt", "application/octet-stream"),
    )


def test_multipart_content_type_without_files_sends_fields_as_multipart() -> None:
    body = http.build_body({"a": "1"}, {}, {"Content-Type": "multipart/form-data"})
    assert body.multipart and body.parts == (http.FormPart("a", "1"),)
    assert body.headers == {}


@pytest.mark.parametrize(
    ("data", "files"),
    [
        ("not fields", {"file": _file(b"x")}),
        (None, {"file": {"filename": "a", "content_base64": "%%%"}}),
        (None, {"file": {"content_base64": "AA=="}}),
        (None, {"file": "nope"}),
    ],
)
def test_bad_files_are_refused(data: object, files: dict) -> None:
    with pytest.raises(RequestBuildError):
        http.build_body(data, files, {})


# -- address rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1",
        "127.8.9.10",
        "169.254.169.254",
        "169.254.1.1",
        "224.0.0.1",
        "239.255.255.250",
        "0.0.0.0",
        "255.255.255.255",
        "240.0.0.1",
        "::1",
        "fe80::1",
        "localhost",
        "example.com",
        "203.0.113.2:8443",
        "010.0.0.1",
        "",
        "203.0.113.2/32",
    ],
)
def test_check_target_refuses(target: str) -> None:
    with pytest.raises(TargetRefused):
        check_target(target)


def test_check_target_refuses_non_strings() -> None:
    with pytest.raises(TargetRefused):
        check_target(3405803778)


def test_check_target_accepts_a_plain_unicast_address() -> None:
    assert check_target("203.0.113.2") == ipaddress.IPv4Address("203.0.113.2")


def test_check_target_allowed_networks_and_denied_addresses() -> None:
    limits = ProxyLimits(
        allowed_networks=(ipaddress.IPv4Network("198.51.100.0/24"),),
        denied_addresses=frozenset({ipaddress.IPv4Address("198.51.100.1")}),
    )
    assert check_target("198.51.100.7", limits) == ipaddress.IPv4Address("198.51.100.7")
    with pytest.raises(TargetRefused, match="outside"):
        check_target("203.0.113.2", limits)
    with pytest.raises(TargetRefused, match="denied"):
        check_target("198.51.100.1", limits)


def test_limits_accept_strings_for_networks() -> None:
    limits = ProxyLimits(
        allowed_networks=("198.51.100.0/24",), denied_addresses=frozenset({"198.51.100.1"})
    )  # type: ignore[arg-type]
    assert limits.allowed_networks == (ipaddress.IPv4Network("198.51.100.0/24"),)
    assert ipaddress.IPv4Address("198.51.100.1") in limits.denied_addresses


@pytest.mark.parametrize(
    "kwargs", [{"total_timeout": 0}, {"connect_timeout": -1}, {"max_response_bytes": 0}]
)
def test_limits_are_validated(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ProxyLimits(**kwargs)


def _host_address() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                return str(addr.address)
    return None


def test_check_target_refuses_this_hosts_own_addresses() -> None:
    address = _host_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    with pytest.raises(TargetRefused, match="this host"):
        check_target(address)
    # The rule can be turned off, e.g. where the pool is enforced another way.
    check_target(address, ProxyLimits(refuse_local_addresses=False))


def test_internal_limits_keep_targets_in_the_pool_and_off_the_gateway() -> None:
    limits = internal_limits("172.30.0.0/16", "172.30.0.1")
    check_target("172.30.0.2", limits)
    with pytest.raises(TargetRefused, match="denied"):
        check_target("172.30.0.1", limits)
    for outside in ("172.17.0.2", "198.51.100.7", "10.0.0.1"):
        with pytest.raises(TargetRefused, match="outside the internal networks"):
            check_target(outside, limits)
    assert limits.refuse_local_addresses
    assert internal_limits("172.30.0.0/16").denied_addresses == frozenset()


def test_an_adopted_runtime_is_reachable_at_its_own_address_only() -> None:
    # The original agent's internal networks lie outside our pool.
    limits = internal_limits("172.30.0.0/16", "172.21.0.1", adopted_address="172.21.0.2")
    check_target("172.21.0.2", limits)
    for neighbour in ("172.21.0.3", "172.21.0.1"):
        with pytest.raises(TargetRefused):
            check_target(neighbour, limits)


# -- proxy() without a runtime -------------------------------------------------------


@pytest.fixture
def loopback_listener() -> Iterator[socket.socket]:
    """A listening socket on loopback: a refused target must never connect to it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


async def test_proxy_refuses_loopback_without_connecting(loopback_listener: socket.socket) -> None:
    port = loopback_listener.getsockname()[1]
    for target in ("127.0.0.1", "169.254.1.1", "0.0.0.0", "localhost"):
        ack = await proxy(target, {"method": "GET", "api": "/api/version", "port": port})
        assert ack["status"] == "error"
        assert "refused" in ack["error"] or "not an IPv4" in ack["error"]
        assert "http_response" not in ack
    # A connection attempt would be in the backlog by now.
    with pytest.raises(BlockingIOError):
        loopback_listener.accept()


@pytest.mark.parametrize("method", ["PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "", "get x"])
async def test_proxy_unsupported_method_is_400(method: str) -> None:
    ack = await proxy("192.0.2.10", {"method": method, "api": "/api/version"})
    assert ack["status"] == "error"
    assert ack["http_response"]["status_code"] == 400
    assert ack["http_response"]["ok"] is False
    assert "Unsupported method" in ack["http_response"]["body"]["error"]


@pytest.mark.parametrize("port", [0, 65536, "8443", True, 8443.5])
async def test_proxy_bad_port_is_400(port: object) -> None:
    ack = await proxy("192.0.2.10", {"method": "GET", "api": "/", "port": port})
    assert ack["http_response"]["status_code"] == 400


async def test_proxy_unbuildable_body_is_400() -> None:
    params = {
        "method": "POST",
        "api": "/api/upload-file",
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        "data": 5,
    }
    ack = await proxy("192.0.2.10", params)
    assert ack["http_response"]["status_code"] == 400
    assert "cannot be sent" in ack["http_response"]["body"]["error"]


# -- text that becomes part of a header line --------------------------------------------


def _hostile_file(**entry: object) -> dict[str, object]:
    return {"filename": "p.zip", "content_base64": "AA==", **entry}


@pytest.mark.parametrize(
    ("files", "headers", "data", "words"),
    [
        ({"file": _hostile_file(content_type="a/b\r\nX-Injected: 1")}, {}, None, "content_type"),
        ({"file": _hostile_file(content_type="text/plain\nX: 1")}, {}, None, "content_type"),
        ({"file": _hostile_file(filename="a\r\n.zip")}, {}, None, "filename"),
        ({"fi\r\neld": _hostile_file()}, {}, None, "field name"),
        ({"file": _hostile_file()}, {}, {"na\rme": "v"}, "field name"),
        (None, {"X-A": "v\r\nX-Injected: 1"}, None, "header 'X-A'"),
        (None, {"X-A": "v\x00"}, None, "header 'X-A'"),
        (None, {"X-A\r\nX-B": "v"}, None, "not a valid token"),
        (None, {"X A": "v"}, None, "not a valid token"),
        (None, {"X-A": ["v"]}, None, "string value"),
        (None, ["X-A"], None, "headers must be an object"),
    ],
)
def test_control_characters_in_header_lines_are_refused(
    files: object, headers: object, data: object, words: str
) -> None:
    with pytest.raises(RequestBuildError) as caught:
        http.build_body(data, files, headers)  # type: ignore[arg-type]
    assert words in str(caught.value)


def test_tabs_in_header_values_and_numbers_are_fine() -> None:
    body = http.build_body(None, None, {"X-A": "a\tb", "X-N": 3})
    assert body.headers == {"X-A": "a\tb", "X-N": "3"}
