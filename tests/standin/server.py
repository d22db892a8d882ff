"""HTTPS REST server and UDP discovery responder of the runtime stand-in.

Behaves like OpenPLC Runtime v4 where the agent and the cloud can observe it:
HTTPS only (self-signed certificate made at first start), `/api/` routes with
JWT login, PLC control by GET, multipart program upload, runtime logs, and a
LAN discovery responder. Routes under `/api/test/` exist only in the
stand-in; they let proxy tests provoke slow, large and redirecting replies.

Run with `python3 -m standin.server` (in the image) or
`python3 -m tests.standin.server` (from the repository).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import jwt_hs256, multipart
from .runtime import LOG_LEVELS, Runtime, UserError

log = logging.getLogger(__name__)

DEFAULT_VERSION = "v4.0.0"
DISCOVERY_MAGIC = b"OPENPLC_DISCOVER_V1"
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_HANG_SECONDS = 3600.0
MAX_BIG_BYTES = 2 * 1024 * 1024 * 1024
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0

# Routes that need a token, by method. Anything else under /api/ that is not
# public is an "unknown argument" for a token holder.
_AUTH_ROUTES: dict[str, str] = {
    "start-plc": "GET",
    "stop-plc": "GET",
    "status": "GET",
    "ping": "GET",
    "compilation-status": "GET",
    "runtime-logs": "GET",
    "upload-file": "POST",
}
_PUBLIC_ROUTES: dict[str, str] = {
    "version": "GET",
    "get-users-info": "GET",
    "create-user": "POST",
    "login": "POST",
}


class StandinError(Exception):
    """The stand-in could not start (certificate, ports)."""


@dataclass
class Config:
    data_dir: Path
    host: str = "0.0.0.0"
    https_port: int = 8443
    # None disables the discovery responder; 0 picks a free port.
    discovery_port: int | None = 33333
    version: str = DEFAULT_VERSION
    token_ttl: float = 900.0
    compile_seconds: float = 0.5


def ensure_certificate(data_dir: Path) -> tuple[Path, Path]:
    """Self-signed certificate like the runtime makes at first start."""
    cert, key = data_dir / "cert.pem", data_dir / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    cmd = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-sha256",
        "-days",
        "365",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise StandinError(f"cannot create the self-signed certificate: {exc}") from exc
    key.chmod(0o600)
    log.info("created self-signed certificate %s", cert)
    return cert, key


class _HTTPSServer(ThreadingHTTPServer):
    """Threaded server doing the TLS handshake in the connection's thread, so a
    silent client cannot stall accept()."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        context: ssl.SSLContext,
        runtime: Runtime,
        version: str,
        stopping: threading.Event,
    ) -> None:
        self.ssl_context = context
        self.runtime = runtime
        self.version = version
        self.stopping = stopping
        # Test-only counters behind /api/test/connections: kept-alive connections show
        # as requests outnumbering connections.
        self._count_lock = threading.Lock()
        self._counts = {"connections": 0, "handshakes": 0, "requests": 0}
        super().__init__(address, _Handler)

    def count(self, what: str) -> None:
        with self._count_lock:
            self._counts[what] += 1

    def counts(self) -> dict[str, int]:
        with self._count_lock:
            return dict(self._counts)

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.count("connections")
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        self.count("handshakes")
        try:
            tls.settimeout(IDLE_TIMEOUT)
            _Handler(tls, client_address, self)
        except OSError as exc:
            log.debug("connection from %s ended: %s", client_address, exc)
        finally:
            with contextlib.suppress(OSError):
                tls.close()


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPSServer
    protocol_version = "HTTP/1.1"
    server_version = "openplc-runtime-standin"

    def version_string(self) -> str:
        return self.server_version

    # -- plumbing -----------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def send_response(self, code: int, message: str | None = None) -> None:
        # Every reply carries the version header, also the base class's own
        # error pages (malformed requests, unsupported methods).
        super().send_response(code, message)
        self.send_header("X-OpenPLC-Runtime-Version", self.server.version)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, (json.dumps(payload) + "\n").encode(), "application/json", headers)

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 413 for an oversized one."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._json(413, {"msg": "Request entity too large"})
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Trailer section ends with an empty line.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                self.close_connection = True
                self._json(413, {"msg": "Request entity too large"})
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _json_body(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _claims(self) -> dict[str, Any] | None:
        """Claims of the presented token, or None after answering the error."""
        header = self.headers.get("Authorization")
        if not header:
            self._json(401, {"msg": "Missing Authorization Header"})
            return None
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token.strip():
            self._json(
                422, {"msg": "Bad Authorization header. Expected 'Authorization: Bearer <JWT>'"}
            )
            return None
        try:
            return jwt_hs256.decode(self.server.runtime.jwt_secret, token.strip())
        except jwt_hs256.TokenError as exc:
            self._json(exc.status, {"msg": exc.message})
            return None

    # -- routing ------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self.server.count("requests")
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if not url.path.startswith("/api/"):
            self._send(
                404,
                b"<!doctype html>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n",
                "text/html; charset=utf-8",
            )
            return
        route = url.path[len("/api/") :]
        body = self._read_body()
        if body is None:
            return
        if route.startswith("test/"):
            self._test_route(method, route[len("test/") :], query, body)
            return
        expected = _PUBLIC_ROUTES.get(route) or _AUTH_ROUTES.get(route)
        if expected is not None and method != expected:
            self._json(405, {"msg": "The method is not allowed for the requested URL."})
            return
        if route in _PUBLIC_ROUTES:
            getattr(self, "_r_" + route.replace("-", "_"))(body)
            return
        claims = self._claims()
        if claims is None:
            return
        if route in _AUTH_ROUTES:
            getattr(self, "_r_" + route.replace("-", "_"))(query, body)
        else:
            self._json(200, {"error": "Unknown argument"})

    # -- public routes --------------------------------------------------------

    def _r_version(self, body: bytes) -> None:
        self._json(200, {"version": self.server.version})

    def _r_get_users_info(self, body: bytes) -> None:
        if self.server.runtime.users.has_users():
            self._json(200, {"msg": "Users found"})
        else:
            self._json(404, {"msg": "No users found"})

    def _r_create_user(self, body: bytes) -> None:
        users = self.server.runtime.users
        if users.has_users():
            # Only an administrator may add accounts once the first exists.
            if not self.headers.get("Authorization"):
                self._json(401, {"msg": "Authentication required"})
                return
            claims = self._claims()
            if claims is None:
                return
            caller = users.get(int(claims.get("sub", 0)))
            if caller is None or caller.role != "admin":
                self._json(403, {"msg": "Admin privileges required"})
                return
        data = self._json_body(body)
        username, password = data.get("username"), data.get("password")
        role = data.get("role")
        if (
            not isinstance(username, str)
            or not isinstance(password, str)
            or not username
            or not password
        ):
            self._json(400, {"msg": "Missing username or password"})
            return
        try:
            user = users.create(username, password, role if isinstance(role, str) else None)
        except UserError as exc:
            self._json(exc.status, {"msg": exc.message})
            return
        self.server.runtime.logs.add("INFO", f"User {user.username} created")
        self._json(201, {"msg": "User created", "id": user.id, "role": user.role})

    def _r_login(self, body: bytes) -> None:
        data = self._json_body(body)
        username, password = data.get("username"), data.get("password")
        user = None
        if isinstance(username, str) and isinstance(password, str):
            user = self.server.runtime.users.authenticate(username, password)
        if user is None:
            # The runtime answers a bare JSON string here, not an object.
            self._json(401, "Wrong username or password")
            return
        runtime = self.server.runtime
        token = jwt_hs256.encode(runtime.jwt_secret, str(user.id), runtime.token_ttl)
        self._json(200, {"access_token": token})

    # -- routes needing a token -------------------------------------------------

    def _r_start_plc(self, query: dict[str, list[str]], body: bytes) -> None:
        self._json(200, {"status": self.server.runtime.plc.start()})

    def _r_stop_plc(self, query: dict[str, list[str]], body: bytes) -> None:
        self._json(200, {"status": self.server.runtime.plc.stop()})

    def _r_status(self, query: dict[str, list[str]], body: bytes) -> None:
        state = self.server.runtime.plc.state
        self._json(
            200,
            {
                "status": "STATUS:" + state,
                "switchPosition": "run" if state == "RUNNING" else "stop",
            },
        )

    def _r_ping(self, query: dict[str, list[str]], body: bytes) -> None:
        self._json(200, {"status": "PING:OK"})

    def _r_compilation_status(self, query: dict[str, list[str]], body: bytes) -> None:
        self._json(200, self.server.runtime.plc.compilation())

    def _r_runtime_logs(self, query: dict[str, list[str]], body: bytes) -> None:
        after: int | None = None
        raw_id = (query.get("id") or [""])[0]
        if raw_id.strip():
            try:
                after = int(raw_id)
            except ValueError:
                self._json(400, {"error": "Invalid id"})
                return
        level = (query.get("level") or [""])[0].upper() or None
        if level is not None and level not in LOG_LEVELS:
            self._json(400, {"error": "Invalid level"})
            return
        self._json(200, {"runtime-logs": self.server.runtime.logs.query(after, level)})

    def _r_upload_file(self, query: dict[str, list[str]], body: bytes) -> None:
        # The runtime answers 200 whatever happens; the outcome is in the body.
        try:
            parts = multipart.parse(self.headers.get("Content-Type", ""), body)
        except multipart.MultipartError:
            parts = []
        upload = next((p for p in parts if p.name == "file"), None)
        if upload is None or not upload.filename:
            self._json(
                200,
                {"UploadFileFail": "No file part in the request", "CompilationStatus": "FAILED"},
            )
            return
        self._json(200, self.server.runtime.plc.upload(upload.filename, upload.data))

    # -- stand-in test routes -----------------------------------------------------

    def _test_route(self, method: str, name: str, query: dict[str, list[str]], body: bytes) -> None:
        def number(key: str, default: float) -> float:
            try:
                return float((query.get(key) or [str(default)])[0])
            except ValueError:
                return default

        if name == "hang":
            seconds = min(max(number("seconds", 30.0), 0.0), MAX_HANG_SECONDS)
            # Wakes early only when the server shuts down.
            self.server.stopping.wait(seconds)
            self._json(200, {"slept": seconds})
        elif name == "big":
            self._send_big(int(min(max(number("bytes", 1024 * 1024), 0), MAX_BIG_BYTES)))
        elif name == "redirect":
            target = (query.get("to") or [""])[0]
            code = int(number("code", 302))
            if code not in (301, 302, 303, 307, 308) or not target:
                self._json(400, {"error": "need to=URL and a redirect code"})
                return
            self._json(code, {"redirect": target}, {"Location": target})
        elif name == "echo":
            self._echo(method, query, body)
        elif name == "slow-headers":
            self._slow_headers(min(max(number("interval", 2.0), 0.01), 60.0))
        elif name == "connections":
            self._json(200, self.server.counts())
        else:
            self._json(404, {"error": "Unknown test route"})

    def _slow_headers(self, interval: float) -> None:
        """A reply whose status line and headers arrive one byte per ``interval``."""
        self.close_connection = True
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Slow: " + (
            b"s" * 4000
        )
        for byte in head:
            if self.server.stopping.wait(interval):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    def _send_big(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b"0123456789abcdef" * 4096
        remaining = size
        while remaining > 0:
            piece = chunk[: min(remaining, len(chunk))]
            self.wfile.write(piece)
            remaining -= len(piece)

    def _echo(self, method: str, query: dict[str, list[str]], body: bytes) -> None:
        """What arrived, so proxy tests can check what was forwarded."""
        reply: dict[str, Any] = {
            "method": method,
            "path": urllib.parse.urlsplit(self.path).path,
            "query": query,
            "headers": {k: v for k, v in self.headers.items()},
            "body_size": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        try:
            parts = multipart.parse(self.headers.get("Content-Type", ""), body)
        except multipart.MultipartError:
            parts = []
        reply["parts"] = [
            {
                "name": p.name,
                "filename": p.filename,
                "content_type": p.content_type,
                "size": len(p.data),
                "sha256": hashlib.sha256(p.data).hexdigest(),
            }
            for p in parts
        ]
        self._json(200, reply)


class StandinServer:
    """The stand-in runtime: HTTPS REST API plus the discovery responder."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.runtime = Runtime(
            config.data_dir, token_ttl=config.token_ttl, compile_seconds=config.compile_seconds
        )
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._httpd: _HTTPSServer | None = None
        self._udp: socket.socket | None = None

    @property
    def https_port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def discovery_port(self) -> int | None:
        return None if self._udp is None else int(self._udp.getsockname()[1])

    def start(self) -> None:
        cert, key = ensure_certificate(self.config.data_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        try:
            self._httpd = _HTTPSServer(
                (self.config.host, self.config.https_port),
                context,
                self.runtime,
                self.config.version,
                self._stopping,
            )
            if self.config.discovery_port is not None:
                self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._udp.bind((self.config.host, self.config.discovery_port))
                self._udp.settimeout(0.1)
        except OSError as exc:
            self.stop()
            raise StandinError(f"cannot bind: {exc}") from exc
        self.runtime.plc.boot()
        httpd = self._httpd
        # A short poll interval keeps stop() quick.
        self._spawn(lambda: httpd.serve_forever(poll_interval=0.1), "standin-https")
        if self._udp is not None:
            self._spawn(self._discovery_loop, "standin-discovery")
        log.info(
            "stand-in %s listening on https://%s:%d",
            self.config.version,
            self.config.host,
            self.https_port,
        )

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _discovery_loop(self) -> None:
        assert self._udp is not None
        reply = json.dumps(
            {
                "service": "openplc-runtime",
                "version": self.config.version,
                "api_port": self.https_port,
                "hostname": socket.gethostname(),
            }
        ).encode()
        while not self._stopping.is_set():
            try:
                data, peer = self._udp.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if data.strip() == DISCOVERY_MAGIC:
                try:
                    self._udp.sendto(reply, peer)
                except OSError as exc:
                    log.warning("discovery reply to %s failed: %s", peer, exc)

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            if any(t.name == "standin-https" for t in self._threads):
                self._httpd.shutdown()
            self._httpd.server_close()
        if self._udp is not None:
            self._udp.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self.runtime.plc.shutdown()
        self.runtime.plc.wait_compiled(timeout=5)


def config_from_env(env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    discovery = env.get("STANDIN_DISCOVERY_PORT", "33333")
    return Config(
        data_dir=Path(env.get("STANDIN_DATA_DIR", "/var/run/runtime")),
        host=env.get("STANDIN_HOST", "0.0.0.0"),
        https_port=int(env.get("STANDIN_PORT", "8443")),
        discovery_port=None if discovery == "off" else int(discovery),
        version=env.get("STANDIN_VERSION", DEFAULT_VERSION),
        token_ttl=float(env.get("STANDIN_TOKEN_TTL", "900")),
        compile_seconds=float(env.get("STANDIN_COMPILE_SECONDS", "0.5")),
    )


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    server = StandinServer(config_from_env())
    try:
        server.start()
    except StandinError as exc:
        log.error("%s", exc)
        return 1
    done.wait()
    log.info("stopping")
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
