"""The installer's side of provisioning: get an id, make a key and CSR, enrol.

Writes ``client.key`` (0600), ``client.crt`` and ``ca.crt`` into a private
directory (0700): the layout of ``~/.mtls`` that the agent reads.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509

from devcloud import agentcerts, pki
from devcloud.errors import ProvisioningError
from devcloud.fsutil import ensure_private_dir, write_atomic
from devcloud.provisioning import ENROLL_PATH, ID_PATH

log = logging.getLogger(__name__)

CLIENT_CERT = "client.crt"
CLIENT_KEY = "client.key"
CA_FILE = "ca.crt"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass(frozen=True)
class Credentials:
    """An enrolled agent's files."""

    agent_id: str
    directory: Path
    expires_at: str | None = None
    expires_in: int | None = None

    @property
    def cert_path(self) -> Path:
        return self.directory / CLIENT_CERT

    @property
    def key_path(self) -> Path:
        return self.directory / CLIENT_KEY

    @property
    def ca_path(self) -> Path:
        return self.directory / CA_FILE

    def ssl_context(self, *, check_hostname: bool = True) -> ssl.SSLContext:
        """An mTLS client context: this identity, this CA as trust anchor, TLS >= 1.2."""
        return client_ssl_context(
            self.cert_path, self.key_path, self.ca_path, check_hostname=check_hostname
        )


def client_ssl_context(
    cert: Path | None, key: Path | None, cafile: Path | None, *, check_hostname: bool = True
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


def write_credentials(
    directory: Path, agent_id: str, cert_pem: bytes, key_pem: bytes, ca_pem: bytes, **extra: Any
) -> Credentials:
    ensure_private_dir(directory)
    write_atomic(directory / CLIENT_KEY, key_pem, 0o600)
    write_atomic(directory / CLIENT_CERT, cert_pem, 0o644)
    write_atomic(directory / CA_FILE, ca_pem, 0o644)
    return Credentials(agent_id, directory, **extra)


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await resp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError) as exc:
        raise ProvisioningError(f"{resp.url}: HTTP {resp.status}, not JSON", resp.status) from exc
    if not isinstance(body, dict):
        raise ProvisioningError(f"{resp.url}: HTTP {resp.status}, not a JSON object", resp.status)
    if resp.status != 200:
        raise ProvisioningError(
            f"{resp.url}: HTTP {resp.status}: {body.get('message', body)}", resp.status
        )
    return body


async def request_id(session: aiohttp.ClientSession, base_url: str) -> dict[str, Any]:
    async with session.get(base_url.rstrip("/") + ID_PATH) as resp:
        body = await _json(resp)
    data = body.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise ProvisioningError(f"id response without data.id: {body}")
    return data


async def submit_csr(
    session: aiohttp.ClientSession, base_url: str, csr_pem: bytes, agent_id: str | None = None
) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("csr", csr_pem, filename="client.csr", content_type="application/octet-stream")
    if agent_id is not None:
        form.add_field("id", agent_id)
    async with session.post(base_url.rstrip("/") + ENROLL_PATH, data=form) as resp:
        body = await _json(resp)
    data = body.get("data")
    if body.get("statusCode") != 200 or not isinstance(data, dict) or not data.get("certificate"):
        raise ProvisioningError(f"enrolment response without a certificate: {body}")
    return data


async def enroll(
    base_url: str,
    out_dir: Path,
    *,
    cafile: Path | None = None,
    key_kind: str = "ec",
) -> Credentials:
    """Run the installer's enrolment against ``base_url`` and write the files.

    ``cafile`` is the trust anchor for the provisioning server (the system
    store when None); the connection is always verified.
    """
    ctx = client_ssl_context(None, None, cafile) if base_url.startswith("https:") else None
    connector = aiohttp.TCPConnector(ssl=ctx) if ctx is not None else aiohttp.TCPConnector()
    async with aiohttp.ClientSession(connector=connector, timeout=HTTP_TIMEOUT) as session:
        issued = await request_id(session, base_url)
        agent_id = issued["id"]
        key = pki.make_key(key_kind)
        data = await submit_csr(session, base_url, agentcerts.make_csr(key, agent_id), agent_id)
    cert_pem = data["certificate"].encode()
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ProvisioningError(f"the cloud returned an unreadable certificate: {exc}") from exc
    if pki.cert_cn(cert) != agent_id:
        raise ProvisioningError(f"the cloud signed CN {pki.cert_cn(cert)!r}, expected {agent_id!r}")
    ca_text = data.get("caCertificate")
    if isinstance(ca_text, str) and ca_text:
        ca_pem = ca_text.encode()
    elif cafile is not None:
        ca_pem = cafile.read_bytes()
    else:
        ca_pem = b""
    log.info("enrolled as %s into %s", agent_id, out_dir)
    return write_credentials(
        out_dir,
        agent_id,
        cert_pem,
        pki.key_to_pem(key),
        ca_pem,
        expires_at=issued.get("expiresAt"),
        expires_in=issued.get("expiresIn"),
    )
