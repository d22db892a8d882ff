"""The agent's TLS identity: the client certificate, its key, and the client SSLContext.

The cloud knows the agent by its client certificate alone, so the agent id is that
certificate's subject CN.  Verification of the server is never optional: `CERT_REQUIRED`,
host name checking against the subjectAltName only (never the subject CN), TLS 1.2 or
newer, the system trust store plus an optional extra CA file.  A client key that group or
others can reach is refused.  There is no code path that builds a context without verification.

Files are read afresh for every connection attempt, so an operator who enrols the agent
(or replaces an expiring certificate) while it runs does not have to restart it.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from services.gateway import certinfo

CLIENT_CERT = "client.crt"
CLIENT_KEY = "client.key"

ENROL_HINT = (
    "enrol this agent (the installer writes client.crt and client.key there) or point "
    "ORCH_MTLS_DIR at the directory that holds them"
)


class CredentialsError(Exception):
    """The agent's mTLS files are missing, unreadable or unusable.

    `path` is the file at fault and the message says how to fix it."""

    def __init__(self, path: Path, problem: str, fix: str = ENROL_HINT) -> None:
        super().__init__(f"{problem}: {path} — {fix}")
        self.path = path
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True)
class Identity:
    """What the client certificate says about the agent."""

    agent_id: str
    cert_path: Path
    key_path: Path
    not_before: dt.datetime
    not_after: dt.datetime

    def validity_problem(self, now: dt.datetime | None = None) -> str | None:
        """Why the cloud will refuse this certificate on dates alone, or None."""
        now = now or dt.datetime.now(dt.UTC)
        if now > self.not_after:
            return f"client certificate {self.cert_path} expired at {self.not_after.isoformat()}"
        if now < self.not_before:
            return (f"client certificate {self.cert_path} is not valid before "
                    f"{self.not_before.isoformat()} (check the clock)")
        return None


def _readable(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CredentialsError(path, f"{what} not found") from None
    except PermissionError:
        raise CredentialsError(path, f"{what} is not readable",
                               "give the agent's user read access to it") from None
    except OSError as exc:
        raise CredentialsError(path, f"{what} cannot be read ({exc.strerror})") from None


def _check_key_private(path: Path) -> None:
    """Refuse a key that group or others can reach: anyone who reads it is the agent."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        raise CredentialsError(path, f"client key cannot be read ({exc.strerror})") from None
    if mode & 0o077:
        raise CredentialsError(path, f"client key is open to group or others (mode {mode:04o})",
                               f"chmod 600 {path} (and check who could have copied it)")


def load_identity(mtls_dir: Path) -> Identity:
    """Read the client certificate and check the key is there; raise CredentialsError."""
    cert_path = mtls_dir / CLIENT_CERT
    key_path = mtls_dir / CLIENT_KEY
    pem = _readable(cert_path, "client certificate")
    _readable(key_path, "client key")
    _check_key_private(key_path)
    try:
        # The standard library's DER walk (certinfo): `cryptography` would cost this
        # long-lived process 4 MB for three fields.  OpenSSL checks the certificate itself
        # when client_context() loads it.
        cn, not_before, not_after = certinfo.read(pem)
    except ValueError:
        raise CredentialsError(cert_path, "client certificate is not a PEM certificate",
                               "re-enrol this agent") from None
    agent_id = (cn or "").strip() or None
    if agent_id is None:
        raise CredentialsError(cert_path, "client certificate has no subject CN (the agent id)",
                               "re-enrol this agent")
    return Identity(agent_id, cert_path, key_path, not_before, not_after)


def client_context(identity: Identity, ca_file: Path | None) -> ssl.SSLContext:
    """The one SSLContext of the cloud link: verified server, our certificate, TLS >= 1.2."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # system trust, verification on
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    # RFC 6125: the name is matched against the SAN only; a CN-only certificate is refused.
    ctx.hostname_checks_common_name = False
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except FileNotFoundError:
            raise CredentialsError(ca_file, "extra CA file not found",
                                   "fix ORCH_CA_FILE or remove it") from None
        except (ssl.SSLError, OSError) as exc:
            raise CredentialsError(ca_file, f"extra CA file is unusable ({exc})",
                                   "fix ORCH_CA_FILE or remove it") from None
    try:
        ctx.load_cert_chain(str(identity.cert_path), str(identity.key_path))
    except ssl.SSLError as exc:
        raise CredentialsError(identity.key_path,
                               f"client certificate and key do not load together ({exc})",
                               "re-enrol this agent") from None
    except OSError as exc:
        raise CredentialsError(identity.key_path, f"client key cannot be read ({exc})") from None
    return ctx
