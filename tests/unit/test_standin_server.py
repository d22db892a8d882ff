"""The runtime stand-in server on loopback, without Docker.

Real TLS and real sockets: each server listens on 127.0.0.1 with a free port
and a fresh data directory.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from testkit.helpers import wait_for, zip_program
from tests.standin import jwt_hs256, multipart
from tests.standin.server import Config, StandinServer, ensure_certificate

# The runtime's certificate is self-signed and its clients do not verify it.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

VERSION_HEADER = "X-OpenPLC-Runtime-Version"


class Api:
    """A thin HTTPS client for one stand-in, skipping verification as the runtime's clients do."""

    def __init__(self, server: StandinServer) -> None:
        self.server = server
        self.base = f"https://127.0.0.1:{server.https_port}/api/"
        self.session = requests.Session()
        self.session.verify = False
        # No proxies and no CA bundle from the environment: loopback, unverified.
        self.session.trust_env = False

    def get(self, route: str, token: str | None = None, **kw: Any) -> requests.Response:
        return self.session.get(self.base + route, headers=_auth(token), timeout=10, **kw)

    def post(self, route: str, token: str | None = None, **kw: Any) -> requests.Response:
        return self.session.post(self.base + route, headers=_auth(token), timeout=10, **kw)

    def admin_token(self, username: str = "admin", password: str = "s3cret") -> str:
        self.post("create-user", json={"username": username, "password": password})
        reply = self.post("login", json={"username": username, "password": password})
        assert reply.status_code == 200, reply.text
        return str(reply.json()["access_token"])


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture(scope="session")
def shared_cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated certificate, copied into each server's data directory
    (RSA key generation is the slow part of a start)."""
    directory = tmp_path_factory.mktemp("standin-cert")
    ensure_certificate(directory)
    return directory


@pytest.fixture
def make_api(tmp_path: Path, shared_cert: Path) -> Iterator[Callable[..., Api]]:
    servers: list[StandinServer] = []

    def make(data_dir: Path | None = None, **overrides: Any) -> Api:
        directory = data_dir or tmp_path / f"data{len(servers)}"
        directory.mkdir(exist_ok=True)
        for name in ("cert.pem", "key.pem"):
            if not (directory / name).exists():
                shutil.copy(shared_cert / name, directory / name)
        config = Config(
            data_dir=directory,
            host="127.0.0.1",
            https_port=0,
            discovery_port=0,
            compile_seconds=0.05,
        )
        for key, value in overrides.items():
            setattr(config, key, value)
        server = StandinServer(config)
        server.start()
        servers.append(server)
        return Api(server)

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


def test_version_without_auth_and_header_on_every_reply(api: Api) -> None:
    reply = api.get("version")
    assert reply.status_code == 200
    assert reply.json() == {"version": "v4.0.0"}
    others = (
        api.get("status"),
        api.get("nope"),
        api.post("login", json={}),
        api.session.options(api.base + "version", timeout=5),
        api.get("test/big", params={"bytes": 10}),
    )
    for response in (reply, *others):
        assert response.headers[VERSION_HEADER] == "v4.0.0"


def test_https_only_plain_http_refused(api: Api) -> None:
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{api.server.https_port}/api/version", timeout=5)


def test_certificate_matches_runtime(api: Api) -> None:
    pem = ssl.get_server_certificate(("127.0.0.1", api.server.https_port), timeout=5)
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    assert cert.issuer == cert.subject
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 364 <= lifetime.days <= 366


def test_first_user_rule_and_duplicates(api: Api) -> None:
    assert api.get("get-users-info").status_code == 404
    assert api.get("get-users-info").json() == {"msg": "No users found"}
    first = api.post("create-user", json={"username": "ana", "password": "pw", "role": "user"})
    assert first.status_code == 201
    assert first.json() == {"msg": "User created", "id": 1, "role": "admin"}
    assert api.get("get-users-info").json() == {"msg": "Users found"}
    # Later accounts need an admin token.
    anonymous = api.post("create-user", json={"username": "bob", "password": "pw"})
    assert anonymous.status_code == 401
    assert anonymous.json() == {"msg": "Authentication required"}
    token = api.post("login", json={"username": "ana", "password": "pw"}).json()["access_token"]
    second = api.post("create-user", token, json={"username": "bob", "password": "pw"})
    assert second.status_code == 201
    assert second.json()["role"] == "user"
    duplicate = api.post("create-user", token, json={"username": "bob", "password": "x"})
    assert duplicate.status_code == 409
    assert duplicate.json() == {"msg": "Username already exists"}
    # A non-admin may not add accounts.
    bob = api.post("login", json={"username": "bob", "password": "pw"}).json()["access_token"]
    assert api.post("create-user", bob, json={"username": "c", "password": "p"}).status_code == 403


def test_login_wrong_credentials_is_bare_string(api: Api) -> None:
    api.admin_token()
    for body in ({"username": "admin", "password": "bad"}, {"username": "x", "password": "y"}):
        reply = api.post("login", json=body)
        assert reply.status_code == 401
        assert reply.json() == "Wrong username or password"


def test_token_errors(api: Api) -> None:
    token = api.admin_token()
    missing = api.get("status")
    assert (missing.status_code, missing.json()) == (401, {"msg": "Missing Authorization Header"})
    assert api.get("status", "not-a-jwt").status_code == 422
    header, payload, _ = token.split(".")
    forged = api.get("status", f"{header}.{payload}.{'A' * 43}")
    assert forged.status_code == 422
    assert "msg" in forged.json()
    other_secret = jwt_hs256.encode(b"another secret", "1", 900)
    assert api.get("status", other_secret).status_code == 422
    expired = jwt_hs256.encode(api.server.runtime.jwt_secret, "1", 900, now=time.time() - 1000)
    reply = api.get("status", expired)
    assert (reply.status_code, reply.json()) == (401, {"msg": "Token has expired"})
    assert api.get("status", token).status_code == 200


def test_token_lifetime_is_fifteen_minutes(api: Api) -> None:
    token = api.admin_token()
    claims = jwt_hs256.decode(api.server.runtime.jwt_secret, token)
    assert claims["exp"] - claims["iat"] == 900
    header = json.loads(jwt_hs256._b64decode(token.split(".")[0]))
    assert header == {"alg": "HS256", "typ": "JWT"}


def test_plc_state_machine(api: Api) -> None:
    token = api.admin_token()
    assert api.get("status", token).json() == {"status": "STATUS:EMPTY", "switchPosition": "stop"}
    assert api.get("ping", token).json() == {"status": "PING:OK"}
    assert api.get("stop-plc", token).json() == {"status": "STOP:ERROR"}
    upload = api.post("upload-file", token, files={"file": ("p.zip", zip_program({"a.st": b"x"}))})
    assert upload.status_code == 200
    assert upload.json() == {"UploadFileFail": "", "CompilationStatus": "COMPILING"}
    done = wait_for(
        lambda: (s := api.get("compilation-status", token).json())["status"] == "SUCCESS" and s,
        timeout=10,
        what="compilation SUCCESS", ignore=(Exception,)
    )
    assert done["exit_code"] == 0 and done["logs"]
    # A successful compile leaves the PLC stopped.
    assert api.get("status", token).json()["status"] == "STATUS:STOPPED"
    assert api.get("start-plc", token).json() == {"status": "START:OK"}
    assert api.get("status", token).json() == {"status": "STATUS:RUNNING", "switchPosition": "run"}
    assert api.get("start-plc", token).json() == {"status": "START:ERROR_ALREADY_RUNNING"}
    assert api.get("stop-plc", token).json() == {"status": "STOP:OK"}
    assert api.get("status", token).json()["status"] == "STATUS:STOPPED"
    assert api.get("stop-plc", token).json() == {"status": "STOP:ERROR"}


def test_busy_while_compiling(make_api: Callable[..., Api]) -> None:
    api = make_api(compile_seconds=3.0)
    token = api.admin_token()
    upload = api.post("upload-file", token, files={"file": ("p.zip", zip_program({"a.st": b"x"}))})
    assert upload.json()["CompilationStatus"] == "COMPILING"
    assert api.get("start-plc", token).json() == {"status": "COMMAND:BUSY"}
    assert api.get("status", token).json()["status"] == "STATUS:TRANSITIONING"
    again = api.post("upload-file", token, files={"file": ("p.zip", zip_program({"a.st": b"x"}))})
    assert again.status_code == 200
    assert again.json()["UploadFileFail"]


def test_upload_failures_answer_200(api: Api) -> None:
    token = api.admin_token()
    no_file = api.post("upload-file", token, files={"other": ("p.zip", b"x")})
    assert no_file.status_code == 200
    assert no_file.json()["UploadFileFail"] and no_file.json()["CompilationStatus"] == "FAILED"
    not_zip = api.post("upload-file", token, files={"file": ("p.zip", b"plain text")})
    assert not_zip.status_code == 200
    assert not_zip.json()["CompilationStatus"] == "FAILED"
    failing = api.post("upload-file", token, files={"file": ("p.zip", zip_program({"FAIL": b""}))})
    assert failing.json() == {"UploadFileFail": "", "CompilationStatus": "COMPILING"}
    status = wait_for(
        lambda: (s := api.get("compilation-status", token).json())["status"] == "FAILED" and s,
        timeout=10,
        what="compilation FAILED", ignore=(Exception,)
    )
    assert status["exit_code"] == 1
    assert api.get("status", token).json()["status"] == "STATUS:EMPTY"


def test_upload_requires_token(api: Api) -> None:
    api.admin_token()
    reply = api.post("upload-file", files={"file": ("p.zip", zip_program({"a.st": b"x"}))})
    assert reply.status_code == 401


def test_runtime_logs_filters(api: Api) -> None:
    token = api.admin_token()
    api.get("start-plc", token)
    api.post("upload-file", token, files={"file": ("p.zip", b"not a zip")})
    everything = api.get("runtime-logs", token).json()["runtime-logs"]
    assert everything and all(set(e) == {"id", "timestamp", "level", "message"} for e in everything)
    warnings = api.get("runtime-logs", token, params={"level": "warning"}).json()["runtime-logs"]
    assert warnings and all(e["level"] in ("WARNING", "ERROR") for e in warnings)
    last = everything[-1]["id"]
    assert api.get("runtime-logs", token, params={"id": last}).json() == {"runtime-logs": []}
    assert api.get("runtime-logs", token, params={"id": "x"}).status_code == 400


def test_unknown_routes(api: Api) -> None:
    assert api.get("frobnicate").status_code == 401
    token = api.admin_token()
    reply = api.get("frobnicate", token)
    assert (reply.status_code, reply.json()) == (200, {"error": "Unknown argument"})
    outside = api.session.get(f"https://127.0.0.1:{api.server.https_port}/", timeout=5)
    assert outside.status_code == 404


def test_control_routes_are_get_only(api: Api) -> None:
    token = api.admin_token()
    assert api.post("start-plc", token).status_code == 405
    assert api.get("login").status_code == 405


def test_restart_keeps_users_and_starts_installedzip_program(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    data = tmp_path / "persist"
    first = make_api(data)
    token = first.admin_token()
    first.post("upload-file", token, files={"file": ("p.zip", zip_program({"a.st": b"x"}))})
    assert first.server.runtime.plc.wait_compiled(10)
    first.server.stop()
    second = make_api(data)
    # Same secret and accounts; the installed program starts at boot.
    assert second.get("status", token).json()["status"] == "STATUS:RUNNING"
    assert second.post("login", json={"username": "admin", "password": "s3cret"}).ok


def test_test_routes(api: Api) -> None:
    big = api.get("test/big", params={"bytes": 3_000_000})
    assert big.status_code == 200 and len(big.content) == 3_000_000
    started = time.monotonic()
    hang = api.get("test/hang", params={"seconds": 0.5})
    assert hang.json() == {"slept": 0.5} and time.monotonic() - started >= 0.5
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.session.get(api.base + "test/hang", params={"seconds": 30}, timeout=0.5)
    redirect = api.get("test/redirect", params={"to": "http://192.0.2.1/x"}, allow_redirects=False)
    assert redirect.status_code == 302 and redirect.headers["Location"] == "http://192.0.2.1/x"
    echo = api.post(
        "test/echo", "tok", files={"file": ("p.zip", b"\r\n--\x00")}, params={"a": "1"}
    ).json()
    assert echo["method"] == "POST" and echo["query"] == {"a": ["1"]}
    assert echo["headers"]["Authorization"] == "Bearer tok"
    assert echo["parts"][0]["filename"] == "p.zip" and echo["parts"][0]["size"] == 5


def test_stop_does_not_wait_for_hanging_request(api: Api) -> None:
    outcome: list[object] = []

    def hang() -> None:
        try:
            outcome.append(
                api.session.get(api.base + "test/hang", params={"seconds": 60}, timeout=10)
            )
        except requests.exceptions.RequestException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=hang)
    worker.start()
    wait_for(lambda: threading.active_count() > 2, timeout=5, what="request in flight")
    started = time.monotonic()
    api.server.stop()
    assert time.monotonic() - started < 5
    worker.join(10)
    assert not worker.is_alive() and outcome


def test_discovery_responder(api: Api) -> None:
    port = api.server.discovery_port
    assert port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"something else", ("127.0.0.1", port))
        sock.sendto(b"OPENPLC_DISCOVER_V1", ("127.0.0.1", port))
        data, _ = sock.recvfrom(2048)
    reply = json.loads(data)
    assert reply["service"] == "openplc-runtime"
    assert reply["api_port"] == api.server.https_port


def test_silent_client_does_not_block_others(api: Api) -> None:
    with socket.create_connection(("127.0.0.1", api.server.https_port), timeout=5):
        # No TLS handshake from this one; others are still served.
        assert api.get("version").status_code == 200


def test_multipart_parser_keeps_bytes_exact() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n'
        b"Content-Type: application/zip\r\n\r\n\r\n--XY\x00\xff\r\n--XyZ--\r\n"
    )
    (part,) = multipart.parse("multipart/form-data; boundary=XyZ", body)
    assert (part.name, part.filename, part.data) == ("file", "a.zip", b"\r\n--XY\x00\xff")
    with pytest.raises(multipart.MultipartError):
        multipart.parse("multipart/form-data; boundary=XyZ", b"--XyZ\r\nno end")
    with pytest.raises(multipart.MultipartError):
        multipart.parse("application/json", body)
