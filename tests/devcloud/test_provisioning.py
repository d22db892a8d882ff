"""Provisioning over real HTTPS on loopback: ids, enrolment, refusals, persistence."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from devcloud import agentcerts, pki
from devcloud.enroll import client_ssl_context, submit_csr
from devcloud.errors import ProvisioningError
from devcloud.registry import Registry
from devcloud.server import DevCloud

from .conftest import run


def _cloud(tmp_path: Path, **kw: Any) -> DevCloud:
    return DevCloud(tmp_path / "cloud", port=0, admin_port=0, provision_port=0, **kw)


def _session(cloud: DevCloud) -> aiohttp.ClientSession:
    ctx = client_ssl_context(None, None, cloud.ca_cert_path)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))


async def _get_id(session: aiohttp.ClientSession, cloud: DevCloud) -> dict[str, Any]:
    async with session.get(cloud.provision_url + "/orchestrators/id") as resp:
        assert resp.status == 200
        body = await resp.json()
    return dict(body["data"])


async def _post_csr(
    session: aiohttp.ClientSession, cloud: DevCloud, csr: bytes, agent_id: str | None = None
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("csr", csr, filename="client.csr")
    if agent_id is not None:
        form.add_field("id", agent_id)
    async with session.post(cloud.provision_url + "/orchestrators/enroll", data=form) as resp:
        return resp.status, await resp.json()


def test_id_response_has_the_installer_shape(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _cloud(tmp_path, id_ttl=600) as cloud, _session(cloud) as session:
            before = dt.datetime.now(dt.UTC)
            first = await _get_id(session, cloud)
            second = await _get_id(session, cloud)
        assert set(first) == {"id", "expiresAt", "expiresIn"}
        assert re.fullmatch(r"[0-9]{8}", first["id"])
        assert first["id"] != second["id"]
        assert first["expiresIn"] == 600
        expires = dt.datetime.fromisoformat(first["expiresAt"].replace("Z", "+00:00"))
        assert abs((expires - before).total_seconds() - 600) < 5

    run(scenario())


def test_enroll_signs_a_client_cert_for_the_id(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _cloud(tmp_path) as cloud:
            creds = await cloud.enroll(tmp_path / "mtls")
            assert cloud.registry.is_registered(creds.agent_id)
            ca = pki.load_cert(cloud.ca_cert_path)
        assert stat.S_IMODE(os.stat(creds.directory).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(creds.key_path).st_mode) == 0o600
        cert = pki.load_cert(creds.cert_path)
        assert pki.cert_cn(cert) == creds.agent_id
        cert.verify_directly_issued_by(ca)
        assert pki.load_cert(creds.ca_path) == ca
        # Loading the chain fails unless the key on disk belongs to the certificate.
        ctx = creds.ssl_context()
        assert ctx.verify_mode.name == "CERT_REQUIRED"

    run(scenario())


def test_enroll_refusals(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _cloud(tmp_path) as cloud, _session(cloud) as session:
            key = pki.make_key()
            issued = (await _get_id(session, cloud))["id"]
            other = "99999999" if issued != "99999999" else "88888888"

            status, body = await _post_csr(session, cloud, agentcerts.make_csr(key, other), issued)
            assert status == 400 and "does not match" in body["message"]
            assert body["statusCode"] == 400 and body["error"] == "Bad Request"

            status, body = await _post_csr(session, cloud, agentcerts.make_csr(key, other))
            assert status == 404 and f"Unknown orchestrator id '{other}'" in body["message"]

            status, body = await _post_csr(session, cloud, b"not a csr")
            assert status == 400 and "Invalid CSR" in body["message"]

            async with session.post(
                cloud.provision_url + "/orchestrators/enroll", json={"nothing": 1}
            ) as resp:
                assert resp.status == 400
                assert "Missing 'csr'" in (await resp.json())["message"]

            # The refusals above did not consume the id.
            status, body = await _post_csr(session, cloud, agentcerts.make_csr(key, issued), issued)
            assert status == 200 and body["data"]["id"] == issued
            status, body = await _post_csr(session, cloud, agentcerts.make_csr(key, issued), issued)
            assert status == 409 and "already enrolled" in body["message"]

    run(scenario())


def test_expired_id_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _cloud(tmp_path, id_ttl=0) as cloud, _session(cloud) as session:
            issued = (await _get_id(session, cloud))["id"]
            with pytest.raises(ProvisioningError, match="expired") as info:
                await submit_csr(
                    session, cloud.provision_url, agentcerts.make_csr(pki.make_key(), issued)
                )
            assert info.value.status == 410
            assert not cloud.registry.is_registered(issued)

    run(scenario())


def test_registry_expiry_with_a_clock(tmp_path: Path) -> None:
    now = [1_000_000.0]
    registry = Registry(tmp_path / "registry.json", id_ttl=60, clock=lambda: now[0])
    ca = pki.make_ca(None)
    fresh, stale = registry.request_id(), registry.request_id()
    assert fresh.expires_in == 60
    now[0] += 30
    assert registry.enroll(ca, agentcerts.make_csr(pki.make_key(), fresh.id)).agent_id == fresh.id
    now[0] += 31
    with pytest.raises(ProvisioningError) as info:
        registry.enroll(ca, agentcerts.make_csr(pki.make_key(), stale.id))
    assert info.value.status == 410


def test_registry_persists_across_restarts(tmp_path: Path) -> None:
    async def first() -> str:
        async with _cloud(tmp_path) as cloud:
            creds = await cloud.enroll(tmp_path / "mtls")
            pending = cloud.registry.request_id().id
            return creds.agent_id + ":" + pending

    agent_id, pending = run(first()).split(":")
    state = json.loads((tmp_path / "cloud" / "state" / "registry.json").read_text())
    assert agent_id in state["agents"] and pending in state["pending"]
    assert stat.S_IMODE(os.stat(tmp_path / "cloud" / "state" / "registry.json").st_mode) == 0o600

    async def second() -> None:
        async with _cloud(tmp_path) as cloud:
            assert [a["id"] for a in cloud.agents()] == [agent_id]
            # The id handed out before the restart can still be enrolled.
            key = pki.make_key()
            done = cloud.registry.enroll(cloud.ca, agentcerts.make_csr(key, pending))
            assert done.agent_id == pending
            assert isinstance(done.certificate.cert, x509.Certificate)

    run(second())
