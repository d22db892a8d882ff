"""The metrics engine client against a small fake engine on a unix socket (and one on
loopback TCP): version negotiation, paths, chunked stats streams, typed errors, timeouts."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.errors import DockerUnavailable
from services.metrics import containers
from services.metrics.access import EngineAccess
from services.metrics.engine import (
    MAX_LINE,
    Engine,
    EngineAddressError,
    EngineError,
    EngineUnavailable,
    NotFound,
    parse_address,
)
from testkit.helpers import short_tmpdir

pytestmark = pytest.mark.timeout(30)

API = "1.43"
CID = "c0ffee" * 10 + "abcd"


@dataclass
class FakeState:
    """What the fake engine answers and what it was asked."""

    paths: list[str] = field(default_factory=list)
    routes: dict[str, Callable[[Handler], object]] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: FakeState

    def do_GET(self) -> None:
        self.state.paths.append(self.path)
        route = urllib.parse.urlsplit(self.path).path
        for prefix, answer in self.state.routes.items():
            if route == prefix or route.startswith(prefix + "/"):
                answer(self)
                return
        self.reply(404, {"message": f"page not found: {route}"})

    def reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a unix peer has no address to print


class UnixEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class TcpEngine(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def _serve(server: socketserver.BaseServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _handler(state: FakeState) -> type[Handler]:
    return type("BoundHandler", (Handler,), {"state": state})


@pytest.fixture
def fake() -> Iterator[tuple[FakeState, str]]:
    """A fake engine on a unix socket; yields its state and its address."""
    state = FakeState()
    state.routes["/version"] = lambda h: h.reply(200, {"ApiVersion": API, "Version": "99.0"})
    with short_tmpdir("oate") as tmp:
        sock = tmp / "engine.sock"
        server = UnixEngine(str(sock), _handler(state))
        try:
            with contextlib.contextmanager(_serve)(server):
                yield state, f"unix://{sock}"
        finally:
            state.release.set()  # never leave a handler hanging


def test_negotiates_and_prefixes_paths(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    listing = [{"Id": CID, "Names": ["/plc1"], "State": "running", "Labels": {}}]
    state.routes[f"/v{API}/containers/json"] = lambda h: h.reply(200, listing)
    state.routes[f"/v{API}/containers/plc1/json"] = lambda h: h.reply(200, {"Id": CID})
    engine = Engine(url, 2)
    assert engine.negotiate() == API
    filters = {"label": ["orchestrator.managed=true", "orchestrator.kind=runtime"]}
    assert engine.list_containers(all=True, filters=filters) == listing
    assert engine.inspect_container("plc1") == {"Id": CID}
    first, listed, inspected = state.paths
    assert first == "/version"  # unversioned: it is how the version is learnt
    split = urllib.parse.urlsplit(listed)
    assert split.path == f"/v{API}/containers/json"
    query = urllib.parse.parse_qs(split.query)
    assert query["all"] == ["1"] and json.loads(query["filters"][0]) == filters
    assert inspected == f"/v{API}/containers/plc1/json"


def test_not_found_and_engine_errors_carry_the_message(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    state.routes[f"/v{API}/containers/broken"] = lambda h: h.reply(
        500, {"message": "something broke inside"})
    engine = Engine(url, 2)
    engine.negotiate()
    with pytest.raises(NotFound) as missing:
        engine.inspect_container("nope")
    assert missing.value.status == 404 and "page not found" in missing.value.message
    with pytest.raises(EngineError) as broken:
        engine.inspect_container("broken")
    assert not isinstance(broken.value, NotFound)
    assert (broken.value.status, broken.value.message) == (500, "something broke inside")
    # A name can never reach another path.
    with pytest.raises(NotFound):
        engine.inspect_container("../../version")
    assert state.paths[-1] == f"/v{API}/containers/..%2F..%2Fversion/json"
    # The metrics helper turns "no such container" into None.
    assert containers.inspect_runtime(engine, "nope", "inst") is None


def test_stats_stream_decodes_objects_across_chunks(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    objects = [{"read": f"t{i}", "cpu_stats": {"cpu_usage": {"total_usage": i}}}
               for i in range(4)]
    # Objects end with a newline; a blank line between two of them is skipped.
    wire = b"\n".join(json.dumps(o).encode() + b"\n" for o in objects)

    def stats(h: Handler) -> None:
        assert urllib.parse.urlsplit(h.path).query == "stream=1"
        h.start_chunked()
        # Chunk boundaries fall inside objects, and one chunk holds several objects.
        for piece in (wire[:7], wire[7:90], wire[90:91], wire[91:]):
            h.chunk(piece)
        h.chunk(b"")

    state.routes[f"/v{API}/containers/{CID}/stats"] = stats
    engine = Engine(url, 2)
    engine.negotiate()
    assert list(engine.stats(CID)) == objects


def test_stats_line_too_long_is_an_engine_error(fake: tuple[FakeState, str]) -> None:
    state, url = fake

    def flood(h: Handler) -> None:
        h.start_chunked()
        with contextlib.suppress(OSError):  # the client hangs up once it has seen enough
            for _ in range(MAX_LINE // 65536 + 2):
                h.chunk(b"x" * 65536)
            h.chunk(b"")

    state.routes[f"/v{API}/containers/{CID}/stats"] = flood
    engine = Engine(url, 2)
    engine.negotiate()
    with pytest.raises(EngineError, match="longer than"):
        list(engine.stats(CID))


def test_dead_socket_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="socket not found"):
        Engine(f"unix://{tmp_path}/missing.sock", 2).negotiate()
    with short_tmpdir("oate") as tmp:
        # A socket file nobody listens on any more: connection refused.
        path = tmp / "dead.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.close()
        with pytest.raises(EngineUnavailable, match="refused"):
            Engine(f"unix://{path}", 2).negotiate()


def test_hung_engine_times_out(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    state.routes[f"/v{API}/containers/json"] = lambda h: state.release.wait(20)

    def one_then_silence(h: Handler) -> None:
        h.start_chunked()
        h.chunk(b'{"read": "t0"}\n')
        state.release.wait(20)

    state.routes[f"/v{API}/containers/{CID}/stats"] = one_then_silence
    engine = Engine(url, 0.3)
    engine.negotiate()
    started = time.monotonic()
    with pytest.raises(EngineUnavailable, match="no answer in time"):
        engine.list_containers()
    assert time.monotonic() - started < 3
    stream = iter(engine.stats(CID))
    assert next(stream) == {"read": "t0"}
    started = time.monotonic()
    with pytest.raises(EngineUnavailable):
        next(stream)
    assert time.monotonic() - started < 3


def test_interrupt_wakes_a_blocked_stream_reader(fake: tuple[FakeState, str]) -> None:
    state, url = fake

    def silence(h: Handler) -> None:
        h.start_chunked()
        state.release.wait(20)

    state.routes[f"/v{API}/containers/{CID}/stats"] = silence
    engine = Engine(url, 20)
    engine.negotiate()
    reader = engine.stats(CID)
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.extend(reader), daemon=True)
    thread.start()
    started = time.monotonic()
    reader.interrupt()
    thread.join(5)
    assert not thread.is_alive() and got == []
    assert time.monotonic() - started < 3


def test_access_maps_transport_failures(fake: tuple[FakeState, str], tmp_path: Path) -> None:
    state, url = fake
    state.routes[f"/v{API}/containers/json"] = lambda h: state.release.wait(20)
    gone = EngineAccess(f"unix://{tmp_path}/missing.sock", 2, 1)
    with pytest.raises(DockerUnavailable, match="socket not found"):
        gone.connect()
    assert not gone.available
    with pytest.raises(DockerUnavailable):
        gone.client()
    gone.close()
    access = EngineAccess(url, 1, 1)
    access.connect()
    assert access.available and access.api_version == API
    with pytest.raises(DockerUnavailable, match="no answer in time"):
        access.call_sync(lambda e: e.list_containers())
    assert not access.available  # until the next connect
    access.close()


def test_addresses() -> None:
    assert parse_address("unix:///var/run/docker.sock") == ("unix", "/var/run/docker.sock", 0)
    assert parse_address("tcp://127.0.0.1:2376") == ("tcp", "127.0.0.1", 2376)
    for bad in ("https://engine:2376", "ssh://user@host", "unix://", "npipe:////./pipe/x"):
        with pytest.raises(EngineAddressError):
            parse_address(bad)
    with pytest.raises(DockerUnavailable, match="unsupported"):
        EngineAccess("https://engine:2376", 1, 1).connect()


def test_plain_tcp_engine() -> None:
    state = FakeState()
    state.routes["/version"] = lambda h: h.reply(200, {"ApiVersion": "1.41"})
    state.routes["/v1.41/containers/json"] = lambda h: h.reply(200, [])
    server = TcpEngine(("127.0.0.1", 0), _handler(state))
    with contextlib.contextmanager(_serve)(server):
        engine = Engine(f"tcp://127.0.0.1:{server.server_address[1]}", 2)
        assert engine.negotiate() == "1.41"
        assert engine.list_containers() == []
