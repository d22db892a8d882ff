"""The proxy's transport against small servers on loopback (no Docker): kept-alive
connections, stale ones after a server closed them, the deadline across every phase, and
the per-runtime turns.  `exchange` and `_send` are called directly because `proxy()`
refuses loopback targets by design."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from urllib3.util import parse_url

from services.executor.proxy import exchange as exchange_mod
from services.executor.proxy import forward, http
from services.executor.proxy.exchange import exchange, transport_error
from services.executor.proxy.forward import PER_RUNTIME_CALLS, ProxyLimits
from services.executor.proxy.pool import ConnectionPool, Watchdog
from testkit.helpers import wait_for

pytestmark = pytest.mark.timeout(60)


@dataclass
class Counting:
    """A keep-alive HTTP/1.1 server on loopback that counts its connections."""

    server: ThreadingHTTPServer
    connections: list[socket.socket] = field(default_factory=list)
    requests: int = 0
    # Close the connection after this many requests on it, without saying so.
    drop_after: int | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


@pytest.fixture
def counting() -> Iterator[Counting]:
    state: Counting

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            state.connections.append(self.request)
            self.served = 0

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if state.drop_after is not None and self.served >= state.drop_after:
                # Say nothing and hang up, as a restarting server does.
                self.close_connection = True
                return
            self.served += 1
            state.requests += 1
            if self.path.startswith("/hang"):
                time.sleep(float(self.path.rpartition("=")[2]))
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # Connections cut by the tests end handlers with errors; they are expected.
    server.handle_error = lambda request, address: None  # type: ignore[method-assign]
    state = Counting(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        for conn in state.connections:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture(autouse=True)
def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(exchange_mod.WATCHDOG)
    monkeypatch.setattr(exchange_mod, "POOL", pool)
    yield pool
    pool.clear()


def _call(port: int, path: str = "/", method: str = "GET", limits: ProxyLimits | None = None,
          runtime: str = "rt-1") -> dict:
    limits = limits or ProxyLimits(total_timeout=5.0)
    url = parse_url(f"http://127.0.0.1:{port}{path}")
    body = http.build_body({"x": 1} if method == "POST" else None, None, {})
    return exchange(method, url, body, limits, time.monotonic() + limits.total_timeout,
                    threading.Event(), runtime)


def test_connections_are_kept_and_reused(counting: Counting, fresh_pool: ConnectionPool) -> None:
    for _ in range(5):
        assert _call(counting.port)["http_response"]["status_code"] == 200
    assert counting.requests == 5
    assert len(counting.connections) == 1
    assert fresh_pool.idle_count() == 1


def test_without_reuse_every_call_connects(counting: Counting) -> None:
    limits = ProxyLimits(total_timeout=5.0, reuse_connections=False)
    for _ in range(3):
        assert _call(counting.port, limits=limits)["http_response"]["status_code"] == 200
    assert len(counting.connections) == 3


def test_another_runtime_key_gets_its_own_connection(counting: Counting) -> None:
    _call(counting.port, runtime="container-a")
    _call(counting.port, runtime="container-b")  # e.g. re-created: same address, new id
    assert len(counting.connections) == 2


def test_a_connection_the_server_closed_is_not_reused(counting: Counting) -> None:
    _call(counting.port)
    # The server side goes away between calls (a runtime restart).
    counting.connections[0].shutdown(socket.SHUT_RDWR)
    time.sleep(0.1)
    for method in ("GET", "POST"):
        ack = _call(counting.port, method=method)
        assert ack["http_response"]["status_code"] == 200, ack
    assert len(counting.connections) == 2


def test_idempotent_request_is_sent_again_once_after_a_silent_close(
    counting: Counting,
) -> None:
    counting.drop_after = 1  # each connection answers once, then hangs up on the next
    _call(counting.port)
    ack = _call(counting.port)  # the kept connection hangs up; sent again on a new one
    assert ack["http_response"]["status_code"] == 200
    assert counting.requests == 2 and len(counting.connections) == 2


def test_post_is_not_sent_twice_after_a_silent_close(counting: Counting) -> None:
    counting.drop_after = 1
    _call(counting.port)
    with pytest.raises(ConnectionError) as caught:
        _call(counting.port, method="POST")
    text = transport_error(caught.value, ProxyLimits())
    assert text == "the runtime closed the connection without a reply"
    assert counting.requests == 1 and len(counting.connections) == 1


def test_idle_connections_are_closed_after_a_while(counting: Counting) -> None:
    pool = ConnectionPool(Watchdog(), idle_seconds=0.3)
    exchange_mod.POOL = pool  # undone by fresh_pool's monkeypatch
    _call(counting.port)
    assert pool.idle_count() == 1
    time.sleep(0.8)
    assert pool.idle_count() == 0
    # The server saw the connection end and closed its side.
    wait_for(lambda: counting.connections[0].fileno() == -1, 5, what="server side closed")


def test_pool_bounds_per_key_and_in_all() -> None:
    pool = ConnectionPool(Watchdog(), per_key=2, total=3)
    made = []
    for n in range(5):
        conn = _FakeConn()
        made.append(conn)
        pool.put(("a" if n < 3 else "b", "192.0.2.1", 80, False), conn)  # type: ignore[arg-type]
    assert pool.idle_count(("a", "192.0.2.1", 80, False)) <= 2
    assert pool.idle_count() == 3
    assert sum(conn.closed for conn in made) == 2


class _FakeConn:
    sock = None
    closed = False

    def close(self) -> None:
        self.closed = True


@contextlib.contextmanager
def _slow_header_server(interval: float) -> Iterator[int]:
    """Accepts connections and sends a reply's status line a byte every `interval`."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
                if stop.wait(interval):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_headers_sent_a_byte_at_a_time_end_at_the_deadline() -> None:
    limits = ProxyLimits(total_timeout=1.0, connect_timeout=1.0)
    with _slow_header_server(0.2) as port:
        started = time.monotonic()
        with pytest.raises(TimeoutError) as caught:
            _call(port, limits=limits)
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 1.5, elapsed
    assert "timed out" in transport_error(caught.value, limits)


async def test_one_runtime_gets_a_bounded_number_of_turns(counting: Counting) -> None:
    limits = ProxyLimits(total_timeout=1.5)
    url = parse_url(f"http://127.0.0.1:{counting.port}/hang?s=3")
    body = http.build_body(None, None, {})
    started = time.monotonic()
    calls = [asyncio.create_task(forward._send("GET", url, body, limits, "slow"))
             for _ in range(PER_RUNTIME_CALLS + 3)]
    await asyncio.sleep(0.5)
    # Only the runtime's share of requests ever reached it.
    assert len(counting.connections) == PER_RUNTIME_CALLS
    other = parse_url(f"http://127.0.0.1:{counting.port}/")
    quick = await forward._send("GET", other, body, limits, "healthy")
    assert quick["http_response"]["status_code"] == 200
    assert time.monotonic() - started < 1.0
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
    # The waiting ones got no turn, or got it at their deadline when the first ones ended.
    assert any(isinstance(o, forward.RuntimeBusy) for o in outcomes)
    assert 1.5 <= time.monotonic() - started < 2.2


def test_a_kept_connection_does_not_wait_for_delayed_acknowledgements(
    counting: Counting,
) -> None:
    # The server writes headers and body separately (as http.server does): without an
    # immediate acknowledgement each kept-alive call stalls ~40 ms on Nagle's algorithm.
    _call(counting.port)
    samples = []
    for _ in range(21):
        started = time.monotonic()
        _call(counting.port)
        samples.append(time.monotonic() - started)
    assert len(counting.connections) == 1
    assert sorted(samples)[10] < 0.030, samples
