"""The agent link over real mTLS on loopback: identity, heartbeats, commands, refusals."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path
from typing import Any

import pytest
import socketio

from devcloud import agentcerts, pki
from devcloud.enroll import Credentials, client_ssl_context
from devcloud.errors import AckTimeout, AgentNotConnected
from devcloud.server import DevCloud

from .conftest import agent_client, heartbeat_payload, run


def _cloud(tmp_path: Path, **kw: Any) -> DevCloud:
    return DevCloud(tmp_path / "cloud", port=0, admin_port=0, provision_port=0, **kw)


def _echo_handler(topic: str) -> Any:
    async def handler(data: Any) -> dict[str, Any]:
        return {"action": topic, "correlation_id": data.get("correlation_id"), "got": data}

    return handler


async def _expect_refused(cloud: DevCloud, ctx: ssl.SSLContext) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        async with agent_client(cloud.url, ctx):
            pass
    assert not any(a["connected"] for a in cloud.agents())


def test_enrolled_agent_is_identified_by_cn_and_heartbeats_are_recorded(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _cloud(tmp_path) as cloud:
            creds = await cloud.enroll(tmp_path / "mtls")
            acks: asyncio.Queue[Any] = asyncio.Queue()

            async def on_heartbeat_ack(data: Any) -> None:
                await acks.put(data)

            handlers = {"heartbeat_ack": on_heartbeat_ack}
            async with agent_client(cloud.url, creds.ssl_context(), handlers) as client:
                assert await cloud.wait_connected(creds.agent_id, 5)
                (agent,) = cloud.agents()
                assert agent["id"] == creds.agent_id
                assert agent["connected"] and agent["sid"] and agent["remote"] == "127.0.0.1"
                assert agent["connected_at"] is not None

                for uptime in (100, 105):
                    await client.emit(
                        "heartbeat", {**heartbeat_payload(creds.agent_id), "uptime": uptime}
                    )
                beats = await cloud.wait_heartbeats(creds.agent_id, 2, timeout=5)
                assert [b.payload["uptime"] for b in beats] == [100, 105]
                assert [b.seq for b in beats] == [1, 2]
                assert all(b.problems == () for b in beats)
                ack = await asyncio.wait_for(acks.get(), 5)
                assert "timestamp" in ack

                (agent,) = cloud.agents()
                assert agent["heartbeat_count"] == 2
                assert agent["last_heartbeat"]["uptime"] == 105
                assert len(agent["heartbeat_intervals"]) == 1

                # A heartbeat that departs from the protocol is kept and flagged.
                await client.emit("heartbeat", {"agent_id": "someone-else", "cpu_usage": "high"})
                (bad,) = await cloud.wait_heartbeats(creds.agent_id, 1, after_seq=2, timeout=5)
                assert any("certificate CN" in p for p in bad.problems)
                assert any("cpu_usage is not a number" in p for p in bad.problems)
            assert await cloud.wait_disconnected(creds.agent_id, 5)
            assert cloud.agents()[0]["disconnected_at"] is not None

    run(scenario())


def test_admin_send_reaches_the_agent_and_returns_its_ack(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _cloud(tmp_path) as cloud:
            creds = await cloud.enroll(tmp_path / "mtls")

            async def sloppy(data: Any) -> list[str]:
                return ["not", "an", "object"]

            handlers = {"get_device_status": _echo_handler("get_device_status"), "sloppy": sloppy}
            async with agent_client(cloud.url, creds.ssl_context(), handlers):
                assert await cloud.wait_connected(creds.agent_id, 5)
                admin = cloud.admin_client()
                answer = await asyncio.to_thread(
                    admin.send, creds.agent_id, "get_device_status", {"device_id": "plc-1"}
                )
                ack = answer["ack"]
                assert ack["action"] == "get_device_status"
                assert ack["got"]["device_id"] == "plc-1"
                # The cloud stamps a correlation id and the agent echoed it.
                assert isinstance(ack["got"]["correlation_id"], int)
                assert ack["correlation_id"] == ack["got"]["correlation_id"]
                assert answer["record"]["problems"] == []

                direct = await cloud.send(
                    creds.agent_id, "get_device_status", {"device_id": "x", "correlation_id": 7}
                )
                assert direct["correlation_id"] == 7

                record = await cloud.send_record(creds.agent_id, "sloppy", {})
                assert record.problems and "not an object" in record.problems[0]

            topics = [(r.topic, r.correlation_id) for r in cloud.acks]
            assert topics[0] == ("get_device_status", ack["correlation_id"])
            assert topics[1] == ("get_device_status", 7)
            assert topics[2][0] == "sloppy"
            listed = await asyncio.to_thread(admin.acks, creds.agent_id, "get_device_status")
            assert [a["correlation_id"] for a in listed] == [ack["correlation_id"], 7]

    run(scenario())


def test_missing_ack_is_a_timeout_and_unknown_agent_is_not_connected(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _cloud(tmp_path) as cloud:
            creds = await cloud.enroll(tmp_path / "mtls")
            release = asyncio.Event()

            async def stuck(data: Any) -> dict[str, Any]:
                await release.wait()
                return {"action": "stuck", "correlation_id": data.get("correlation_id")}

            async with agent_client(cloud.url, creds.ssl_context(), {"stuck": stuck}):
                assert await cloud.wait_connected(creds.agent_id, 5)
                with pytest.raises(AckTimeout):
                    await cloud.send(creds.agent_id, "stuck", {}, timeout=0.3)
                admin = cloud.admin_client()
                with pytest.raises(AckTimeout):
                    await asyncio.to_thread(admin.send, creds.agent_id, "stuck", {}, timeout=0.3)
                release.set()
            with pytest.raises(AgentNotConnected):
                await cloud.send("00000000", "get_device_status", {})
            timeouts = [r for r in cloud.acks if r.error == "timeout"]
            assert len(timeouts) == 2 and all(r.ack is None for r in timeouts)

    run(scenario())


def test_connections_without_valid_credentials_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _cloud(tmp_path) as cloud:
            ca = pki.load_ca(cloud.pki_paths.directory)
            enrolled: Credentials = await cloud.enroll(tmp_path / "mtls")
            cafile = cloud.ca_cert_path

            def ctx_for(issued: pki.IssuedCert, name: str) -> ssl.SSLContext:
                cert, key = issued.write(tmp_path / "bad", name)
                return client_ssl_context(cert, key, cafile)

            # No client certificate at all: the TLS handshake fails.
            await _expect_refused(cloud, client_ssl_context(None, None, cafile))
            # Another CA.
            other = pki.make_ca(None, "Someone else")
            await _expect_refused(
                cloud, ctx_for(agentcerts.issue_client_cert(other, enrolled.agent_id), "o")
            )
            # Right CA, expired.
            past = pki.utcnow() - dt.timedelta(days=2)
            expired = agentcerts.issue_client_cert(
                ca, enrolled.agent_id, not_before=past, not_after=past + dt.timedelta(days=1)
            )
            await _expect_refused(cloud, ctx_for(expired, "e"))
            assert cloud.refusals == []  # those never got past TLS

            # Right CA, valid, but an id the cloud never issued.
            await _expect_refused(cloud, ctx_for(agentcerts.issue_client_cert(ca, "55555555"), "u"))
            # Right CA, enrolled id, but a certificate that was not issued by enrolment.
            await _expect_refused(
                cloud, ctx_for(agentcerts.issue_client_cert(ca, enrolled.agent_id), "s")
            )
            reasons = [r.reason for r in await cloud.wait_refusals(2, timeout=5)]
            assert "unknown orchestrator id '55555555'" in reasons[0]
            assert "not issued through enrolment" in reasons[1]

            # A registered out-of-band certificate is admitted.
            extra = agentcerts.issue_client_cert(ca, "44444444")
            assert cloud.register_certificate(extra.cert) == "44444444"
            async with agent_client(cloud.url, ctx_for(extra, "r")):
                assert await cloud.wait_connected("44444444", 5)

    run(scenario())


def test_agent_refuses_a_server_certificate_for_another_host(tmp_path: Path) -> None:
    async def scenario() -> None:
        base = tmp_path / "cloud"
        paths = pki.init_pki(base / "pki")
        ca = pki.load_ca(paths.directory)
        cert, key = pki.issue_server_cert(ca, ["elsewhere.example.test"]).write(tmp_path, "wrong")
        async with DevCloud(
            base, port=0, admin_port=0, provision_port=0, server_cert=cert, server_key=key
        ) as cloud:
            creds = cloud.issue_credentials(tmp_path / "mtls")
            with pytest.raises(socketio.exceptions.ConnectionError):
                async with agent_client(cloud.url, creds.ssl_context()):
                    pass
            # Without the host name check the same certificate chain is accepted,
            # so the refusal above is the host name and nothing else.
            loose = creds.ssl_context(check_hostname=False)
            async with agent_client(cloud.url, loose):
                assert await cloud.wait_connected(creds.agent_id, 5)

    run(scenario())


def test_cloud_side_disconnect_and_reconnect(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _cloud(tmp_path) as cloud:
            creds = cloud.issue_credentials(tmp_path / "mtls")
            gone = asyncio.Event()

            async def on_disconnect(*_: Any) -> None:
                gone.set()

            admin = cloud.admin_client()
            async with agent_client(cloud.url, creds.ssl_context(), {"disconnect": on_disconnect}):
                assert await cloud.wait_connected(creds.agent_id, 5)
                assert await asyncio.to_thread(admin.disconnect, creds.agent_id)
                assert await cloud.wait_disconnected(creds.agent_id, 5)
                await asyncio.wait_for(gone.wait(), 5)
            assert not await asyncio.to_thread(admin.disconnect, creds.agent_id)
            async with agent_client(cloud.url, creds.ssl_context()):
                assert await cloud.wait_connected(creds.agent_id, 5)
            agent = await asyncio.to_thread(admin.agent, creds.agent_id)
            assert agent["connections"] == 2

    run(scenario())


def test_websocket_only_client_is_identified_and_stop_drops_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        cloud = _cloud(tmp_path)
        await cloud.start()
        creds = cloud.issue_credentials(tmp_path / "mtls")
        gone = asyncio.Event()

        async def on_disconnect(*_: Any) -> None:
            gone.set()

        handlers = {"disconnect": on_disconnect}
        ctx = creds.ssl_context()
        async with agent_client(cloud.url, ctx, handlers, transports=["websocket"]) as client:
            assert client.transport() == "websocket"
            assert await cloud.wait_connected(creds.agent_id, 5)
            await cloud.stop()
            await asyncio.wait_for(gone.wait(), 5)

    run(scenario())
