"""The run_command HTTP proxy: one cloud request forwarded to one runtime.

The executor resolves a managed device to its internal address and calls :func:`proxy`,
which returns the ``run_command`` ack body (without ``action`` / ``correlation_id``).
Message shaping lives in :mod:`services.executor.proxy_http`; this module owns the
safety rules and the transport.

Concurrency: asyncio. Every call has its own aiohttp session and connector (one
connection, closed afterwards), so a hung runtime costs only its own request, no
connection or cookie is shared between calls, and nothing outlives the call.

Safety, defence in depth behind the executor's own device lookup:

* the target is an IPv4 literal (no name resolution) that is not loopback, link-local,
  multicast, unspecified, reserved or broadcast, not an address of this host, not in
  ``denied_addresses``, and inside ``allowed_networks`` when that is configured;
* the URL is built from that address, the port and the ``api`` path only, and checked
  again after parsing;
* certificate verification is off only for this connection (the runtime's certificate
  is self-signed); proxy variables and ``.netrc`` are ignored (``trust_env=False``);
* redirects are returned as they are, never followed;
* every request is bounded by a connect and a total timeout, and the reply by a size
  cap read incrementally (never buffered past the cap).

Outcomes: a reply → its status and body; an unsupported method or a request that
cannot be built → 400 made here, nothing sent; a transport failure (refused, reset,
timeout, TLS) or an oversized reply → 500 with ``{"error": ...}``; a refused target →
``{"status": "error", "error": ...}`` without ``http_response``, like an unknown device.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil
from yarl import URL

from common.version import __version__
from services.executor import proxy_http as http
from services.executor.proxy_http import RequestBuildError

__all__ = [
    "DEFAULT",
    "DEFAULT_HTTPS_PORT",
    "ProxyLimits",
    "TargetRefused",
    "check_target",
    "proxy",
]

log = logging.getLogger(__name__)

DEFAULT_HTTPS_PORT = 8443
MiB = 1024 * 1024
_READ_CHUNK = 64 * 1024
USER_AGENT = f"orchestrator-agent/{__version__}"
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@dataclass(frozen=True)
class ProxyLimits:
    """Bounds and address rules of the proxy; the defaults suit one runtime request."""

    total_timeout: float = 30.0
    connect_timeout: float = 5.0
    max_response_bytes: int = 8 * MiB
    # When non-empty, the only networks a target may lie in (the internal pool).
    allowed_networks: tuple[ipaddress.IPv4Network, ...] = ()
    # Addresses never targeted, e.g. the gateways (host side) of internal networks.
    denied_addresses: frozenset[ipaddress.IPv4Address] = field(default_factory=frozenset)
    # Refuse addresses assigned to this host's (this namespace's) own interfaces.
    refuse_local_addresses: bool = True
    # The port spoken over HTTPS; any other port is plain HTTP.
    https_port: int = DEFAULT_HTTPS_PORT

    def __post_init__(self) -> None:
        if self.total_timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_response_bytes <= 0:
            raise ValueError("max_response_bytes must be positive")
        object.__setattr__(
            self,
            "allowed_networks",
            tuple(ipaddress.IPv4Network(n) for n in self.allowed_networks),
        )
        object.__setattr__(
            self,
            "denied_addresses",
            frozenset(ipaddress.IPv4Address(a) for a in self.denied_addresses),
        )


DEFAULT = ProxyLimits()


class TargetRefused(Exception):
    """The target address is not one the proxy may reach."""


def _local_addresses() -> set[ipaddress.IPv4Address]:
    found = set()
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family.name == "AF_INET":
                try:
                    found.add(ipaddress.IPv4Address(addr.address))
                except ValueError:
                    continue
    return found


def check_target(target_ip: Any, limits: ProxyLimits = DEFAULT) -> ipaddress.IPv4Address:
    """The target as an address, or :class:`TargetRefused` saying why not."""
    if not isinstance(target_ip, str):
        raise TargetRefused("target address must be an IPv4 address string")
    try:
        address = ipaddress.IPv4Address(target_ip)
    except ValueError:
        raise TargetRefused(f"target {target_ip[:64]!r} is not an IPv4 address") from None
    reason = None
    if address.is_loopback:
        reason = "loopback"
    elif address.is_link_local:
        reason = "link-local"
    elif address.is_multicast:
        reason = "multicast"
    elif address.is_unspecified:
        reason = "unspecified"
    elif address == _BROADCAST or address.is_reserved:
        reason = "broadcast or reserved"
    elif address in limits.denied_addresses:
        reason = "denied"
    elif limits.allowed_networks and not any(address in n for n in limits.allowed_networks):
        reason = "outside the internal networks"
    elif limits.refuse_local_addresses and address in _local_addresses():
        reason = "an address of this host"
    if reason is not None:
        raise TargetRefused(f"target address {address} refused: {reason}")
    return address


_TLS_CONTEXT: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """Client context for runtimes: TLS >= 1.2, certificate not verified (self-signed)."""
    global _TLS_CONTEXT
    if _TLS_CONTEXT is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _TLS_CONTEXT = context
    return _TLS_CONTEXT


def _build_url(
    address: ipaddress.IPv4Address, port: int, api: str, params: Any, https: bool
) -> URL:
    path = api if api.startswith("/") else "/" + api
    url = URL(f"{'https' if https else 'http'}://{address}:{port}{path}").with_fragment(None)
    if params:
        url = url.extend_query(http.query_pairs(params))
    # The path can never move the request elsewhere; checked anyway.
    if url.host != str(address) or url.port != port or url.user or url.password:
        raise RequestBuildError("api path does not stay on the runtime")
    return url


def _form_data(body: http.Body) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    for part in body.parts:
        if part.filename is None:
            form.add_field(part.name, part.value)
        else:
            form.add_field(
                part.name, part.value, filename=part.filename, content_type=part.content_type
            )
    return form


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """The reply body, or None as soon as it is known to exceed ``cap`` bytes."""
    declared = response.content_length
    if declared is not None and declared > cap:
        return None
    buffer = bytearray()
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        buffer += chunk
        if len(buffer) > cap:
            return None
    return bytes(buffer)


def _transport_error(exc: BaseException, limits: ProxyLimits) -> str:
    if isinstance(exc, TimeoutError):
        return f"request to the runtime timed out (limit {limits.total_timeout:g} s)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return f"TLS error: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        return f"cannot connect to the runtime: {os.strerror(errno) if errno else exc}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the runtime closed the connection without a reply"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"incomplete reply from the runtime: {exc}"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection to the runtime failed: {exc.strerror or exc}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"invalid reply from the runtime: {exc.message}"
    return f"request to the runtime failed: {exc}"


async def _send(
    method: str, url: URL, body: http.Body, limits: ProxyLimits, https: bool
) -> dict[str, Any]:
    headers = dict(body.headers)
    lowered = {name.lower() for name in headers}
    if "user-agent" not in lowered:
        headers["User-Agent"] = USER_AGENT
    if body.default_content_type and "content-type" not in lowered:
        headers["Content-Type"] = body.default_content_type
    # Only encodings aiohttp decodes itself, so the cap applies to decoded bytes.
    headers["Accept-Encoding"] = "identity"
    payload: Any = _form_data(body) if body.multipart else body.raw
    timeout = aiohttp.ClientTimeout(
        total=limits.total_timeout,
        connect=limits.connect_timeout,
        sock_connect=limits.connect_timeout,
    )
    connector = aiohttp.TCPConnector(
        ssl=_tls_context() if https else False, limit=1, force_close=True, use_dns_cache=False
    )
    async with (
        aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        ) as session,
        session.request(
            method, url, headers=headers, data=payload, allow_redirects=False
        ) as response,
    ):
        raw = await _read_capped(response, limits.max_response_bytes)
        if raw is None:
            return http.error_ack(
                500,
                f"response from the runtime is larger than {limits.max_response_bytes} bytes",
                upstream_status=response.status,
            )
        content_type = response.headers.get("Content-Type", "")
        return http.response_ack(
            response.status,
            http.response_headers(response.headers.items()),
            http.decode_body(raw, content_type),
            content_type,
        )


async def proxy(
    target_ip: str, params: dict[str, Any], *, limits: ProxyLimits = DEFAULT
) -> dict[str, Any]:
    """Forward one ``run_command`` to ``target_ip``; returns the ack body."""
    try:
        address = check_target(target_ip, limits)
    except TargetRefused as exc:
        log.warning("run_command refused: %s", exc)
        return {"status": "error", "error": str(exc)}
    method = str(params.get("method") or "").strip().upper()
    if method not in http.SUPPORTED_METHODS:
        return http.error_ack(400, f"Unsupported method: {method[:32] or '(none)'}")
    port = params.get("port", limits.https_port)
    if isinstance(port, float) and port.is_integer():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return http.error_ack(400, "port must be an integer from 1 to 65535")
    https = port == limits.https_port
    try:
        url = _build_url(address, port, str(params.get("api") or "/"), params.get("params"), https)
        body = http.build_body(params.get("data"), params.get("files"), params.get("headers") or {})
    except RequestBuildError as exc:
        return http.error_ack(400, str(exc))
    started = time.monotonic()
    try:
        # aiohttp's total timeout covers the body too; this outer bound is the backstop.
        async with asyncio.timeout(limits.total_timeout + 1.0):
            ack = await _send(method, url, body, limits, https)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        message = _transport_error(exc, limits)
        log.warning("run_command %s %s:%d%s failed: %s", method, address, port, url.path, message)
        return http.error_ack(500, message)
    log.info(
        "run_command %s %s:%d%s -> %s in %.0f ms",
        method,
        address,
        port,
        url.path,
        ack["http_response"]["status_code"],
        (time.monotonic() - started) * 1000,
    )
    return ack
