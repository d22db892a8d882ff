"""The run_command HTTP proxy: one cloud request forwarded to one runtime.

The executor resolves a managed device to its internal address and calls :func:`proxy`,
which returns the ``run_command`` ack body (without ``action`` / ``correlation_id``).
Message shaping lives in :mod:`services.executor.proxy.http`; this module owns the
safety rules and the transport.

Transport: http.client (standard library), one blocking exchange per call on the proxy's
own small thread pool (:data:`PROXY_WORKERS`), apart from the Docker calls and never on
the event loop.  Connections are kept alive per runtime and reused (`pool.py`): a small
request costs a round trip, not a TLS handshake.  A runtime has at most
:data:`PER_RUNTIME_CALLS` requests in progress, so a hung or trickling runtime holds at
most that many threads; further calls for it wait for their turn (without a thread)
within their own deadline, and a call that finds every thread busy does the same.

Safety, defence in depth behind the executor's own device lookup:

* the target is an IPv4 literal (no name resolution) that is not loopback, link-local,
  multicast, unspecified, reserved or broadcast, not an address of this host, not in
  ``denied_addresses``, and inside ``allowed_networks`` when that is configured;
* the URL is built from that address, the port and the ``api`` path only, and checked
  again after parsing;
* certificate verification is off only for this connection (the runtime's certificate
  is self-signed); proxy variables and ``.netrc`` are never read (a bare
  http.client connection has no environment lookup) and there is no cookie store;
* redirects are returned as they are, never followed;
* every request is bounded by a connect timeout and one overall deadline across the wait
  for its turn, connect, TLS handshake, sending, the reply's headers and its body (a
  watchdog shuts the socket down when it passes), and the reply by a size cap read
  incrementally (never buffered past the cap).

Outcomes: a reply → its status and body; an unsupported method or a request that
cannot be built → 400 made here, nothing sent; a transport failure (refused, reset,
timeout, TLS), a runtime still busy with earlier calls at the deadline or an oversized
reply → 500 with ``{"error": ...}``; a refused target →
``{"status": "error", "error": ...}`` without ``http_response``, like an unknown device.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from urllib3.util import Url, parse_url

from common import procfs
from services.executor.proxy import http, reply
from services.executor.proxy.exchange import TRANSPORT_ERRORS, exchange, transport_error
from services.executor.proxy.http import RequestBuildError

__all__ = [
    "DEFAULT",
    "DEFAULT_HTTPS_PORT",
    "PER_RUNTIME_CALLS",
    "PROXY_WORKERS",
    "ProxyLimits",
    "TargetRefused",
    "check_target",
    "internal_limits",
    "proxy",
]

log = logging.getLogger(__name__)

DEFAULT_HTTPS_PORT = 8443
MiB = 1024 * 1024
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
# Concurrent runtime requests; more wait for a thread within their own deadline.
PROXY_WORKERS = 8
# Requests in progress to one runtime: a slow runtime holds at most this many threads.
PER_RUNTIME_CALLS = 2
# How long past its deadline a call waits for its worker to report the outcome itself.
DEADLINE_GRACE = 0.25


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
    # Keep connections alive for the next call (off: one connection per call).
    reuse_connections: bool = True

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


# The agent's container has one interface per internal network: listing them costs about
# 15 µs each, so the list is reused for a moment.
LOCAL_ADDRESSES_TTL = 2.0
_local_cache: tuple[float, frozenset[ipaddress.IPv4Address]] = (-LOCAL_ADDRESSES_TTL, frozenset())


def _local_addresses() -> frozenset[ipaddress.IPv4Address]:
    global _local_cache
    taken_at, cached = _local_cache
    if time.monotonic() - taken_at < LOCAL_ADDRESSES_TTL:
        return cached
    _local_cache = (time.monotonic(), procfs.local_ipv4_addresses())
    return _local_cache[1]


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


_WORKERS: ThreadPoolExecutor | None = None
_WORKERS_LOCK = threading.Lock()


def _workers() -> ThreadPoolExecutor:
    """The proxy's own threads: a hung runtime never holds the Docker pool or the loop."""
    global _WORKERS
    with _WORKERS_LOCK:
        if _WORKERS is None:
            _WORKERS = ThreadPoolExecutor(
                max_workers=PROXY_WORKERS, thread_name_prefix="run-command"
            )
        return _WORKERS


def _build_url(
    address: ipaddress.IPv4Address, port: int, api: str, params: Any, https: bool
) -> Url:
    target = api.partition("#")[0]
    path, _, query = target.partition("?")
    if not path.startswith("/"):
        path = "/" + path
    if params:
        extra = urllib.parse.urlencode(http.query_pairs(params))
        query = f"{query}&{extra}" if query and extra else query or extra
    scheme = "https" if https else "http"
    # parse_url percent-encodes what may not appear in a request target.
    url = parse_url(f"{scheme}://{address}:{port}{path}" + (f"?{query}" if query else ""))
    # The path can never move the request elsewhere; checked anyway.
    if url.host != str(address) or url.port != port or url.auth or url.scheme != scheme:
        raise RequestBuildError("api path does not stay on the runtime")
    return url


class RuntimeBusy(TimeoutError):
    """The call's deadline passed while earlier calls to the same runtime ran."""


class _Turns:
    """At most ``per_runtime`` calls in progress per runtime; the others wait, threadless.

    Entries live only while a call for the runtime is running or waiting.
    """

    def __init__(self, per_runtime: int) -> None:
        self.per_runtime = per_runtime
        self._gates: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, runtime: str, timeout: float) -> AsyncIterator[None]:
        gate, users = self._gates.setdefault(
            runtime, (asyncio.Semaphore(self.per_runtime), [0])
        )
        users[0] += 1
        try:
            try:
                async with asyncio.timeout(timeout):
                    await gate.acquire()
            except TimeoutError:
                raise RuntimeBusy(
                    f"request to the runtime timed out waiting for its turn: "
                    f"{self.per_runtime} earlier requests to it are still in progress"
                ) from None
            try:
                yield
            finally:
                gate.release()
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._gates[runtime]


_TURNS = _Turns(PER_RUNTIME_CALLS)


async def _send(method: str, url: Url, body: http.Body, limits: ProxyLimits,
                runtime: str) -> dict[str, Any]:
    """Run :func:`exchange.exchange` on the proxy's threads, bounded by the call's own deadline.

    The call first waits for its runtime's turn, then for a thread, both within that
    deadline; once the caller gives up, the worker stops at its next read, and the
    watchdog cuts the connection at the deadline whatever the runtime does.
    """
    deadline = time.monotonic() + limits.total_timeout
    abandoned = threading.Event()
    loop = asyncio.get_running_loop()
    async with _TURNS.hold(runtime, limits.total_timeout):
        job = loop.run_in_executor(
            _workers(), exchange, method, url, body, limits, deadline, abandoned, runtime
        )
        try:
            # The worker keeps the deadline itself; this bound covers the wait for a thread.
            async with asyncio.timeout(max(0.0, deadline - time.monotonic()) + DEADLINE_GRACE):
                return await job
        finally:
            abandoned.set()


def internal_limits(
    internal_pool: str, runtime_gateway: str | None = None, base: ProxyLimits = DEFAULT,
    adopted_address: str | None = None,
) -> ProxyLimits:
    """The limits for a managed runtime: inside the internal pool, never its network's
    gateway (the host's side of the bridge), never this host's own addresses.  A runtime
    adopted from the original agent sits on an internal network the original made outside
    our pool: exactly its own internal address is allowed then, nothing around it."""
    denied = set(base.denied_addresses)
    if runtime_gateway:
        denied.add(ipaddress.IPv4Address(runtime_gateway))
    allowed = [ipaddress.IPv4Network(internal_pool, strict=False)]
    if adopted_address:
        allowed.append(ipaddress.IPv4Network(f"{adopted_address}/32"))
    return dataclasses.replace(
        base,
        allowed_networks=tuple(allowed),
        denied_addresses=frozenset(denied),
        refuse_local_addresses=True,
    )


async def proxy(
    target_ip: str,
    params: dict[str, Any],
    *,
    limits: ProxyLimits = DEFAULT,
    runtime: str | None = None,
) -> dict[str, Any]:
    """Forward one ``run_command`` to ``target_ip``; returns the ack body.

    ``runtime`` names the runtime (the container id) for its turns and its kept-alive
    connections; without it the address does.
    """
    try:
        address = check_target(target_ip, limits)
    except TargetRefused as exc:
        log.warning("run_command refused: %s", exc)
        return {"status": "error", "error": str(exc)}
    method = str(params.get("method") or "").strip().upper()
    if method not in http.SUPPORTED_METHODS:
        return reply.error_ack(400, f"Unsupported method: {method[:32] or '(none)'}")
    port = params.get("port", limits.https_port)
    if isinstance(port, float) and port.is_integer():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return reply.error_ack(400, "port must be an integer from 1 to 65535")
    https = port == limits.https_port
    try:
        url = _build_url(address, port, str(params.get("api") or "/"), params.get("params"), https)
        body = http.build_body(params.get("data"), params.get("files"), params.get("headers") or {})
    except RequestBuildError as exc:
        return reply.error_ack(400, str(exc))
    started = time.monotonic()
    try:
        ack = await _send(method, url, body, limits, runtime or str(address))
    except RequestBuildError as exc:
        return reply.error_ack(400, str(exc))
    except RuntimeBusy as exc:
        log.warning("run_command %s %s:%d%s: %s", method, address, port, url.path, exc)
        return reply.error_ack(500, str(exc))
    except TRANSPORT_ERRORS as exc:
        message = transport_error(exc, limits)
        log.warning("run_command %s %s:%d%s failed: %s", method, address, port, url.path, message)
        return reply.error_ack(500, message)
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
