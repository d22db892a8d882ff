"""A small, read-only Docker Engine API client on the standard library.

Metrics asks the engine five things: its version, a filtered container listing, one
container's inspect, a container's stats stream and the event stream of its runtimes.  A
full SDK (with its HTTP stack) costs more memory than the rest of the process, so this
module speaks the few HTTP requests itself with `http.client`, over the engine's unix
socket (`unix:///var/run/docker.sock`) or plain TCP (`tcp://host:2375`).  TLS is not
offered: an `https://` or `tcp://` address that needs certificates is refused with
`EngineAddressError`.

Every request opens its own connection: a unix socket connects in microseconds, and no
connection is ever shared between threads.  Connecting is bounded by `connect_timeout`,
every read by `timeout`.

Errors are typed: `EngineUnavailable` when the engine did not answer (socket missing,
refused, reset, timed out, garbled reply), `NotFound` for a 404, `EngineError` for any
other refusal, carrying the engine's own `message`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

DEFAULT_CONNECT_TIMEOUT = 5.0
MAX_BODY = 32 * 1024 * 1024  # a listing of hundreds of containers is well below this
MAX_ERROR_BODY = 64 * 1024
MAX_LINE = 1024 * 1024  # one stats object is a few KB
_VERSION = re.compile(r"^\d+\.\d+$")


class EngineAddressError(ValueError):
    """The engine address is not one this client can speak to."""


class EngineUnavailable(Exception):
    """The engine did not answer: socket missing, connection refused or reset, timeout."""


class EngineError(Exception):
    """The engine answered with a refusal; `message` is its own explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"engine error {status}: {message}")
        self.status = status
        self.message = message


class NotFound(EngineError):
    """The engine knows no such object (HTTP 404)."""


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket; `connect_timeout` bounds the connect, `timeout` the reads."""

    def __init__(self, path: str, timeout: float, connect_timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path
        self.connect_timeout = connect_timeout

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout)
            sock.connect(self.path)
            sock.settimeout(self.timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _TcpConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, timeout: float, connect_timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.connect_timeout = connect_timeout

    def connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        self.sock.settimeout(self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def parse_address(base_url: str) -> tuple[str, str, int]:
    """`(scheme, path or host, port)` of an engine address; EngineAddressError otherwise."""
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme in ("unix", "http+unix"):
        path = parsed.path or parsed.netloc
        if not path:
            raise EngineAddressError(f"no socket path in engine address {base_url!r}")
        return "unix", path, 0
    if parsed.scheme in ("tcp", "http"):
        try:
            port = parsed.port or 2375
        except ValueError:
            raise EngineAddressError(f"bad port in engine address {base_url!r}") from None
        if not parsed.hostname:
            raise EngineAddressError(f"no host in engine address {base_url!r}")
        return "tcp", parsed.hostname, port
    raise EngineAddressError(f"unsupported engine address {base_url!r}: only unix:// and "
                             "plain tcp:// (no TLS) are supported")


class Engine:
    """Read-only calls against one engine; safe to use from several threads at once."""

    def __init__(self, base_url: str, timeout: float,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.base_url = base_url
        self.scheme, self.where, self.port = parse_address(base_url)
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.api_version = ""  # set by negotiate(); until then paths carry no version

    # --- the calls metrics makes ------------------------------------------------------

    def version(self) -> dict[str, Any]:
        """`GET /version` (unversioned: it is how the version is learnt)."""
        body = self._get_json("/version")
        if not isinstance(body, dict):
            raise EngineError(200, "the version reply is not an object")
        return body

    def negotiate(self) -> str:
        """Ask the engine its API version and use it for every later path."""
        version = str(self.version().get("ApiVersion", ""))
        if not _VERSION.match(version):
            raise EngineError(200, f"unusable API version {version!r}")
        self.api_version = version
        return version

    def list_containers(self, all: bool = True,
                        filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        query: dict[str, str] = {"all": "1" if all else "0"}
        if filters:
            query["filters"] = json.dumps(filters)
        body = self._get_json(self._path("/containers/json", query))
        if not isinstance(body, list):
            raise EngineError(200, "the container listing is not a list")
        return body

    def inspect_container(self, name_or_id: str) -> dict[str, Any]:
        body = self._get_json(self._path(f"/containers/{_segment(name_or_id)}/json"))
        if not isinstance(body, dict):
            raise EngineError(200, "the inspect reply is not an object")
        return body

    def stats(self, cid: str, timeout: float | None = None) -> StatsReader:
        """Open the stats stream of a container; iterate the result for decoded objects.
        `timeout` bounds the wait for each object (default: the client's)."""
        path = self._path(f"/containers/{_segment(cid)}/stats", {"stream": "1"})
        return self._stream(path, timeout)

    def events(self, filters: dict[str, list[str]], timeout: float | None = None
               ) -> StatsReader:
        """Open the engine's event stream (`GET /events`, JSON lines) with `filters`;
        `timeout` bounds the wait for each event (default: the client's)."""
        return self._stream(self._path("/events", {"filters": json.dumps(filters)}), timeout)

    # --- plumbing ---------------------------------------------------------------------

    def _path(self, path: str, query: dict[str, str] | None = None) -> str:
        prefix = f"/v{self.api_version}" if self.api_version else ""
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        return f"{prefix}{path}{suffix}"

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "unix":
            return _UnixConnection(self.where, timeout, self.connect_timeout)
        return _TcpConnection(self.where, self.port, timeout, self.connect_timeout)

    def _get_json(self, path: str) -> Any:
        conn = self._connection(self.timeout)
        try:
            response = self._send(conn, path)
            try:
                data = response.read(MAX_BODY + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise EngineUnavailable(_describe(exc, self.where)) from None
            if len(data) > MAX_BODY:
                raise EngineError(response.status, f"reply larger than {MAX_BODY} bytes")
            return _decode(data, response.status)
        finally:
            conn.close()

    def _stream(self, path: str, timeout: float | None) -> StatsReader:
        """GET `path` and keep the connection open for its JSON lines (closed here only
        when the request fails)."""
        conn = self._connection(timeout if timeout is not None else self.timeout)
        try:
            response = self._send(conn, path)
        except BaseException:
            conn.close()
            raise
        return StatsReader(conn, response)

    def _send(self, conn: http.client.HTTPConnection, path: str) -> http.client.HTTPResponse:
        """Send a GET and return a successful response; typed errors otherwise."""
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise EngineUnavailable(_describe(exc, self.where)) from None
        if response.status < 400:
            return response
        try:
            data = response.read(MAX_ERROR_BODY)
        except (OSError, http.client.HTTPException) as exc:
            raise EngineUnavailable(_describe(exc, self.where)) from None
        message = _error_message(data) or response.reason or "no message"
        if response.status == 404:
            raise NotFound(404, message)
        raise EngineError(response.status, message)


class StatsReader:
    """An open stream of JSON lines (stats: one object about every second; events: one per
    event): iterating yields one decoded object per line; `interrupt()` may be called from
    another thread to end it."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse
                 ) -> None:
        self._conn = conn
        self._response = response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            while True:
                try:
                    # http.client undoes the chunked framing; lines are bounded here.
                    line = self._response.readline(MAX_LINE + 1)
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    raise EngineUnavailable(_describe(exc, "stats stream")) from None
                if not line:
                    return  # the engine ended the stream: the container stopped
                if len(line) > MAX_LINE and not line.endswith(b"\n"):
                    raise EngineError(self._response.status,
                                      f"stats line longer than {MAX_LINE} bytes")
                if not line.strip():
                    continue
                body = _decode(line, self._response.status)
                if isinstance(body, dict):
                    yield body
        finally:
            self.close()

    def interrupt(self) -> None:
        """End the stream from another thread: shutting the socket down wakes a reader
        blocked on it at once (the reading thread then closes the connection)."""
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.interrupt()
        self._conn.close()


def _segment(name_or_id: str) -> str:
    """A container name or id as one path segment (never a way into another path)."""
    if not name_or_id:
        raise NotFound(404, "empty container name")
    return urllib.parse.quote(name_or_id, safe="")


def _decode(data: bytes, status: int) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise EngineError(status, f"reply is not JSON: {data[:80]!r}") from None


def _error_message(data: bytes) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        return data.decode(errors="replace").strip()[:300]
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:300]
    return ""


def _describe(exc: BaseException, where: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"socket not found: {where}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: {where}"
    if isinstance(exc, TimeoutError):
        return f"no answer in time from {where}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
