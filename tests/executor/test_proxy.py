"""The run_command proxy against the runtime stand-in on a real Docker engine.

A bridge network on a documentation subnet holds the stand-in (HTTPS on 8443) and a
plain-HTTP helper (port 8080, close-delimited and latin-1 replies); the proxy reaches
them at their bridge addresses, as the executor reaches a runtime's internal address.
Whether a request was sent is read from the stand-in's access log: a marker in the query
is looked for after a later request's marker has shown up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import docker.models.containers
import docker.models.networks
import pytest

from services.executor.proxy.forward import PROXY_WORKERS, ProxyLimits, proxy
from testkit import dockerenv
from testkit.helpers import async_wait_for, wait_for, zip_program

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

HELPER_PORT = 8080
# A plain HTTP/1.0 server: replies without Content-Length end when the connection does.
HELPER_SCRIPT = r"""
import http.server, time, urllib.parse

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/latin1":
            body = "café".encode("latin-1")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=ISO-8859-1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif url.path == "/stream":
            remaining = int(query.get("bytes", ["0"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            chunk = b"x" * 65536
            try:
                while remaining > 0:
                    self.wfile.write(chunk[: min(remaining, len(chunk))])
                    remaining -= len(chunk)
            except OSError:
                pass
        elif url.path == "/drip":
            # One byte every interval, for as long as the client keeps reading.
            interval = float(query.get("interval", ["0.2"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            try:
                for _ in range(600):
                    self.wfile.write(b"d")
                    self.wfile.flush()
                    time.sleep(interval)
            except OSError:
                pass
        else:
            self.send_error(404)

http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""


@dataclass
class Env:
    network: docker.models.networks.Network
    standin: dockerenv.StandinContainer
    helper_ip: str
    gateway_ip: str
    # A second stand-in, for hostile replies that must not disturb the first.
    hostile: dockerenv.StandinContainer

    @property
    def ip(self) -> str:
        return self.standin.ip

    def access_log(self) -> str:
        return self.standin.container.logs(stdout=True, stderr=True).decode(errors="replace")


def _helper_answers(ip: str) -> bool:
    return dockerenv.answers_ok(http.client.HTTPConnection(ip, HELPER_PORT, timeout=2), "/latin1")


@pytest.fixture(scope="module")
def env(docker_client: docker.DockerClient, standin_image: str) -> Iterator[Env]:
    created: list[docker.models.containers.Container] = []
    network = dockerenv.create_test_bridge(docker_client, "oat-proxy")
    try:
        standin = dockerenv.start_standin(
            docker_client,
            network.name,
            standin_image,
            {"STANDIN_COMPILE_SECONDS": "0.2", "STANDIN_DISCOVERY_PORT": "off"},
        )
        created.append(standin.container)
        hostile = dockerenv.start_standin(
            docker_client,
            network.name,
            standin_image,
            {"STANDIN_COMPILE_SECONDS": "0.2", "STANDIN_DISCOVERY_PORT": "off"},
        )
        created.append(hostile.container)
        helper = docker_client.containers.run(
            dockerenv.BASE_IMAGE,
            ["python3", "-c", HELPER_SCRIPT],
            detach=True,
            name=f"oat-proxy-helper-{uuid.uuid4().hex[:8]}",
            labels=dockerenv.TEST_LABELS,
            network=network.name,
        )
        created.append(helper)

        def helper_ip() -> str | None:
            helper.reload()
            return helper.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"] or None

        ip = wait_for(helper_ip, 15, what="helper address", ignore=(Exception,))
        wait_for(lambda: _helper_answers(ip), 20, what="helper answering", ignore=(Exception,))
        network.reload()
        # The host's own address on the bridge, as the containers see it.
        gateway = helper.attrs["NetworkSettings"]["Networks"][network.name]["Gateway"]
        yield Env(network, standin, ip, gateway, hostile)
    finally:
        for container in created:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()


def _cmd(method: str, api: str, **extra: Any) -> dict[str, Any]:
    """Params as the gateway's contract normalises them."""
    params: dict[str, Any] = {
        "device_id": "plc-test",
        "method": method,
        "api": api,
        "port": 8443,
        "headers": {},
        "params": {},
        "data": None,
        "files": {},
    }
    params.update(extra)
    return params


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _response(ack: dict[str, Any]) -> dict[str, Any]:
    assert set(ack) >= {"status", "http_response"}, ack
    response: dict[str, Any] = ack["http_response"]
    assert set(response) >= {"status_code", "headers", "body", "ok", "content_type"}
    assert ack["status"] == ("success" if response["ok"] else "error")
    return response


async def _assert_never_arrived(env: Env, marker: str) -> None:
    """Send a request that does arrive, wait for it in the log, then look for a request
    to `/api/test/echo?marker=<marker>`."""
    sentinel = uuid.uuid4().hex
    ack = await proxy(env.ip, _cmd("GET", f"/api/test/echo?sentinel={sentinel}"))
    assert _response(ack)["status_code"] == 200
    wait_for(lambda: sentinel in env.access_log(), 10, what="sentinel in the access log")
    log = env.access_log()
    assert f"/api/test/echo?marker={marker}" not in log
    assert f"?sentinel={sentinel}" in log


@pytest.fixture(scope="module")
def admin_token(env: Env) -> str:
    """The first user (admin) created through the proxy, and their token."""

    async def create_and_login() -> str:
        credentials = {"username": "admin", "password": "s3cret-pass"}
        created = _response(await proxy(env.ip, _cmd("POST", "/api/create-user", data=credentials)))
        assert created["status_code"] == 201, created
        assert created["body"]["role"] == "admin"
        login = _response(await proxy(env.ip, _cmd("POST", "/api/login", data=credentials)))
        assert login["status_code"] == 200, login
        return str(login["body"]["access_token"])

    return asyncio.run(create_and_login())


# -- the runtime API through the proxy --------------------------------------------------


async def test_version_without_auth(env: Env) -> None:
    response = _response(await proxy(env.ip, _cmd("GET", "/api/version")))
    assert response["status_code"] == 200
    assert response["body"] == {"version": "v4.0.0"}
    assert response["content_type"] == "application/json"
    assert response["headers"]["X-OpenPLC-Runtime-Version"] == "v4.0.0"


async def test_users_and_login(env: Env, admin_token: str) -> None:
    operator = {"username": "operator", "password": "op-pass", "role": "user"}
    anonymous = _response(await proxy(env.ip, _cmd("POST", "/api/create-user", data=operator)))
    assert anonymous["status_code"] == 401
    created = await proxy(
        env.ip, _cmd("POST", "/api/create-user", data=operator, headers=_bearer(admin_token))
    )
    assert _response(created)["status_code"] == 201
    assert created["status"] == "success"

    login = _response(
        await proxy(
            env.ip, _cmd("POST", "/api/login", data={"username": "operator", "password": "op-pass"})
        )
    )
    assert login["status_code"] == 200 and login["body"]["access_token"]

    wrong = await proxy(
        env.ip, _cmd("POST", "/api/login", data={"username": "operator", "password": "nope"})
    )
    assert wrong["status"] == "error"
    assert _response(wrong)["status_code"] == 401
    assert wrong["http_response"]["body"] == "Wrong username or password"


async def test_plc_control_with_upload(env: Env, admin_token: str) -> None:
    auth = _bearer(admin_token)
    missing = _response(await proxy(env.ip, _cmd("GET", "/api/status")))
    assert missing["status_code"] == 401
    assert missing["body"] == {"msg": "Missing Authorization Header"}

    program = zip_program({"program.st": "PROGRAM main\nEND_PROGRAM\n"})
    files = {
        "file": {
            "filename": "program.zip",
            "content_base64": base64.b64encode(program).decode(),
            "content_type": "application/zip",
        }
    }
    upload = _response(
        await proxy(env.ip, _cmd("POST", "/api/upload-file", headers=auth, files=files))
    )
    assert upload["status_code"] == 200
    assert upload["body"] == {"UploadFileFail": "", "CompilationStatus": "COMPILING"}

    async def compiled() -> str:
        reply = _response(await proxy(env.ip, _cmd("GET", "/api/compilation-status", headers=auth)))
        return str(reply["body"]["status"])

    async def finished() -> str | None:
        status = await compiled()
        return status if status in ("SUCCESS", "FAILED") else None
    status = await async_wait_for(finished, 15, "compilation to finish", interval=0.1)
    assert status == "SUCCESS"

    started = _response(await proxy(env.ip, _cmd("GET", "/api/start-plc", headers=auth)))
    assert started["body"] == {"status": "START:OK"}
    running = _response(await proxy(env.ip, _cmd("GET", "/api/status", headers=auth)))
    assert running["body"]["status"] == "STATUS:RUNNING"
    stopped = _response(await proxy(env.ip, _cmd("GET", "/api/stop-plc", headers=auth)))
    assert stopped["body"] == {"status": "STOP:OK"}
    again = _response(await proxy(env.ip, _cmd("GET", "/api/status", headers=auth)))
    assert again["body"]["status"] == "STATUS:STOPPED"


async def test_runtime_logs_with_query_in_api_and_params(env: Env, admin_token: str) -> None:
    reply = _response(
        await proxy(
            env.ip,
            _cmd(
                "GET",
                "/api/runtime-logs?id=0",
                params={"level": "INFO"},
                headers=_bearer(admin_token),
            ),
        )
    )
    assert reply["status_code"] == 200
    assert isinstance(reply["body"]["runtime-logs"], list)


async def test_errors_pass_through(env: Env, admin_token: str) -> None:
    wrong_method = await proxy(env.ip, _cmd("GET", "/api/login"))
    assert wrong_method["status"] == "error"
    assert _response(wrong_method)["status_code"] == 405

    outside = _response(await proxy(env.ip, _cmd("GET", "/no-such-page")))
    assert outside["status_code"] == 404
    assert outside["content_type"].startswith("text/html")
    assert isinstance(outside["body"], str) and "Not Found" in outside["body"]

    unknown = _response(
        await proxy(env.ip, _cmd("GET", "/api/whatever", headers=_bearer(admin_token)))
    )
    assert unknown["status_code"] == 200
    assert unknown["body"] == {"error": "Unknown argument"}

    bad_token = _response(await proxy(env.ip, _cmd("GET", "/api/status", headers=_bearer("x.y.z"))))
    assert bad_token["status_code"] == 422


# -- what is forwarded -------------------------------------------------------------------


async def test_headers_query_and_json_body_are_forwarded(env: Env) -> None:
    headers = {
        "Authorization": "Bearer abc",
        "X-Trace": "t-1",
        "Host": "evil.example",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "Connection": "X-Hop",
        "X-Hop": "should-not-pass",
    }
    data = {"a": [1, 2], "b": "é"}
    reply = _response(
        await proxy(
            env.ip,
            _cmd(
                "PUT",
                "/api/test/echo?from=api",
                headers=headers,
                params={"q": "a b", "many": [1, True], "none": None},
                data=data,
            ),
        )
    )
    echo = reply["body"]
    assert echo["method"] == "PUT"
    assert echo["query"] == {"from": ["api"], "q": ["a b"], "many": ["1", "true"]}
    seen = {k.lower(): v for k, v in echo["headers"].items()}
    assert seen["authorization"] == "Bearer abc"
    assert seen["x-trace"] == "t-1"
    assert seen["host"] == f"{env.ip}:8443"
    assert "proxy-authorization" not in seen and "x-hop" not in seen
    assert seen["content-type"] == "application/json"
    sent = b'{"a":[1,2],"b":"\xc3\xa9"}'
    assert echo["body_sha256"] == hashlib.sha256(sent).hexdigest()


async def test_form_data_with_a_form_content_type(env: Env) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    reply = _response(
        await proxy(
            env.ip, _cmd("POST", "/api/test/echo", headers=headers, data={"k": "v w", "n": 3})
        )
    )
    echo = reply["body"]
    assert {k.lower(): v for k, v in echo["headers"].items()}["content-type"] == headers[
        "Content-Type"
    ]
    assert echo["body_sha256"] == hashlib.sha256(b"k=v+w&n=3").hexdigest()


async def test_files_and_fields_as_multipart(env: Env) -> None:
    blob = bytes(range(256)) * 64
    files = {
        "file": {
            "filename": "prog.zip",
            "content_base64": base64.b64encode(blob).decode(),
            "content_type": "application/zip",
        }
    }
    reply = _response(
        await proxy(
            env.ip,
            _cmd(
                "POST",
                "/api/test/echo",
                headers={"Content-Type": "application/json"},
                data={"comment": "hello"},
                files=files,
            ),
        )
    )
    parts = {p["name"]: p for p in reply["body"]["parts"]}
    assert parts["file"]["filename"] == "prog.zip"
    assert parts["file"]["content_type"] == "application/zip"
    assert parts["file"]["size"] == len(blob)
    assert parts["file"]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert parts["comment"]["filename"] is None
    assert parts["comment"]["sha256"] == hashlib.sha256(b"hello").hexdigest()


# -- what is not done ----------------------------------------------------------------------


async def test_unsupported_method_sends_nothing(env: Env) -> None:
    marker = uuid.uuid4().hex
    ack = await proxy(env.ip, _cmd("PATCH", f"/api/test/echo?marker={marker}"))
    response = _response(ack)
    assert response["status_code"] == 400 and ack["status"] == "error"
    await _assert_never_arrived(env, marker)


async def test_redirect_is_returned_not_followed(env: Env) -> None:
    marker = uuid.uuid4().hex
    target = f"https://{env.ip}:8443/api/test/echo?marker={marker}"
    api = "/api/test/redirect?" + urllib.parse.urlencode({"to": target, "code": 307})
    response = _response(await proxy(env.ip, _cmd("GET", api)))
    assert response["status_code"] == 307
    assert response["headers"]["Location"] == target
    assert response["body"] == {"redirect": target}
    await _assert_never_arrived(env, marker)


async def test_addresses_of_the_host_are_refused(env: Env) -> None:
    marker = uuid.uuid4().hex
    for target in (env.gateway_ip, "127.0.0.1", "169.254.169.254"):
        ack = await proxy(target, _cmd("GET", f"/api/test/echo?marker={marker}"))
        assert ack["status"] == "error" and "refused" in ack["error"], ack
        assert "http_response" not in ack


async def test_allowed_networks_keep_other_containers_out(env: Env) -> None:
    subnet = env.network.attrs["IPAM"]["Config"][0]["Subnet"]
    inside = ProxyLimits(allowed_networks=(subnet,))  # type: ignore[arg-type]
    ok = _response(await proxy(env.ip, _cmd("GET", "/api/version"), limits=inside))
    assert ok["status_code"] == 200
    elsewhere = ProxyLimits(allowed_networks=("198.51.100.0/24",))  # type: ignore[arg-type]
    refused = await proxy(env.helper_ip, _cmd("GET", "/latin1", port=HELPER_PORT), limits=elsewhere)
    assert refused["status"] == "error" and "outside" in refused["error"]


# -- bounds and transport failures ---------------------------------------------------------


async def test_hung_runtime_times_out_alone(env: Env) -> None:
    limits = ProxyLimits(total_timeout=2.0, connect_timeout=2.0)
    started = time.monotonic()
    hang = asyncio.create_task(
        proxy(env.ip, _cmd("GET", "/api/test/hang?seconds=30"), limits=limits)
    )
    for _ in range(3):
        quick = _response(await proxy(env.ip, _cmd("GET", "/api/version"), limits=limits))
        assert quick["status_code"] == 200
        assert not hang.done(), "the quick calls must finish while the hung one waits"
    ack = await hang
    elapsed = time.monotonic() - started
    response = _response(ack)
    assert response["status_code"] == 500 and ack["status"] == "error"
    assert "timed out" in response["body"]["error"]
    assert 2.0 <= elapsed < 10.0


async def test_trickling_replies_end_at_the_overall_deadline(env: Env) -> None:
    # Every receive succeeds well within any per-read timeout; only the total bound stops
    # them.  They take every proxy thread: the last call gets one only if the workers
    # themselves stop at the deadline (the caller giving up would not free them).
    limits = ProxyLimits(total_timeout=2.0, connect_timeout=2.0)
    started = time.monotonic()
    drips = [
        asyncio.create_task(
            proxy(env.helper_ip, _cmd("GET", "/drip?interval=0.2", port=HELPER_PORT), limits=limits)
        )
        for _ in range(PROXY_WORKERS)
    ]
    after = asyncio.create_task(
        proxy(env.ip, _cmd("GET", "/api/version"), limits=ProxyLimits(total_timeout=5.0))
    )
    for drip in drips:
        response = _response(await drip)
        assert response["status_code"] == 500
        assert "timed out" in response["body"]["error"]
    assert 2.0 <= time.monotonic() - started < 4.0
    assert _response(await after)["status_code"] == 200


async def test_calls_beyond_a_runtimes_turns_wait_within_their_own_deadline(env: Env) -> None:
    hang_limits = ProxyLimits(total_timeout=3.0, connect_timeout=2.0)
    # The runtime's turns are taken by hung requests (the rest of them wait)...
    hangs = [
        asyncio.create_task(
            proxy(env.ip, _cmd("GET", "/api/test/hang?seconds=5"), limits=hang_limits)
        )
        for _ in range(PROXY_WORKERS)
    ]
    started = time.monotonic()
    # ...so these queue; one gives up before a turn frees, one outlasts the hung calls.
    marker = uuid.uuid4().hex
    short = asyncio.create_task(
        proxy(
            env.ip,
            _cmd("GET", f"/api/test/echo?marker={marker}"),
            limits=ProxyLimits(total_timeout=1.0),
        )
    )
    patient = asyncio.create_task(
        proxy(env.ip, _cmd("GET", "/api/version"), limits=ProxyLimits(total_timeout=15.0))
    )
    short_ack = await short
    short_elapsed = time.monotonic() - started
    assert "timed out" in _response(short_ack)["body"]["error"]
    assert 1.0 <= short_elapsed < 2.5
    assert not patient.done(), "no turn is free before the hung calls time out"
    patient_ack = await patient
    assert _response(patient_ack)["status_code"] == 200
    assert time.monotonic() - started >= 2.0
    for hang in hangs:
        assert "timed out" in _response(await hang)["body"]["error"]
    await _assert_never_arrived(env, marker)


async def test_a_slow_header_runtime_blocks_neither_other_runtimes_nor_past_its_deadline(
    env: Env,
) -> None:
    # A runtime sending its reply headers a byte at a time: every receive succeeds, so
    # only one deadline over the whole exchange ends these calls.
    limits = ProxyLimits(total_timeout=3.0, connect_timeout=2.0)

    async def slow() -> tuple[dict[str, Any], float]:
        started = time.monotonic()
        ack = await proxy(
            env.hostile.ip, _cmd("GET", "/api/test/slow-headers?interval=0.5"), limits=limits
        )
        return ack, time.monotonic() - started

    slow_calls = [asyncio.create_task(slow()) for _ in range(PROXY_WORKERS)]
    await asyncio.sleep(1.0)
    # Meanwhile another runtime answers in its normal time, several times over.
    for _ in range(3):
        started = time.monotonic()
        quick = _response(await proxy(env.ip, _cmd("GET", "/api/version")))
        assert quick["status_code"] == 200
        assert time.monotonic() - started < 0.5
    assert not any(call.done() for call in slow_calls)
    for call in slow_calls:
        ack, elapsed = await call
        response = _response(ack)
        assert response["status_code"] == 500
        assert "timed out" in response["body"]["error"]
        assert 3.0 <= elapsed < 3.6, elapsed
    # No worker is left behind: a full set of calls to the healthy runtime runs at once.
    started = time.monotonic()
    acks = await asyncio.gather(
        *(proxy(env.ip, _cmd("GET", "/api/test/hang?seconds=0.5")) for _ in range(2)),
        *(proxy(env.helper_ip, _cmd("GET", "/latin1", port=HELPER_PORT)) for _ in range(2)),
    )
    assert all(_response(ack)["status_code"] == 200 for ack in acks)
    assert time.monotonic() - started < 1.5


async def test_connections_to_a_runtime_are_kept_and_reused(env: Env) -> None:
    async def counts() -> dict[str, int]:
        reply = _response(await proxy(env.ip, _cmd("GET", "/api/test/connections")))
        return dict(reply["body"])

    before = await counts()
    for _ in range(10):
        assert _response(await proxy(env.ip, _cmd("GET", "/api/version")))["status_code"] == 200
    after = await counts()
    assert after["requests"] - before["requests"] == 11
    # One TLS handshake at most (none when a kept connection was already there).
    assert after["handshakes"] - before["handshakes"] <= 1, (before, after)


async def test_big_declared_response_is_capped(env: Env) -> None:
    limits = ProxyLimits(max_response_bytes=1024 * 1024)
    small = _response(await proxy(env.ip, _cmd("GET", "/api/test/big?bytes=1000"), limits=limits))
    assert small["status_code"] == 200
    assert small["body"]["size"] == 1000
    assert base64.b64decode(small["body"]["content_base64"]).startswith(b"0123456789abcdef")

    big = _response(await proxy(env.ip, _cmd("GET", "/api/test/big?bytes=1048577"), limits=limits))
    assert big["status_code"] == 500
    assert "larger than 1048576 bytes" in big["body"]["error"]
    assert big["body"]["upstream_status"] == 200


async def test_endless_undeclared_response_is_cut_at_the_cap(env: Env) -> None:
    limits = ProxyLimits(max_response_bytes=256 * 1024, total_timeout=20)
    started = time.monotonic()
    ack = await proxy(
        env.helper_ip, _cmd("GET", "/stream?bytes=2000000000", port=HELPER_PORT), limits=limits
    )
    response = _response(ack)
    assert response["status_code"] == 500
    assert "larger than 262144 bytes" in response["body"]["error"]
    # Stopped at the cap, long before 2 GB or the timeout.
    assert time.monotonic() - started < 15


async def test_plain_http_on_another_port(env: Env) -> None:
    latin = _response(await proxy(env.helper_ip, _cmd("GET", "/latin1", port=HELPER_PORT)))
    assert latin["status_code"] == 200
    assert latin["body"] == "café"
    streamed = _response(
        await proxy(env.helper_ip, _cmd("GET", "/stream?bytes=100", port=HELPER_PORT))
    )
    assert streamed["body"] == {
        "content_base64": base64.b64encode(b"x" * 100).decode(),
        "size": 100,
    }


async def test_closed_port_is_connection_refused(env: Env) -> None:
    ack = await proxy(env.ip, _cmd("GET", "/api/version", port=9))
    response = _response(ack)
    assert response["status_code"] == 500 and ack["status"] == "error"
    assert "refused" in response["body"]["error"].lower()


async def test_tls_to_a_plain_server_is_a_transport_error(env: Env) -> None:
    limits = ProxyLimits(https_port=HELPER_PORT, total_timeout=10)
    response = _response(
        await proxy(env.helper_ip, _cmd("GET", "/latin1", port=HELPER_PORT), limits=limits)
    )
    assert response["status_code"] == 500
    assert response["body"]["error"].startswith("TLS error")


async def test_plain_http_to_the_tls_port_is_a_transport_error(env: Env) -> None:
    limits = ProxyLimits(https_port=1, total_timeout=10)
    response = _response(await proxy(env.ip, _cmd("GET", "/api/version"), limits=limits))
    assert response["status_code"] == 500
    assert "connection" in response["body"]["error"]


async def test_proxy_variables_are_ignored(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # Were they honoured, the request would go to a closed loopback port and fail.
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    response = _response(await proxy(env.ip, _cmd("GET", "/api/version")))
    assert response["status_code"] == 200
