"""A small blocking client of the admin interface (for the CLI and subprocess tests)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from devcloud.errors import AckTimeout, AdminError, AgentNotConnected

# Slack on top of a server-side wait, so the HTTP call outlives the wait it asked for.
_SLACK = 10.0


def read_token(path: Path) -> str:
    """The admin token a running cloud wrote; a clear error when there is none."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise AdminError(f"no admin token at {path}: start the cloud with this --dir "
                         "(it writes the token when it starts) or pass --admin-token-file"
                         ) from None
    except OSError as exc:
        raise AdminError(f"cannot read the admin token {path}: {exc.strerror}") from None
    if not token:
        raise AdminError(f"the admin token file {path} is empty")
    return token


class AdminClient:
    def __init__(self, base_url: str, token: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> tuple[int, Any]:
        if body is None and method == "POST":
            body = {}
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"null")
            except ValueError:
                return exc.code, {"error": raw.decode(errors="replace")}
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise AdminError(f"admin interface {self.base_url} unreachable: {exc}") from exc

    def _ok(self, status: int, body: Any) -> Any:
        if status != 200:
            message = body.get("error") if isinstance(body, dict) else body
            raise AdminError(f"HTTP {status}: {message}")
        return body

    def info(self) -> dict[str, Any]:
        return dict(self._ok(*self._call("GET", "/info")))

    def agents(self) -> list[dict[str, Any]]:
        return list(self._ok(*self._call("GET", "/agents"))["agents"])

    def agent(self, agent_id: str) -> dict[str, Any]:
        return dict(self._ok(*self._call("GET", f"/agents/{urllib.parse.quote(agent_id)}")))

    def send(
        self,
        agent_id: str,
        topic: str,
        payload: Any = None,
        *,
        timeout: float = 15.0,
        stamp: bool = True,
    ) -> dict[str, Any]:
        """``{"ack": ..., "record": {...}}``; raises ``AckTimeout`` / ``AgentNotConnected``."""
        body = {"topic": topic, "payload": {} if payload is None else payload}
        body.update(timeout=timeout, stamp=stamp)
        path = f"/agents/{urllib.parse.quote(agent_id)}/commands"
        status, answer = self._call("POST", path, body, timeout=timeout + _SLACK)
        error = answer.get("error") if isinstance(answer, dict) else None
        if status == 504:
            raise AckTimeout(str(error))
        if status == 404:
            raise AgentNotConnected(str(error))
        return dict(self._ok(status, answer))

    def heartbeats(
        self, agent_id: str, *, after: int = 0, count: int = 1, wait: float = 0, limit: int = 0
    ) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode(
            {"after": after, "count": count, "wait": wait, "limit": limit}
        )
        path = f"/agents/{urllib.parse.quote(agent_id)}/heartbeats?{query}"
        return list(self._ok(*self._call("GET", path, timeout=wait + _SLACK))["heartbeats"])

    def acks(self, agent: str | None = None, topic: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("agent", agent), ("topic", topic)) if v is not None}
        path = "/acks" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        return list(self._ok(*self._call("GET", path))["acks"])

    def refusals(self) -> list[dict[str, Any]]:
        return list(self._ok(*self._call("GET", "/refusals"))["refusals"])

    def disconnect(self, agent_id: str) -> bool:
        status, body = self._call("POST", f"/agents/{urllib.parse.quote(agent_id)}/disconnect")
        return status == 200 and bool(body.get("disconnected"))
