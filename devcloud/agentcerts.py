"""Agent client certificates: issued directly by the CA, or signed from a CSR.

The agent's identity is the client certificate's CN; the rest of the subject is
the layout the product's installer puts in its CSR. ``issue_client_cert`` skips
the cloud's registry on purpose, so negative mTLS tests can make a certificate
that is signed by the right CA but was never enrolled.
"""

from __future__ import annotations

import datetime as dt
import logging

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devcloud import pki
from devcloud.errors import PkiError

log = logging.getLogger(__name__)

# The subject the product's installer puts in its CSR, minus the CN.
AGENT_SUBJECT_PREFIX: tuple[tuple[x509.ObjectIdentifier, str], ...] = (
    (NameOID.COUNTRY_NAME, "BR"),
    (NameOID.STATE_OR_PROVINCE_NAME, "SP"),
    (NameOID.LOCALITY_NAME, "SaoPaulo"),
    (NameOID.ORGANIZATION_NAME, "AutonomyLogic"),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "Development"),
)


def agent_subject(cn: str) -> x509.Name:
    attrs = [x509.NameAttribute(oid, value) for oid, value in AGENT_SUBJECT_PREFIX]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def client_cert(
    ca: pki.CertificateAuthority,
    subject: x509.Name,
    public_key: object,
    start: dt.datetime,
    end: dt.datetime,
) -> x509.Certificate:
    return (
        pki.leaf_builder(ca, subject, public_key, start, end)
        .add_extension(pki.leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, pki.signing_hash(ca.key))
    )


def issue_client_cert(
    ca: pki.CertificateAuthority,
    cn: str,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: float = 365,
    key: pki.PrivateKey | None = None,
) -> pki.IssuedCert:
    """A client certificate (clientAuth) with the agent subject and the given CN.

    This skips the cloud's registry: a development cloud refuses such a
    certificate unless it was registered (see ``Registry.register_certificate``),
    which is exactly what a "signed by the right CA but never enrolled" test needs.
    """
    key = key or pki.make_key()
    start, end = pki.validity(not_before, not_after, days)
    cert = client_cert(ca, agent_subject(cn), key.public_key(), start, end)
    return pki.IssuedCert(cert=cert, key=key)


def make_csr(key: pki.PrivateKey, cn: str) -> bytes:
    """A PEM CSR with the installer's subject layout and the given CN."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(agent_subject(cn))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        log.debug("CSR not loadable: %s", exc)
        raise PkiError("not a PEM certificate signing request") from exc
    try:
        valid = csr.is_signature_valid
    except (InvalidSignature, ValueError) as exc:
        raise PkiError(f"CSR signature cannot be checked: {exc}") from exc
    if not valid:
        raise PkiError("CSR signature is not valid")
    return csr


def sign_csr(
    ca: pki.CertificateAuthority,
    csr: x509.CertificateSigningRequest,
    *,
    expected_cn: str,
    days: float = 365,
) -> pki.IssuedCert:
    """Sign a client CSR whose CN must equal ``expected_cn`` (the issued agent id).

    The subject is taken from the CSR (the installer's C/ST/L/O/OU), the
    extensions are the CA's choice: whatever the CSR asks for, the result is a
    leaf certificate good for TLS client authentication only.
    """
    cn = pki.cert_cn(csr)
    if cn != expected_cn:
        raise PkiError(f"CSR CN {cn!r} does not match the id {expected_cn!r}")
    start, end = pki.validity(None, None, days)
    cert = client_cert(ca, csr.subject, csr.public_key(), start, end)
    return pki.IssuedCert(cert=cert, key=None)
