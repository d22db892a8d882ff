"""Orchestrator ids and enrolled agents, persisted as one JSON file.

Life of an id: ``request_id`` hands out a fresh 8-digit id that must be
enrolled before it expires; ``enroll`` signs a CSR whose CN is that id and
turns the id into a registered agent. Only certificates recorded here are let
in by the Socket.IO server (like the real cloud, which compares the presented
certificate with the one it stored), so a certificate merely signed by the
right CA is not enough.

Concurrency: used from one asyncio loop; every mutation rewrites the file
atomically before returning.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from devcloud import agentcerts, pki
from devcloud.errors import PkiError, ProvisioningError
from devcloud.fsutil import write_atomic

log = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"^[0-9]{8}$")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class IssuedId:
    id: str
    expires_at: float  # Unix seconds
    expires_in: int  # seconds from issue

    def as_data(self) -> dict[str, Any]:
        """The ``data`` object of the id response, as the installer reads it."""
        return {"id": self.id, "expiresAt": iso_utc(self.expires_at), "expiresIn": self.expires_in}


@dataclass(frozen=True)
class Enrolment:
    agent_id: str
    certificate: pki.IssuedCert


def iso_utc(epoch: float) -> str:
    stamp = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Registry:
    def __init__(
        self,
        path: Path,
        *,
        id_ttl: int = 900,
        cert_days: float = 365,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.id_ttl = id_ttl
        self.cert_days = cert_days
        self._clock = clock
        self._pending: dict[str, float] = {}
        self._agents: dict[str, dict[str, Any]] = {}
        self._load()

    # ------------------------------------------------------------ persistence

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_text())
            self._pending = {
                str(k): float(v["expires_at"]) for k, v in doc.get("pending", {}).items()
            }
            self._agents = {str(k): dict(v) for k, v in doc.get("agents", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProvisioningError(f"registry {self.path} is unreadable: {exc}", 500) from exc

    def _save(self) -> None:
        doc = {
            "version": FORMAT_VERSION,
            "pending": {k: {"expires_at": v} for k, v in sorted(self._pending.items())},
            "agents": dict(sorted(self._agents.items())),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, (json.dumps(doc, indent=2) + "\n").encode(), 0o600)

    # ---------------------------------------------------------------- ids

    def _purge_expired(self) -> None:
        now = self._clock()
        # Expired ids are kept a while so that a late enrolment gets "expired",
        # not "unknown"; a day is plenty.
        stale = [k for k, exp in self._pending.items() if exp < now - 86400]
        for k in stale:
            del self._pending[k]

    def request_id(self) -> IssuedId:
        self._purge_expired()
        while True:
            candidate = f"{secrets.randbelow(10**8):08d}"
            if candidate not in self._pending and candidate not in self._agents:
                break
        now = self._clock()
        self._pending[candidate] = now + self.id_ttl
        self._save()
        log.info("issued orchestrator id %s (expires in %d s)", candidate, self.id_ttl)
        return IssuedId(candidate, now + self.id_ttl, self.id_ttl)

    # ------------------------------------------------------------- enrolment

    def enroll(
        self, ca: pki.CertificateAuthority, csr_pem: bytes, requested_id: str | None = None
    ) -> Enrolment:
        """Sign ``csr_pem`` for the pending id named by its CN; refuse anything else."""
        try:
            csr = agentcerts.load_csr(csr_pem)
            cn = pki.cert_cn(csr)
        except PkiError as exc:
            raise ProvisioningError(f"Invalid CSR: {exc}", 400) from exc
        if requested_id is not None and requested_id != cn:
            raise ProvisioningError(
                f"CSR common name '{cn}' does not match the orchestrator id '{requested_id}'", 400
            )
        if not ID_PATTERN.match(cn):
            raise ProvisioningError(f"CSR common name '{cn}' is not an orchestrator id", 400)
        if cn in self._agents:
            raise ProvisioningError(f"Orchestrator id '{cn}' is already enrolled", 409)
        expires_at = self._pending.get(cn)
        if expires_at is None:
            raise ProvisioningError(f"Unknown orchestrator id '{cn}'", 404)
        if expires_at < self._clock():
            raise ProvisioningError(
                f"Orchestrator id '{cn}' expired at {iso_utc(expires_at)}; request a new id", 410
            )
        try:
            issued = agentcerts.sign_csr(ca, csr, expected_cn=cn, days=self.cert_days)
        except PkiError as exc:
            raise ProvisioningError(f"Invalid CSR: {exc}", 400) from exc
        del self._pending[cn]
        self._agents[cn] = {"enrolled_at": iso_utc(self._clock()), "certificates": []}
        self._remember(cn, issued.cert)
        self._save()
        log.info("enrolled orchestrator %s", cn)
        return Enrolment(cn, issued)

    def register_certificate(self, cert: x509.Certificate) -> str:
        """Accept a certificate issued out of band (tests); returns its agent id."""
        cn = pki.cert_cn(cert)
        self._pending.pop(cn, None)
        self._agents.setdefault(cn, {"enrolled_at": iso_utc(self._clock()), "certificates": []})
        self._remember(cn, cert)
        self._save()
        return cn

    def _remember(self, agent_id: str, cert: x509.Certificate) -> None:
        self._agents[agent_id]["certificates"].append(
            {
                "fingerprint": pki.fingerprint(cert),
                "serial": format(cert.serial_number, "x"),
                "not_after": cert.not_valid_after_utc.isoformat(),
            }
        )

    def forget(self, agent_id: str) -> bool:
        removed = self._agents.pop(agent_id, None) is not None
        if removed:
            self._save()
        return removed

    # --------------------------------------------------------------- queries

    def is_registered(self, agent_id: str) -> bool:
        return agent_id in self._agents

    def accepts(self, cert: x509.Certificate) -> tuple[str | None, str]:
        """(agent id, "") when the certificate belongs to an enrolled agent, else (None, why)."""
        try:
            cn = pki.cert_cn(cert)
        except PkiError:
            return None, "client certificate has no CN"
        record = self._agents.get(cn)
        if record is None:
            return None, f"unknown orchestrator id {cn!r}"
        known = {c["fingerprint"] for c in record.get("certificates", [])}
        if pki.fingerprint(cert) not in known:
            return None, f"certificate for {cn!r} was not issued through enrolment"
        return cn, ""

    def agent_ids(self) -> list[str]:
        return sorted(self._agents)

    def agent_record(self, agent_id: str) -> dict[str, Any] | None:
        record = self._agents.get(agent_id)
        return dict(record) if record is not None else None
