"""The admin interface against a hostile web page on the developer's machine.

A page can make the browser send requests to 127.0.0.1: "simple" cross-origin POSTs
(text/plain, no custom headers, no preflight) and, after rebinding its own DNS name to
127.0.0.1, requests that carry its own name in ``Host``.  Each is sent here as a browser
would send it, against a real cloud with a real agent connected over mTLS; none may reach
the agent.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from devcloud.adminclient import AdminClient
from devcloud.errors import AdminError
from devcloud.server import DevCloud, read_run_file

from .conftest import agent_client, run

ATTACK = json.dumps({"topic": "delete_orchestrator", "payload": {}}).encode()


def _request(port: int, path: str, body: bytes | None, headers: dict[str, str],
             method: str = "POST") -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw or b"null")
        except ValueError:
            return resp.status, {"raw": raw.decode(errors="replace")}
    finally:
        conn.close()


class Recorder:
    """The agent side: every command that reaches it is kept."""

    def __init__(self) -> None:
        self.received: list[Any] = []

    async def delete_orchestrator(self, data: Any) -> dict[str, Any]:
        self.received.append(data)
        return {"action": "delete_orchestrator", "correlation_id": data.get("correlation_id"),
                "success": True}


async def _scenario(tmp_path: Path, check: Any) -> Recorder:
    recorder = Recorder()
    async with DevCloud(tmp_path / "cloud", port=0, admin_port=0, provision_port=0) as cloud:
        creds = await cloud.enroll(tmp_path / "mtls")
        handlers = {"delete_orchestrator": recorder.delete_orchestrator}
        async with agent_client(cloud.url, creds.ssl_context(), handlers):
            assert await cloud.wait_connected(creds.agent_id, 5)
            await check(cloud, creds.agent_id, recorder)
    return recorder


def _headers(cloud: DevCloud, **extra: str) -> dict[str, str]:
    return {"Host": f"127.0.0.1:{cloud.admin_port}", **extra}


BROWSER_ATTACKS = {
    # A form or fetch() with no-cors: text/plain needs no preflight and carries no token.
    "text/plain POST without token": lambda c: _headers(c, **{"Content-Type": "text/plain"}),
    "text/plain POST with a foreign Origin": lambda c: _headers(
        c, **{"Content-Type": "text/plain", "Origin": "http://evil.example"}),
    "form POST": lambda c: _headers(
        c, **{"Content-Type": "application/x-www-form-urlencoded"}),
    "JSON without token": lambda c: _headers(c, **{"Content-Type": "application/json"}),
    "JSON with a wrong token": lambda c: _headers(
        c, **{"Content-Type": "application/json", "Authorization": "Bearer " + "x" * 43}),
    # DNS rebinding: the page's own name now points at 127.0.0.1.
    "foreign Host": lambda c: {"Host": f"evil.example:{c.admin_port}",
                               "Content-Type": "application/json"},
    "foreign Host without a port": lambda c: {
        "Host": "evil.example", "Content-Type": "text/plain"},
}


@pytest.mark.parametrize("make_headers", list(BROWSER_ATTACKS.values()),
                         ids=list(BROWSER_ATTACKS))
def test_browser_style_requests_never_reach_the_agent(tmp_path: Path, make_headers: Any) -> None:
    async def check(cloud: DevCloud, agent_id: str, recorder: Recorder) -> None:
        status, body = await asyncio.to_thread(
            _request, cloud.admin_port, f"/agents/{agent_id}/commands", ATTACK,
            make_headers(cloud))
        assert status in (401, 403, 415), (status, body)
        assert "error" in body
        # Give a command that got through time to arrive before looking.
        await asyncio.sleep(0.3)
        assert recorder.received == []
        assert cloud.acks == []

    run(_scenario(tmp_path, check))


async def _with_token(cloud: DevCloud, agent_id: str, recorder: Recorder) -> None:
    token = cloud.admin_token_path.read_text().strip()
    path = f"/agents/{agent_id}/commands"
    json_ok = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    cases = [
        # The token alone is not enough: each other rule holds on its own.
        (_headers(cloud, **{**json_ok, "Content-Type": "text/plain"}), 415, "Content-Type"),
        (_headers(cloud, **json_ok, Origin="http://evil.example"), 403, "cross-origin"),
        (_headers(cloud, **json_ok, Origin="null"), 403, "cross-origin"),
        ({**json_ok, "Host": f"evil.example:{cloud.admin_port}"}, 403, "Host"),
        ({**json_ok, "Host": "127.0.0.1:1"}, 403, "Host"),
    ]
    for headers, expected, fragment in cases:
        status, body = await asyncio.to_thread(_request, cloud.admin_port, path, ATTACK, headers)
        assert (status, fragment in body.get("error", "")) == (expected, True), (headers, body)
    # Reads need the token too: agent ids and acks are not for any page to see.
    status, body = await asyncio.to_thread(
        _request, cloud.admin_port, "/agents", None, _headers(cloud), "GET")
    assert status == 401 and "admin.token" in body["error"]
    await asyncio.sleep(0.3)
    assert recorder.received == [] and cloud.acks == []
    # The admin's own page, with the token and JSON, gets through: the control.
    ok = _headers(cloud, **json_ok, Origin=f"http://localhost:{cloud.admin_port}")
    status, body = await asyncio.to_thread(_request, cloud.admin_port, path, ATTACK, ok)
    assert status == 200 and body["ack"]["success"] is True
    assert len(recorder.received) == 1


def test_each_rule_holds_even_with_the_token(tmp_path: Path) -> None:
    recorder = run(_scenario(tmp_path, _with_token))
    assert len(recorder.received) == 1


def test_token_is_private_fresh_and_not_in_run_json(tmp_path: Path) -> None:
    async def scenario() -> None:
        tokens = []
        for _ in range(2):
            async with DevCloud(tmp_path, port=0, admin_port=0, provision_port=0) as cloud:
                path = cloud.admin_token_path
                assert stat.S_IMODE(path.stat().st_mode) == 0o600
                token = path.read_text().strip()
                assert len(token) >= 32 and token == cloud.admin_token
                assert token not in json.dumps(read_run_file(tmp_path))
                agents = await asyncio.to_thread(cloud.admin_client().agents)
                assert agents == []
                stale = AdminClient(cloud.admin_url, tokens[0] if tokens else "y" * 43)
                with pytest.raises(AdminError, match="HTTP 401"):
                    await asyncio.to_thread(stale.agents)
                tokens.append(token)
        assert tokens[0] != tokens[1]

    run(scenario())
