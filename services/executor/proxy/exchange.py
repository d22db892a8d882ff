"""One exchange with a runtime on a worker thread: the request on a kept-alive or new
unverified-TLS or plain connection, the reply read under the deadline and the size cap,
and the words for a transport failure.  The rules around it live in `forward.py`,
connection keeping and the deadline watchdog in `pool.py`."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from http import client as http_client
from typing import TYPE_CHECKING, Any

from urllib3 import encode_multipart_formdata
from urllib3.util import Url

from common.version import __version__
from services.executor.proxy import http, reply
from services.executor.proxy.http import RequestBuildError
from services.executor.proxy.pool import ConnectionPool, Key, Watchdog, cut

if TYPE_CHECKING:
    from services.executor.proxy.forward import ProxyLimits

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
USER_AGENT = f"orchestrator-agent/{__version__}"
TRANSPORT_ERRORS = (
    http_client.HTTPException,
    TimeoutError,
    OSError,
)
# RFC 9110 §9.2.2: repeating these changes nothing more than sending them once, so one
# that failed on a kept-alive connection before any reply is sent again on a new one.
IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})
# How a kept-alive connection the runtime already closed shows up when it is used.
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, ssl.SSLEOFError,
          http_client.RemoteDisconnected)

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)

WATCHDOG = Watchdog()
POOL = ConnectionPool(WATCHDOG)


_TLS_CONTEXT: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """Client context for runtimes: TLS >= 1.2, certificate not verified (self-signed)."""
    global _TLS_CONTEXT
    if _TLS_CONTEXT is None:
        # No CA store: nothing is verified, so loading the system's would only cost memory.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _TLS_CONTEXT = context
    return _TLS_CONTEXT


def _payload(body: http.Body) -> tuple[bytes | None, str | None]:
    """The bytes to send and, for multipart, the Content-Type carrying our boundary."""
    if not body.multipart:
        return body.raw, None
    fields: list[tuple[str, Any]] = []
    for part in body.parts:
        if part.filename is None:
            fields.append((part.name, part.value))
        else:
            fields.append((part.name, (part.filename, part.value, part.content_type)))
    return encode_multipart_formdata(fields)


class ConnectFailed(OSError):
    """The TCP connection could not be made (refused, unreachable)."""


class _DeadlineExceeded(TimeoutError):
    """The call's overall deadline passed (connect, handshake, send, wait or read)."""


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _DeadlineExceeded("deadline passed")
    return left


def _read_capped(
    response: http_client.HTTPResponse, cap: int, deadline: float, abandoned: threading.Event
) -> bytes | None:
    """The reply body, or None as soon as it is known to exceed ``cap`` bytes."""
    declared = response.length
    if declared is not None and declared > cap:
        return None
    buffer = bytearray()
    while True:
        _remaining(deadline)
        if abandoned.is_set():
            raise _DeadlineExceeded("abandoned by the caller")
        chunk = response.read1(READ_CHUNK)
        if not chunk:
            return bytes(buffer)
        buffer += chunk
        if len(buffer) > cap:
            return None


def _request_headers(body: http.Body, multipart_type: str | None) -> dict[str, str]:
    headers = dict(body.headers)
    lowered = {name.lower() for name in headers}
    if "user-agent" not in lowered:
        headers["User-Agent"] = USER_AGENT
    content_type = multipart_type or body.default_content_type
    if content_type and (multipart_type or "content-type" not in lowered):
        headers["Content-Type"] = content_type
    # Unencoded replies only, so the cap counts the bytes the runtime meant.
    headers["Accept-Encoding"] = "identity"
    return headers


def _new_connection(url: Url, limits: ProxyLimits, left: float) -> http_client.HTTPConnection:
    """An unconnected connection: no proxy variables, .netrc or cookies, ever."""
    host, port = str(url.host), int(url.port or 0)
    timeout = min(limits.connect_timeout, left)
    if url.scheme == "https":
        return http_client.HTTPSConnection(host, port, timeout=timeout, context=_tls_context())
    return http_client.HTTPConnection(host, port, timeout=timeout)


def _connect(conn: http_client.HTTPConnection) -> None:
    """TCP and, for HTTPS, the TLS handshake, under the connect timeout (and the watchdog)."""
    try:
        conn.connect()  # sets TCP_NODELAY
    except (ssl.SSLError, TimeoutError):
        raise
    except OSError as exc:
        if conn.sock is not None:  # connected; the TLS layer failed
            raise
        raise ConnectFailed(exc.errno, exc.strerror or str(exc)) from exc


def _ack_at_once(sock: socket.socket | None) -> None:
    """Acknowledge the reply's first segment at once.

    Servers commonly write a reply's headers and body separately; with Nagle's algorithm
    on their side the body then waits for our acknowledgement, which a kept-alive
    connection delays by some 40 ms.  Linux only; elsewhere the delay stays.
    """
    if sock is not None and _QUICKACK is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


def _send(conn: http_client.HTTPConnection, method: str, url: Url, payload: bytes | None,
          headers: dict[str, str], deadline: float) -> None:
    if conn.sock is None:
        _connect(conn)
    assert conn.sock is not None
    conn.sock.settimeout(_remaining(deadline))
    try:
        conn.request(method, url.request_uri, body=payload, headers=headers)
    except ValueError as exc:
        # http.client refuses a bad header name or value before anything is sent.
        if isinstance(exc, ssl.SSLError | OSError):
            raise
        raise RequestBuildError(f"request cannot be sent: {exc}") from None


def _reply(response: http_client.HTTPResponse, raw: bytes) -> dict[str, Any]:
    reply_type = response.headers.get("Content-Type", "")
    return reply.response_ack(
        response.status,
        reply.response_headers(response.headers.items()),
        reply.decode_body(raw, reply_type),
        reply_type,
    )


class _Guard:
    """What the watchdog cuts at the deadline: the connection's socket, also after
    http.client handed it over to a close-delimited reply."""

    def __init__(self, conn: http_client.HTTPConnection) -> None:
        self.conn = conn
        self.sock: socket.socket | None = None
        self.expired = threading.Event()

    def on_deadline(self) -> None:
        self.expired.set()
        cut(self.conn)
        if self.sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


def _attempt(guard: _Guard, method: str, url: Url, payload: bytes | None,
             headers: dict[str, str], limits: ProxyLimits, deadline: float,
             abandoned: threading.Event) -> tuple[dict[str, Any], bool]:
    """One request and its reply; whether the connection may be kept afterwards."""
    conn = guard.conn
    _send(conn, method, url, payload, headers, deadline)
    guard.sock = conn.sock
    _ack_at_once(conn.sock)
    response = conn.getresponse()
    raw = _read_capped(response, limits.max_response_bytes, deadline, abandoned)
    if guard.expired.is_set():
        # A cut close-delimited reply reads like a complete one.
        raise _DeadlineExceeded("deadline passed")
    if raw is None:
        return reply.error_ack(
            500,
            f"response from the runtime is larger than {limits.max_response_bytes} bytes",
            upstream_status=response.status,
        ), False
    keep = limits.reuse_connections and not response.will_close and conn.sock is not None
    response.close()
    return _reply(response, raw), keep


def exchange(
    method: str,
    url: Url,
    body: http.Body,
    limits: ProxyLimits,
    deadline: float,
    abandoned: threading.Event,
    runtime: str,
) -> dict[str, Any]:
    """One request to a runtime (a worker thread), ended by the watchdog at ``deadline``.

    A kept-alive connection is used when one is free; if the runtime had closed it and
    the method is idempotent, the request goes once more on a new connection.
    """
    _remaining(deadline)
    if abandoned.is_set():
        raise _DeadlineExceeded("abandoned by the caller")
    payload, multipart_type = _payload(body)
    headers = _request_headers(body, multipart_type)
    key: Key = (runtime, str(url.host), int(url.port or 0), url.scheme == "https")
    retry = method in IDEMPOTENT
    reuse = limits.reuse_connections
    while True:
        pooled = POOL.take(key) if reuse else None
        guard = _Guard(pooled or _new_connection(url, limits, _remaining(deadline)))
        timer = WATCHDOG.call_at(deadline, guard.on_deadline)
        keep = False
        try:
            ack, keep = _attempt(guard, method, url, payload, headers, limits, deadline,
                                 abandoned)
            return ack
        except _STALE:
            if guard.expired.is_set():
                raise _DeadlineExceeded("deadline passed") from None
            if pooled is None or not retry:
                raise
            retry = reuse = False  # once, on a new connection
            log.info("kept-alive connection to %s:%s was closed; sending again", url.host,
                     url.port)
        except TRANSPORT_ERRORS as exc:
            if guard.expired.is_set() and not isinstance(exc, _DeadlineExceeded):
                raise _DeadlineExceeded("deadline passed") from None
            raise
        finally:
            # Cancelled before the connection can serve another call.
            WATCHDOG.cancel(timer)
            if keep and not guard.expired.is_set():
                POOL.put(key, guard.conn)
            else:
                guard.conn.close()


def transport_error(exc: BaseException, limits: ProxyLimits) -> str:
    if isinstance(exc, ConnectFailed):
        return f"cannot connect to the runtime: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return f"request to the runtime timed out (limit {limits.total_timeout:g} s)"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return f"TLS error: {exc}"
    if isinstance(exc, http_client.RemoteDisconnected):
        return "the runtime closed the connection without a reply"
    if isinstance(exc, http_client.IncompleteRead):
        return f"incomplete reply from the runtime: {exc!r}"
    if isinstance(exc, http_client.HTTPException):
        return f"invalid reply from the runtime: {exc!r}"
    if isinstance(exc, OSError):
        return f"connection to the runtime failed: {exc.strerror or exc}"
    return f"request to the runtime failed: {exc}"
