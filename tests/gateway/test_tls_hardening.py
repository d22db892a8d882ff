"""The cloud link's TLS rules that a review found loose, with real TLS and the real gateway.

* the server's name is matched against its subjectAltName only: a certificate that names
  the host in its subject CN alone is refused;
* a plain ``http://`` cloud URL is a configuration error unless development mode says so;
* a client key that group or others can read is refused, naming the file and the fix.
"""

from __future__ import annotations

import datetime as dt
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.config import Config, ConfigError
from devcloud import agentcerts, pki
from devcloud.enroll import write_credentials
from devcloud.server import DevCloud
from services.gateway.tls import CredentialsError, load_identity
from tests.gateway.conftest import Env, running_gateway
from tests.gateway.test_mtls import expect_refused


def _cn_only_server_cert(ca: pki.CertificateAuthority, name: str) -> pki.IssuedCert:
    """A server certificate whose only statement of its name is the subject CN."""
    key = pki.make_key()
    now = pki.utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca.key.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return pki.IssuedCert(cert=cert, key=key)


async def _localhost_env(base_dir: Path, issue: str) -> AsyncIterator[Env]:
    base = base_dir / "cloud"
    ca = pki.load_ca(pki.init_pki(base / "pki").directory)
    issued = (_cn_only_server_cert(ca, "localhost") if issue == "cn-only"
              else pki.issue_server_cert(ca, ["localhost"]))
    cert, key = issued.write(base / "server-override", "server")
    cloud = DevCloud(base, port=0, admin_port=0, provision_port=0, server_cert=cert,
                     server_key=key)
    await cloud.start()
    try:
        yield Env(base_dir, cloud, cloud.issue_credentials(base_dir / "mtls"))
    finally:
        await cloud.stop()


@pytest.fixture
async def cn_only_env(base_dir: Path) -> AsyncIterator[Env]:
    async for env in _localhost_env(base_dir, "cn-only"):
        yield env


@pytest.fixture
async def san_env(base_dir: Path) -> AsyncIterator[Env]:
    async for env in _localhost_env(base_dir, "san"):
        yield env


async def test_server_name_only_in_the_cn_is_refused(
        cn_only_env: Env, caplog: pytest.LogCaptureFixture) -> None:
    url = f"https://localhost:{cn_only_env.cloud.port}"
    found = await expect_refused(cn_only_env, caplog, "certificate verify failed",
                                 cloud_url=url)
    assert any("mismatch" in w for w in found), found


async def test_the_same_name_in_the_san_is_accepted(san_env: Env) -> None:
    # The control for the test above: the same host name, listener and CA connect when
    # the name is in the subjectAltName, so the refusal there is the CN rule alone.
    config = san_env.config(cloud_url=f"https://localhost:{san_env.cloud.port}")
    async with running_gateway(config) as gateway:
        assert await san_env.cloud.wait_connected(san_env.creds.agent_id, 15)
        await gateway.wait(lambda: gateway.status.connected, 5, "the link to come up")


# --- plain http --------------------------------------------------------------------------


def test_http_cloud_url_is_refused_without_the_development_flag() -> None:
    with pytest.raises(ConfigError, match=r"plain http.*ORCH_ALLOW_INSECURE_CLOUD"):
        Config.load([], {"ORCH_CLOUD_URL": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError, match="must start with https://"):
        Config.load([], {"ORCH_CLOUD_URL": "ftp://127.0.0.1:9"})
    with pytest.raises(ConfigError, match="ORCH_ALLOW_INSECURE_CLOUD"):
        Config.load([], {"ORCH_CLOUD_URL": "http://x", "ORCH_ALLOW_INSECURE_CLOUD": "maybe"})
    for env, argv in (({"ORCH_ALLOW_INSECURE_CLOUD": "1"}, []),
                      ({}, ["--allow-insecure-cloud"])):
        config, _ = Config.load(argv, {"ORCH_CLOUD_URL": "http://127.0.0.1:9", **env})
        assert config.allow_insecure_cloud and config.cloud_url == "http://127.0.0.1:9"
    assert not Config.load([], {"ORCH_ALLOW_INSECURE_CLOUD": "0"})[0].allow_insecure_cloud


def test_gateway_process_will_not_start_on_an_http_url(base_dir: Path) -> None:
    run_dir = base_dir / "run"
    done = subprocess.run(
        [sys.executable, "-m", "services.gateway", "--cloud-url", "http://127.0.0.1:9",
         "--run-dir", str(run_dir), "--state-dir", str(base_dir / "state")],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "plain http" in done.stderr and "ORCH_ALLOW_INSECURE_CLOUD" in done.stderr
    assert not run_dir.exists(), "it prepared a bus before refusing"


# --- the client key's permissions --------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    agentcerts.issue_client_cert(pki.make_ca(None), "12345678").write(tmp_path, "client")
    assert load_identity(tmp_path).agent_id == "12345678"  # 0600 as written: accepted
    key = tmp_path / "client.key"
    key.chmod(mode)
    with pytest.raises(CredentialsError) as refused:
        load_identity(tmp_path)
    assert refused.value.path == key
    assert f"mode {mode:04o}" in str(refused.value) and f"chmod 600 {key}" in str(refused.value)


async def test_gateway_refuses_a_world_readable_key(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.creds.key_path.chmod(0o644)
    found = await expect_refused(env, caplog, "open to group or others")
    assert any(str(env.creds.key_path) in w for w in found), found


def test_enrolment_writes_the_key_owner_only(tmp_path: Path) -> None:
    issued = agentcerts.issue_client_cert(pki.make_ca(None), "12345678")
    creds = write_credentials(tmp_path / "mtls", "12345678", issued.cert_pem, issued.key_pem,
                              issued.cert_pem)
    assert stat.S_IMODE(creds.key_path.stat().st_mode) == 0o600
    assert load_identity(creds.directory).agent_id == "12345678"
