"""One exchange with a runtime on a worker thread: the request on its own unverified-TLS or
plain connection, the reply read under the deadline and the size cap, and the words for a
transport failure.  The rules around it live in `forward.py`."""

from __future__ import annotations

import os
import ssl
import threading
import time
import warnings
from http import client as http_client
from typing import TYPE_CHECKING, Any

import urllib3.exceptions
from urllib3 import (
    BaseHTTPResponse,
    HTTPConnectionPool,
    HTTPSConnectionPool,
    Timeout,
    encode_multipart_formdata,
)
from urllib3.util import Url

from common.version import __version__
from services.executor.proxy import http
from services.executor.proxy.http import RequestBuildError

if TYPE_CHECKING:
    from services.executor.proxy.forward import ProxyLimits

READ_CHUNK = 64 * 1024
USER_AGENT = f"orchestrator-agent/{__version__}"
# Runtimes present self-signed certificates, so their connections are unverified by
# design; this process makes no other unverified HTTPS request worth a warning.
warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
TRANSPORT_ERRORS = (
    urllib3.exceptions.HTTPError,
    http_client.HTTPException,
    TimeoutError,
    OSError,
)


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


class _DeadlineExceeded(TimeoutError):
    """The call's overall deadline passed (connect, send, wait or read)."""


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _DeadlineExceeded("deadline passed")
    return left


def _read_capped(
    response: BaseHTTPResponse, cap: int, deadline: float, abandoned: threading.Event
) -> bytes | None:
    """The reply body, or None as soon as it is known to exceed ``cap`` bytes.

    Each read is one receive bounded by what is left of the deadline, so a runtime that
    trickles bytes cannot stretch the call past it.
    """
    declared = response.length_remaining
    if declared is not None and declared > cap:
        return None
    buffer = bytearray()
    while True:
        left = _remaining(deadline)
        if abandoned.is_set():
            raise _DeadlineExceeded("abandoned by the caller")
        # The socket's timeout was the whole budget when the request went out.
        sock = getattr(response.connection, "sock", None)
        if sock is not None:
            sock.settimeout(left)
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


def _connection_pool(url: Url, timeout: Timeout) -> HTTPConnectionPool:
    """A bare connection pool: no proxy variables, .netrc or cookies are consulted, ever."""
    host, port = str(url.host), int(url.port or 0)
    if url.scheme == "https":
        return HTTPSConnectionPool(
            host,
            port,
            timeout=timeout,
            maxsize=1,
            retries=False,
            cert_reqs=ssl.CERT_NONE,
            assert_hostname=False,
            ssl_minimum_version=ssl.TLSVersion.TLSv1_2,
            ssl_context=_tls_context(),
        )
    return HTTPConnectionPool(host, port, timeout=timeout, maxsize=1, retries=False)


def _open(pool: HTTPConnectionPool, method: str, url: Url, payload: bytes | None,
          headers: dict[str, str]) -> BaseHTTPResponse:
    try:
        return pool.urlopen(
            method,
            url.request_uri,
            body=payload,
            headers=headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
            decode_content=True,
        )
    except ValueError as exc:
        # http.client refuses a bad header name or value before anything is sent.
        if isinstance(exc, urllib3.exceptions.HTTPError):
            raise
        raise RequestBuildError(f"request cannot be sent: {exc}") from None


def exchange(
    method: str,
    url: Url,
    body: http.Body,
    limits: ProxyLimits,
    deadline: float,
    abandoned: threading.Event,
) -> dict[str, Any]:
    """One request on one fresh connection (a worker thread); closed before returning."""
    left = _remaining(deadline)
    if abandoned.is_set():
        raise _DeadlineExceeded("abandoned by the caller")
    payload, multipart_type = _payload(body)
    headers = _request_headers(body, multipart_type)
    timeout = Timeout(connect=min(limits.connect_timeout, left), read=left)
    pool = _connection_pool(url, timeout)
    response: BaseHTTPResponse | None = None
    try:
        response = _open(pool, method, url, payload, headers)
        raw = _read_capped(response, limits.max_response_bytes, deadline, abandoned)
        if raw is None:
            return http.error_ack(
                500,
                f"response from the runtime is larger than {limits.max_response_bytes} bytes",
                upstream_status=response.status,
            )
        reply_type = response.headers.get("Content-Type", "")
        return http.response_ack(
            response.status,
            http.response_headers(response.headers.items()),
            http.decode_body(raw, reply_type),
            reply_type,
        )
    finally:
        # Close, never pool: nothing outlives the call.
        if response is not None:
            response.close()
        pool.close()


def _errno_text(exc: BaseException) -> str | None:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)
    return None


def transport_error(exc: BaseException, limits: ProxyLimits) -> str:
    errors = urllib3.exceptions
    if isinstance(exc, errors.NewConnectionError):
        return f"cannot connect to the runtime: {_errno_text(exc) or exc}"
    if isinstance(exc, TimeoutError | errors.TimeoutError):
        return f"request to the runtime timed out (limit {limits.total_timeout:g} s)"
    if isinstance(exc, errors.SSLError | ssl.SSLError | ssl.CertificateError):
        return f"TLS error: {exc}"
    if isinstance(exc, errors.ProtocolError):
        cause = exc.args[1] if len(exc.args) > 1 else exc.__cause__
        if isinstance(cause, http_client.RemoteDisconnected):
            return "the runtime closed the connection without a reply"
        if isinstance(cause, http_client.IncompleteRead | errors.IncompleteRead):
            return f"incomplete reply from the runtime: {cause!r}"
        if isinstance(cause, http_client.HTTPException):
            return f"invalid reply from the runtime: {cause!r}"
        if isinstance(cause, OSError):
            return f"connection to the runtime failed: {cause.strerror or cause}"
        return f"connection to the runtime failed: {exc}"
    if isinstance(exc, http_client.HTTPException | errors.DecodeError | errors.InvalidHeader):
        return f"invalid reply from the runtime: {exc!r}"
    if isinstance(exc, OSError):
        return f"connection to the runtime failed: {exc.strerror or exc}"
    return f"request to the runtime failed: {exc}"
