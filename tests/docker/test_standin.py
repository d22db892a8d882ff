"""The runtime stand-in image on a real Docker engine.

Each container sits on a user-defined bridge network the test creates (a
documentation subnet) and is reached from the host at its bridge address, the
way the agent reaches a runtime's internal address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import docker.models.containers
import docker.models.networks
import docker.types
import pytest
import requests

from testkit import dockerenv
from testkit.helpers import wait_for, zip_program
from tests.standin import jwt_hs256

pytestmark = [
    pytest.mark.docker,
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]

VERSION_HEADER = "X-OpenPLC-Runtime-Version"


@dataclass
class Runtime:
    standin: dockerenv.StandinContainer
    session: requests.Session

    @property
    def container(self) -> docker.models.containers.Container:
        return self.standin.container

    @property
    def ip(self) -> str:
        return self.standin.ip

    @property
    def base(self) -> str:
        return self.standin.base_url

    def get(self, route: str, token: str | None = None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.session.get(self.base + route, headers=headers, timeout=10, **kw)

    def post(self, route: str, token: str | None = None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.session.post(self.base + route, headers=headers, timeout=10, **kw)

    def login(self, username: str, password: str) -> str:
        reply = self.post("login", json={"username": username, "password": password})
        assert reply.status_code == 200, reply.text
        return str(reply.json()["access_token"])


def _session() -> requests.Session:
    session = requests.Session()
    session.verify = False  # the runtime's certificate is self-signed
    session.trust_env = False  # no proxy or CA bundle from the environment
    return session


@pytest.fixture(scope="module")
def bridge(docker_client: docker.DockerClient) -> Iterator[docker.models.networks.Network]:
    network = dockerenv.create_test_bridge(docker_client, "oat-standin")
    yield network
    with contextlib.suppress(docker.errors.NotFound):
        network.remove()


@contextlib.contextmanager
def _running_runtime(
    docker_client: docker.DockerClient, image: str, network: docker.models.networks.Network
) -> Iterator[Runtime]:
    """A stand-in on `network`, removed with its volumes afterwards."""
    standin = dockerenv.start_standin(
        docker_client, network.name, image, {"STANDIN_COMPILE_SECONDS": "0.3"}
    )
    try:
        yield Runtime(standin, _session())
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            standin.container.remove(force=True, v=True)


@pytest.fixture(scope="module")
def runtime(
    docker_client: docker.DockerClient,
    standin_image: str,
    bridge: docker.models.networks.Network,
) -> Iterator[Runtime]:
    with _running_runtime(docker_client, standin_image, bridge) as rt:
        yield rt


@pytest.fixture
def fresh_runtime(
    docker_client: docker.DockerClient,
    standin_image: str,
    bridge: docker.models.networks.Network,
) -> Iterator[Runtime]:
    """A runtime of its own, for a test that restarts or changes it."""
    with _running_runtime(docker_client, standin_image, bridge) as rt:
        yield rt


@pytest.fixture(scope="module")
def token(runtime: Runtime) -> str:
    reply = runtime.post("create-user", json={"username": "admin", "password": "pw"})
    assert reply.status_code == 201, reply.text
    return runtime.login("admin", "pw")


def test_version_over_bridge_address(runtime: Runtime, bridge: Any) -> None:
    subnet = bridge.attrs["IPAM"]["Config"][0]["Subnet"]
    assert ipaddress.ip_address(runtime.ip) in ipaddress.ip_network(subnet)
    reply = runtime.get("version")
    assert reply.status_code == 200
    assert reply.json() == {"version": "v4.0.0"}
    assert reply.headers[VERSION_HEADER] == "v4.0.0"


def test_https_only(runtime: Runtime) -> None:
    with pytest.raises(requests.exceptions.ConnectionError):
        _session().get(f"http://{runtime.ip}:8443/api/version", timeout=5)
    # No other TCP listener, in particular no plain-HTTP redirector.
    for port in (80, 8080):
        with pytest.raises(OSError), socket.create_connection((runtime.ip, port), timeout=3):
            pass


def test_healthcheck_turns_healthy(runtime: Runtime) -> None:
    config = runtime.container.attrs["Config"]["Healthcheck"]
    assert "curl -kfsS https://127.0.0.1:8443/api/version" in " ".join(config["Test"])

    def healthy() -> bool:
        runtime.container.reload()
        return bool(runtime.container.attrs["State"]["Health"]["Status"] == "healthy")

    wait_for(healthy, 45, interval=0.5, what="container healthy", ignore=(Exception,))


def test_login_and_token_errors(runtime: Runtime, token: str) -> None:
    wrong = runtime.post("login", json={"username": "admin", "password": "nope"})
    assert (wrong.status_code, wrong.json()) == (401, "Wrong username or password")
    missing = runtime.get("status")
    assert (missing.status_code, missing.json()) == (401, {"msg": "Missing Authorization Header"})
    assert runtime.get("status", "garbage").status_code == 422
    header, payload, _ = token.split(".")
    assert runtime.get("status", f"{header}.{payload}.{'A' * 43}").status_code == 422
    # An expired token signed with the runtime's own key.
    secret = runtime.container.exec_run(["cat", "/var/run/runtime/jwt_secret"]).output
    expired = jwt_hs256.encode(bytes.fromhex(secret.decode().strip()), "1", 900, time.time() - 999)
    reply = runtime.get("status", expired)
    assert (reply.status_code, reply.json()) == (401, {"msg": "Token has expired"})
    assert runtime.get("status", token).status_code == 200


def test_users(runtime: Runtime, token: str) -> None:
    assert runtime.get("get-users-info").json() == {"msg": "Users found"}
    anonymous = runtime.post("create-user", json={"username": "op", "password": "pw"})
    assert anonymous.status_code == 401
    created = runtime.post("create-user", token, json={"username": "op", "password": "pw"})
    assert (created.status_code, created.json()["role"]) == (201, "user")
    duplicate = runtime.post("create-user", token, json={"username": "op", "password": "x"})
    assert (duplicate.status_code, duplicate.json()) == (409, {"msg": "Username already exists"})


def test_plc_control_upload_and_logs(runtime: Runtime, token: str) -> None:
    assert runtime.get("status", token).json()["status"] == "STATUS:EMPTY"
    assert runtime.get("ping", token).json() == {"status": "PING:OK"}
    assert runtime.get("stop-plc", token).json() == {"status": "STOP:ERROR"}
    bad = runtime.post("upload-file", token, files={"file": ("p.zip", b"not a zip")})
    assert bad.status_code == 200 and bad.json()["CompilationStatus"] == "FAILED"
    upload = runtime.post("upload-file", token, files={"file": ("p.zip", zip_program({"a": b"1"}))})
    assert upload.status_code == 200
    assert upload.json() == {"UploadFileFail": "", "CompilationStatus": "COMPILING"}
    status = wait_for(
        lambda: (s := runtime.get("compilation-status", token).json())["status"] == "SUCCESS" and s,
        15,
        what="compilation SUCCESS", ignore=(Exception,)
    )
    assert status["exit_code"] == 0
    assert runtime.get("status", token).json()["status"] == "STATUS:STOPPED"
    assert runtime.get("start-plc", token).json() == {"status": "START:OK"}
    assert runtime.get("status", token).json() == {
        "status": "STATUS:RUNNING",
        "switchPosition": "run",
    }
    assert runtime.get("start-plc", token).json() == {"status": "START:ERROR_ALREADY_RUNNING"}
    assert runtime.get("stop-plc", token).json() == {"status": "STOP:OK"}
    logs = runtime.get("runtime-logs", token).json()["runtime-logs"]
    messages = [entry["message"] for entry in logs]
    assert "PLC started" in messages and "PLC stopped" in messages
    errors = runtime.get("runtime-logs", token, params={"level": "WARNING"}).json()
    assert errors["runtime-logs"] and all(
        e["level"] in ("WARNING", "ERROR") for e in errors["runtime-logs"]
    )


def test_unknown_route(runtime: Runtime, token: str) -> None:
    assert runtime.get("no-such-thing").status_code == 401
    reply = runtime.get("no-such-thing", token)
    assert (reply.status_code, reply.json()) == (200, {"error": "Unknown argument"})


def test_discovery_over_bridge(runtime: Runtime) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"OPENPLC_DISCOVER_V1", (runtime.ip, 33333))
        data, peer = sock.recvfrom(2048)
    assert peer[0] == runtime.ip
    reply = json.loads(data)
    assert reply["service"] == "openplc-runtime" and reply["api_port"] == 8443


def test_test_routes_over_bridge(runtime: Runtime) -> None:
    big = runtime.get("test/big", params={"bytes": 5_000_000})
    assert len(big.content) == 5_000_000
    with pytest.raises(requests.exceptions.ReadTimeout):
        runtime.session.get(runtime.base + "test/hang", params={"seconds": 20}, timeout=1)
    redirect = runtime.get(
        "test/redirect", params={"to": "https://192.0.2.1/"}, allow_redirects=False
    )
    assert (redirect.status_code, redirect.headers["Location"]) == (302, "https://192.0.2.1/")


def test_first_user_and_state_survive_restart(fresh_runtime: Runtime) -> None:
    rt = fresh_runtime
    first = rt.get("get-users-info")
    assert (first.status_code, first.json()) == (404, {"msg": "No users found"})
    created = rt.post("create-user", json={"username": "ana", "password": "pw", "role": "user"})
    assert created.json() == {"msg": "User created", "id": 1, "role": "admin"}
    token = rt.login("ana", "pw")
    rt.post("upload-file", token, files={"file": ("p.zip", zip_program({"a": b"1"}))})
    wait_for(
        lambda: rt.get("compilation-status", token).json()["status"] == "SUCCESS",
        15,
        what="compilation SUCCESS", ignore=(Exception,)
    )
    rt.container.restart(timeout=10)
    rt.standin.refresh_ip()
    wait_for(lambda: rt.get("version").status_code == 200, 30, what="stand-in back",
             ignore=(requests.RequestException,))
    # Same data volume: accounts and signing key kept, installed program runs at boot.
    assert rt.get("status", token).json()["status"] == "STATUS:RUNNING"
    assert rt.get("get-users-info").json() == {"msg": "Users found"}


def test_fixtures_label_what_they_create(
    docker_client: docker.DockerClient, runtime: Runtime, bridge: Any
) -> None:
    label = f"{dockerenv.TEST_LABEL}={dockerenv.SESSION}"
    ids = {c.id for c in docker_client.containers.list(all=True, filters={"label": label})}
    assert runtime.container.id in ids
    nets = {n.id for n in docker_client.networks.list(filters={"label": label})}
    assert bridge.id in nets
