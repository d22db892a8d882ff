"""Provisioning endpoints, shaped like the product cloud's, used by an installer.

* ``GET /orchestrators/id`` → ``{"statusCode": 200, "data": {"id", "expiresAt", "expiresIn"}}``
* ``POST /orchestrators/enroll`` with a multipart field ``csr`` (the PEM file; a
  JSON body ``{"csr": "..."}`` is accepted too, and an optional ``id`` that must
  equal the CSR's CN) → ``{"statusCode": 200, "data": {"id", "certificate",
  "message", "caCertificate"}}``. ``caCertificate`` is this cloud's own
  addition: its server certificate is not publicly trusted, so the agent needs
  the CA as its extra trust anchor.
* Errors: ``{"statusCode": <code>, "message": "<why>", "error": "<reason phrase>"}``
  with the same HTTP status (400 bad CSR or CN mismatch, 404 unknown id,
  409 already enrolled, 410 expired id).

Served over TLS with the cloud's server certificate but without asking for a
client certificate: an installer has none yet.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web

from devcloud import pki
from devcloud.errors import ProvisioningError
from devcloud.registry import Registry

log = logging.getLogger(__name__)

ID_PATH = "/orchestrators/id"
ENROLL_PATH = "/orchestrators/enroll"
MAX_CSR_BYTES = 64 * 1024

REGISTRY_KEY: web.AppKey[Registry] = web.AppKey("registry", Registry)
CA_KEY: web.AppKey[pki.CertificateAuthority] = web.AppKey("ca", pki.CertificateAuthority)


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"statusCode": status, "message": message, "error": HTTPStatus(status).phrase},
        status=status,
    )


async def request_id(request: web.Request) -> web.Response:
    issued = request.app[REGISTRY_KEY].request_id()
    return web.json_response({"statusCode": 200, "data": issued.as_data()})


async def _read_enrolment(request: web.Request) -> tuple[bytes, str | None]:
    """(CSR PEM, requested id or None) from a multipart form or a JSON body."""
    if request.content_type == "application/json":
        try:
            body: Any = await request.json()
        except ValueError as exc:
            raise ProvisioningError("Request body must be valid JSON", 400) from exc
        if not isinstance(body, dict):
            raise ProvisioningError("Request body must be a JSON object", 400)
        csr, wanted = body.get("csr"), body.get("id")
        if not isinstance(csr, str) or not csr.strip():
            raise ProvisioningError("Missing 'csr' field", 400)
        if wanted is not None and not isinstance(wanted, str):
            raise ProvisioningError("Field 'id' must be a string", 400)
        return csr.encode(), wanted
    if request.content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ProvisioningError("Send the CSR as multipart form field 'csr'", 415)
    form = await request.post()
    field = form.get("csr")
    if field is None:
        raise ProvisioningError("Missing 'csr' field", 400)
    data = field.file.read() if isinstance(field, web.FileField) else str(field).encode()
    wanted_field = form.get("id")
    wanted = (
        str(wanted_field)
        if wanted_field is not None and not isinstance(wanted_field, web.FileField)
        else None
    )
    return data, wanted


async def enroll(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_CSR_BYTES:
        return _error(413, "CSR too large")
    try:
        csr_pem, wanted = await _read_enrolment(request)
        if len(csr_pem) > MAX_CSR_BYTES:
            raise ProvisioningError("CSR too large", 413)
        ca = request.app[CA_KEY]
        done = request.app[REGISTRY_KEY].enroll(ca, csr_pem, wanted)
    except ProvisioningError as exc:
        log.warning("enrolment refused: %s", exc)
        return _error(exc.status, str(exc))
    data = {
        "id": done.agent_id,
        "certificate": done.certificate.cert_pem.decode(),
        "message": f"Orchestrator {done.agent_id} enrolled",
        "caCertificate": ca.cert_pem.decode(),
    }
    return web.json_response({"statusCode": 200, "data": data})


def make_app(registry: Registry, ca: pki.CertificateAuthority) -> web.Application:
    app = web.Application(client_max_size=MAX_CSR_BYTES * 2)
    app[REGISTRY_KEY] = registry
    app[CA_KEY] = ca
    app.router.add_get(ID_PATH, request_id)
    app.router.add_post(ID_PATH, request_id)
    app.router.add_post(ENROLL_PATH, enroll)
    return app
