"""A small certificate authority for the development cloud and for mTLS tests.

One CA signs the server certificate of the cloud and the client certificates of
the agents (those live in ``devcloud.agentcerts``). The helpers that make *bad*
credentials (another CA, expired, wrong host name) are part of the public API on
purpose: the gateway's negative mTLS tests build on them.

Keys are ECDSA P-256 by default because they are generated in microseconds,
which keeps tests fast; CSRs with RSA keys (as the installer makes) are signed
just as well.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devcloud.errors import PkiError
from devcloud.fsutil import ensure_private_dir, write_atomic

log = logging.getLogger(__name__)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"

DEFAULT_SERVER_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
# Clocks of a VM and its host drift; back-dating avoids "not yet valid" flakes.
_BACKDATE = dt.timedelta(minutes=5)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class IssuedCert:
    """A certificate and its private key (``key`` is None when signed from a CSR)."""

    cert: x509.Certificate
    key: PrivateKey | None = None

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        if self.key is None:
            raise PkiError("this certificate was issued for a CSR; its key is not here")
        return key_to_pem(self.key)

    @property
    def cn(self) -> str:
        return cert_cn(self.cert)

    def write(self, directory: Path, stem: str) -> tuple[Path, Path | None]:
        """Write ``<stem>.crt`` (0644) and ``<stem>.key`` (0600) into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path = directory / f"{stem}.crt"
        write_atomic(cert_path, self.cert_pem, 0o644)
        key_path = None
        if self.key is not None:
            key_path = directory / f"{stem}.key"
            write_atomic(key_path, self.key_pem, 0o600)
        return cert_path, key_path


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA held in memory; ``directory`` is where it lives on disk, if anywhere."""

    cert: x509.Certificate
    key: PrivateKey
    directory: Path | None = None

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_path(self) -> Path:
        if self.directory is None:
            raise PkiError("this CA was not written to disk")
        return self.directory / CA_CERT

    @property
    def name(self) -> str:
        return cert_cn(self.cert)


@dataclass(frozen=True)
class PkiPaths:
    """Where ``init_pki`` put the files of a development cloud."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.directory / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.directory / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.directory / SERVER_KEY

    def exists(self) -> bool:
        return all(
            p.is_file() for p in (self.ca_cert, self.ca_key, self.server_cert, self.server_key)
        )


# --------------------------------------------------------------------------- keys


def make_key(kind: str = "ec") -> PrivateKey:
    """A new private key: ``ec`` (P-256) or ``rsa`` (2048 bits, or ``rsa4096``)."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa4096":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    raise PkiError(f"unknown key kind {kind!r} (ec, rsa, rsa4096)")


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"cannot read private key {path}: {exc}") from exc
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise PkiError(f"unsupported key type in {path}")
    return key


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read certificate {path}: {exc}") from exc


def cert_cn(cert: x509.Certificate | x509.CertificateSigningRequest) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        raise PkiError("the subject has no CN")
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode()


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as lowercase hex (what the registry stores)."""
    return cert.fingerprint(hashes.SHA256()).hex()


# ----------------------------------------------------------------------- builders


def validity(
    not_before: dt.datetime | None, not_after: dt.datetime | None, days: float
) -> tuple[dt.datetime, dt.datetime]:
    start = not_before if not_before is not None else utcnow() - _BACKDATE
    end = not_after if not_after is not None else utcnow() + dt.timedelta(days=days)
    if end <= start:
        raise PkiError("not_after must be later than not_before")
    return start, end


def signing_hash(key: PrivateKey) -> hashes.SHA256:
    return hashes.SHA256()


def make_ca(
    directory: Path | None,
    name: str = "Orchestrator Devcloud CA",
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: float = 3650,
    key_kind: str = "ec",
) -> CertificateAuthority:
    """Create a self-signed CA; with a ``directory``, write ``ca.crt``/``ca.key`` there.

    The directory is made private (0700) and the key 0600.
    """
    key = make_key(key_kind)
    start, end = validity(not_before, not_after, days)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, signing_hash(key))
    )
    ca = CertificateAuthority(cert=cert, key=key, directory=directory)
    if directory is not None:
        ensure_private_dir(directory)
        write_atomic(directory / CA_KEY, key_to_pem(key), 0o600)
        write_atomic(directory / CA_CERT, ca.cert_pem, 0o644)
        log.info("created CA %r in %s", name, directory)
    return ca


def load_ca(directory: Path) -> CertificateAuthority:
    return CertificateAuthority(
        cert=load_cert(directory / CA_CERT), key=load_key(directory / CA_KEY), directory=directory
    )


def leaf_builder(
    ca: CertificateAuthority,
    subject: x509.Name,
    public_key: object,
    start: dt.datetime,
    end: dt.datetime,
) -> x509.CertificateBuilder:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    return builder


def leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    if not entries:
        raise PkiError("a server certificate needs at least one name")
    return x509.SubjectAlternativeName(entries)


def issue_server_cert(
    ca: CertificateAuthority,
    names: Sequence[str] = DEFAULT_SERVER_NAMES,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: float = 825,
    key: PrivateKey | None = None,
) -> IssuedCert:
    """A TLS server certificate for ``names`` (DNS names or IP addresses, in the SAN).

    Give names that do not match the address a client dials to get a "wrong
    host name" certificate; give a past ``not_after`` to get an expired one.
    """
    names = list(dict.fromkeys(names))
    key = key or make_key()
    start, end = validity(not_before, not_after, days)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "server")])
    cert = (
        leaf_builder(ca, subject, key.public_key(), start, end)
        .add_extension(leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(names), critical=False)
        .sign(ca.key, signing_hash(ca.key))
    )
    return IssuedCert(cert=cert, key=key)


# ---------------------------------------------------------------------- init


def init_pki(
    directory: Path,
    extra_names: Sequence[str] = (),
    *,
    ca_name: str = "Orchestrator Devcloud CA",
    force: bool = False,
) -> PkiPaths:
    """Create the CA and the server certificate of a development cloud.

    Idempotent: an existing PKI is kept unless ``force``; when only the extra
    server names changed, the server certificate is re-issued by the same CA so
    that enrolled agents stay valid.
    """
    paths = PkiPaths(directory)
    names = list(dict.fromkeys([*DEFAULT_SERVER_NAMES, *extra_names]))
    if paths.exists() and not force:
        ca = load_ca(directory)
        current = load_cert(paths.server_cert)
        if _server_names(current) == set(names) and current.not_valid_after_utc > utcnow():
            return paths
        log.info("re-issuing the server certificate for %s", ", ".join(names))
    else:
        ca = make_ca(directory, ca_name)
    ensure_private_dir(directory)
    server = issue_server_cert(ca, names)
    server.write(directory, "server")
    return paths


def _server_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return set(dns) | set(ips)
