"""The CA and its helpers: real keys, real certificates, checked with OpenSSL's verifier."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from devcloud import agentcerts, pki
from devcloud.errors import PkiError


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _san_names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def test_init_creates_private_ca_and_server_cert(tmp_path: Path) -> None:
    paths = pki.init_pki(tmp_path / "pki", ["cloud.example.test", "192.0.2.10"])
    assert _mode(paths.directory) == 0o700
    assert _mode(paths.ca_key) == 0o600
    assert _mode(paths.server_key) == 0o600
    server = pki.load_cert(paths.server_cert)
    ca = pki.load_cert(paths.ca_cert)
    assert _san_names(server) == {
        "localhost",
        "127.0.0.1",
        "::1",
        "cloud.example.test",
        "192.0.2.10",
    }
    server.verify_directly_issued_by(ca)
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_init_is_idempotent_and_keeps_the_ca_when_names_change(tmp_path: Path) -> None:
    paths = pki.init_pki(tmp_path / "pki")
    ca_before = pki.load_cert(paths.ca_cert)
    server_before = pki.load_cert(paths.server_cert)
    pki.init_pki(tmp_path / "pki")
    assert pki.load_cert(paths.server_cert) == server_before
    pki.init_pki(tmp_path / "pki", ["extra.example.test"])
    assert pki.load_cert(paths.ca_cert) == ca_before
    server_after = pki.load_cert(paths.server_cert)
    assert "extra.example.test" in _san_names(server_after)
    server_after.verify_directly_issued_by(ca_before)


def test_sign_csr_requires_the_issued_id_as_cn() -> None:
    ca = pki.make_ca(None)
    csr = agentcerts.load_csr(agentcerts.make_csr(pki.make_key(), "07048933"))
    signed = agentcerts.sign_csr(ca, csr, expected_cn="07048933")
    assert signed.cn == "07048933"
    assert "OU=Development" in signed.cert.subject.rfc4514_string()
    eku = signed.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    signed.cert.verify_directly_issued_by(ca.cert)
    with pytest.raises(PkiError, match="does not match"):
        agentcerts.sign_csr(ca, csr, expected_cn="11111111")


def test_rsa_csr_is_accepted() -> None:
    ca = pki.make_ca(None)
    csr = agentcerts.load_csr(agentcerts.make_csr(pki.make_key("rsa"), "12345678"))
    assert agentcerts.sign_csr(ca, csr, expected_cn="12345678").cn == "12345678"


def test_garbage_csr_is_refused() -> None:
    with pytest.raises(PkiError):
        agentcerts.load_csr(
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        )


def test_bad_credential_helpers(tmp_path: Path) -> None:
    ca = pki.make_ca(tmp_path / "ca1", "CA one")
    other = pki.make_ca(tmp_path / "ca2", "CA two")
    past = pki.utcnow() - dt.timedelta(days=2)
    expired = agentcerts.issue_client_cert(
        ca, "07048933", not_before=past, not_after=past + dt.timedelta(days=1)
    )
    assert expired.cert.not_valid_after_utc < pki.utcnow()
    foreign = agentcerts.issue_client_cert(other, "07048933")
    with pytest.raises(ValueError):
        foreign.cert.verify_directly_issued_by(ca.cert)
    wrong_host = pki.issue_server_cert(ca, ["elsewhere.example.test"])
    assert _san_names(wrong_host.cert) == {"elsewhere.example.test"}
    cert_path, key_path = wrong_host.write(tmp_path / "out", "server")
    assert key_path is not None and _mode(key_path) == 0o600
    assert pki.load_cert(cert_path) == wrong_host.cert
    with pytest.raises(PkiError):
        agentcerts.issue_client_cert(ca, "x", not_before=past, not_after=past)
