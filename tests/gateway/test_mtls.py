"""The mTLS negative matrix, with the real gateway link against real TLS servers.

Every case must end the same way: no connection (the cloud never sees the agent, the
gateway's link never reports one), a WARNING that names the reason, and the gateway
still retrying — never an unverified fallback, never a crash.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import ssl
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devcloud import agentcerts, pki
from devcloud.server import DevCloud
from tests.gateway.conftest import Env, running_gateway

PAST = pki.utcnow() - dt.timedelta(days=3)
EXPIRED = {"not_before": PAST, "not_after": PAST + dt.timedelta(days=1)}


async def expect_refused(env: Env, caplog: pytest.LogCaptureFixture, fragment: str,
                         **overrides: object) -> list[str]:
    """Run the gateway until it has failed twice; return its link warnings."""
    caplog.set_level(logging.INFO)
    config = env.config(reconnect_max=0.2, **overrides)
    async with running_gateway(config) as gateway:
        await gateway.wait(lambda: gateway.status.attempts >= 3, 15, "three attempts")
        assert gateway.status.connections == 0
        assert not gateway.status.connected
        assert gateway.task is not None and not gateway.task.done()
    assert not any(a["connected"] for a in env.cloud.agents())
    assert env.cloud.hub.agent(env.creds.agent_id) is None, "the cloud saw the agent"
    warnings_ = [r.getMessage() for r in caplog.records
                 if r.name == "services.gateway.link" and r.levelno >= logging.WARNING]
    assert any(fragment in w for w in warnings_), warnings_
    # Repeats of one reason are not logged at WARNING on every attempt.
    assert sum("cannot connect" in w for w in warnings_) == 1, warnings_
    return warnings_


def _cloud_with_server_cert(base: Path, issued: pki.IssuedCert) -> DevCloud:
    cert, key = issued.write(base / "server-override", "server")
    return DevCloud(base, port=0, admin_port=0, provision_port=0, server_cert=cert,
                    server_key=key)


@pytest.fixture
async def env_with_server_cert(base_dir: Path,
                               request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    """A development cloud whose server certificate is made by `request.param(ca)`."""
    base = base_dir / "cloud"
    ca = pki.load_ca(pki.init_pki(base / "pki").directory)
    cloud = _cloud_with_server_cert(base, request.param(ca))
    await cloud.start()
    try:
        yield Env(base_dir, cloud, cloud.issue_credentials(base_dir / "mtls"))
    finally:
        await cloud.stop()


SERVER_CASES = {
    "server cert from another CA": (
        lambda ca: pki.issue_server_cert(pki.make_ca(None, "Another CA")),
        "unable to get local issuer certificate"),
    "server host name mismatch": (
        lambda ca: pki.issue_server_cert(ca, ["elsewhere.example.test"]),
        "mismatch"),
    "expired server cert": (
        lambda ca: pki.issue_server_cert(ca, **EXPIRED),
        "certificate has expired"),
}


@pytest.mark.parametrize(
    ("env_with_server_cert", "fragment"),
    [pytest.param(make, frag, id=name) for name, (make, frag) in SERVER_CASES.items()],
    indirect=["env_with_server_cert"])
async def test_bad_server_certificate_is_refused(env_with_server_cert: Env, fragment: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    found = await expect_refused(env_with_server_cert, caplog, fragment)
    assert any("certificate verify failed" in w for w in found)


def _write_client(env: Env, issued: pki.IssuedCert, name: str) -> Path:
    directory = env.base / name
    cert, key = issued.write(directory, "client")
    assert cert.name == "client.crt" and key is not None and key.name == "client.key"
    return directory


async def test_expired_client_certificate_is_refused(env: Env,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    expired = agentcerts.issue_client_cert(env.cloud.ca, env.creds.agent_id, **EXPIRED)
    mtls = _write_client(env, expired, "expired")
    found = await expect_refused(env, caplog, "refused client certificate", mtls_dir=mtls)
    # The gateway says why before the cloud does.
    expiry = [w for w in found if "expired at" in w and "re-enrolled" in w]
    assert len(expiry) == 1, found  # said once, not on every attempt


async def test_client_certificate_from_another_ca_is_refused(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    other = agentcerts.issue_client_cert(pki.make_ca(None, "Another CA"), env.creds.agent_id)
    mtls = _write_client(env, other, "other-ca")
    await expect_refused(env, caplog, "refused client certificate", mtls_dir=mtls)


async def test_no_client_certificate_is_never_an_anonymous_attempt(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    empty = env.base / "no-credentials"
    found = await expect_refused(env, caplog, str(empty / "client.crt"), mtls_dir=empty)
    line = next(w for w in found if "client.crt" in w)
    assert "not found" in line and "ORCH_MTLS_DIR" in line


async def test_credentials_that_appear_later_are_picked_up(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    later = env.base / "later"
    async with running_gateway(env.config(mtls_dir=later, reconnect_max=0.2)) as gateway:
        await gateway.wait(lambda: gateway.status.attempts >= 2, 10, "failed attempts")
        assert "client certificate not found" in (gateway.status.last_error or "")
        later.mkdir(mode=0o700)
        for name in ("client.crt", "client.key"):
            (later / name).write_bytes((env.creds.directory / name).read_bytes())
            (later / name).chmod(0o600)
        assert await env.cloud.wait_connected(env.creds.agent_id, 10)
        await gateway.wait(lambda: gateway.status.connected, 5, "the link to come up")
        assert gateway.status.agent_id == env.creds.agent_id


async def test_unreadable_key_is_reported_with_its_path(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    broken = env.base / "broken"
    broken.mkdir()
    (broken / "client.crt").write_bytes(env.creds.cert_path.read_bytes())
    (broken / "client.key").write_text("not a key\n")
    (broken / "client.key").chmod(0o600)
    found = await expect_refused(env, caplog, str(broken / "client.key"), mtls_dir=broken)
    assert any("do not load together" in w for w in found)


# --- a server that offers nothing newer than TLS 1.1 ----------------------------------


class Tls11Server:
    """A bare TLS listener limited to TLS 1.0-1.1 (OpenSSL needs security level 0 to
    speak them at all); it records how each handshake ended."""

    def __init__(self, cert: Path, key: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.minimum_version = ssl.TLSVersion.TLSv1
            self.ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        self.ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        self.ctx.load_cert_chain(str(cert), str(key))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.outcomes: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.outcomes.append(f"ok {tls.version()}")
            except (ssl.SSLError, OSError) as exc:
                self.outcomes.append(f"failed {exc}")

    def __enter__(self) -> Tls11Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def tls11(env: Env) -> Iterator[Tls11Server]:
    cert, key = pki.issue_server_cert(env.cloud.ca).write(env.base / "tls11", "server")
    assert key is not None
    with Tls11Server(cert, key) as server:
        yield server


def _handshake_tls11(port: int, cafile: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.create_default_context(cafile=str(cafile))
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return str(tls.version())


async def test_server_offering_only_tls_1_1_is_refused(
        env: Env, tls11: Tls11Server, caplog: pytest.LogCaptureFixture) -> None:
    # The server really speaks TLS 1.1 to a client that allows it...
    assert await asyncio.to_thread(_handshake_tls11, tls11.port, env.creds.ca_path) == "TLSv1.1"
    # ...and the gateway does not go below TLS 1.2.
    await expect_refused(env, caplog, "protocol version",
                         cloud_url=f"https://127.0.0.1:{tls11.port}")
    assert any("unsupported protocol" in o for o in tls11.outcomes[1:]), tls11.outcomes
