"""The admin interface: plain HTTP bound to 127.0.0.1 only, JSON in and out.

* ``GET  /info``                          urls, ports, CA file
* ``GET  /agents``                        ``{"agents": [...]}``: id, connected, last heartbeat, ...
* ``GET  /agents/{id}``                   one agent
* ``GET  /agents/{id}/heartbeats``        ``?after=<seq>&limit=<n>&count=<n>&wait=<s>``: with
  ``wait``, blocks until ``count`` heartbeats newer than ``after`` arrived or ``wait`` passed
* ``POST /agents/{id}/commands``          ``{"topic", "payload", "timeout"?, "stamp"?}`` →
  200 ``{"ack", "record"}``; 404 not connected; 504 no ack in time
* ``POST /agents/{id}/disconnect``        drop the agent's Socket.IO session (link cut)
* ``GET  /acks``                          ``?agent=&topic=``: every ack recorded
* ``GET  /refusals``                      refused Socket.IO connections

Loopback alone is no boundary: any web page the developer opens can send requests to
127.0.0.1.  So every request must pass, in this order:

* ``Host`` must be a loopback name or address with this listener's port (403): a page
  that rebinds its own DNS name to 127.0.0.1 still sends its own name;
* an ``Origin`` header, when present, must be this interface's own (403): browsers send
  it on cross-origin requests;
* ``Authorization: Bearer <token>`` with the token the cloud writes (0600) to
  ``<dir>/admin.token`` when it starts (401); the CLI reads it from there;
* a request that carries a body, and every POST, must say ``Content-Type:
  application/json`` (415): the "simple" content types a page may send without asking
  first (text/plain, forms) are refused.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from devcloud.errors import AckTimeout, AgentNotConnected
from devcloud.hub import AgentHub

log = logging.getLogger(__name__)

ADMIN_HOST = "127.0.0.1"
MAX_WAIT = 300.0
TOKEN_FILE = "admin.token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

HUB_KEY: web.AppKey[AgentHub] = web.AppKey("hub", AgentHub)
INFO_KEY: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("info")
TOKEN_KEY: web.AppKey[str] = web.AppKey("token", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{name} must be a number") from exc
    if math.isnan(value) or not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name} must be within [{low}, {high}]")
    return value


async def info(request: web.Request) -> web.Response:
    return web.json_response(request.app[INFO_KEY]())


async def list_agents(request: web.Request) -> web.Response:
    return web.json_response({"agents": request.app[HUB_KEY].agents()})


async def get_agent(request: web.Request) -> web.Response:
    agent_id = request.match_info["agent_id"]
    for agent in request.app[HUB_KEY].agents():
        if agent["id"] == agent_id:
            return web.json_response(agent)
    return _error(404, f"unknown agent {agent_id}")


async def heartbeats(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    agent_id = request.match_info["agent_id"]
    after = int(_number(request, "after", 0, 0, 2**62))
    limit = int(_number(request, "limit", 0, 0, 100000)) or None
    wait = _number(request, "wait", 0, 0, MAX_WAIT)
    count = int(_number(request, "count", 1, 1, 100000))
    if wait > 0:
        beats = await hub.wait_heartbeats(agent_id, count, after_seq=after, timeout=wait)
    else:
        beats = hub.heartbeats(agent_id, after)
    if limit:
        beats = beats[-limit:]
    return web.json_response({"heartbeats": [b.as_dict() for b in beats]})


async def send_command(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    agent_id = request.match_info["agent_id"]
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "request body must be JSON")
    if not isinstance(body, dict) or not isinstance(body.get("topic"), str) or not body["topic"]:
        return _error(400, "body must be an object with a non-empty string 'topic'")
    timeout = body.get("timeout", hub.default_timeout)
    if (
        not isinstance(timeout, (int, float))
        or isinstance(timeout, bool)
        or not 0 < timeout <= MAX_WAIT
    ):
        return _error(400, f"timeout must be a number in (0, {MAX_WAIT}]")
    payload = body.get("payload", {})
    stamp = body.get("stamp", True) is not False
    try:
        record = await hub.send(
            agent_id, body["topic"], payload, timeout=float(timeout), stamp=stamp
        )
    except AgentNotConnected as exc:
        return _error(404, str(exc))
    except AckTimeout as exc:
        return _error(504, str(exc))
    return web.json_response({"ack": record.ack, "record": record.as_dict()})


async def disconnect(request: web.Request) -> web.Response:
    done = await request.app[HUB_KEY].disconnect_agent(request.match_info["agent_id"])
    return web.json_response({"disconnected": done}, status=200 if done else 404)


async def acks(request: web.Request) -> web.Response:
    agent = request.query.get("agent")
    topic = request.query.get("topic")
    records = [
        r.as_dict()
        for r in request.app[HUB_KEY].acks
        if (agent is None or r.agent_id == agent) and (topic is None or r.topic == topic)
    ]
    return web.json_response({"acks": records})


async def refusals(request: web.Request) -> web.Response:
    return web.json_response({"refusals": [r.as_dict() for r in request.app[HUB_KEY].refusals]})


def _local_port(request: web.Request) -> int | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return int(sockname[1]) if sockname else None


def _own_hosts(port: int | None) -> set[str]:
    hosts = {f"{name}:{port}" for name in LOOPBACK_NAMES}
    if port == 80:
        hosts.update(LOOPBACK_NAMES)
    return hosts


def refusal(request: web.Request, token: str) -> web.Response | None:
    """Why this request may not reach a handler (an error response), or None."""
    port = _local_port(request)
    own = _own_hosts(port)
    host = request.headers.get("Host", "").strip().lower()
    if host not in own:
        return _error(403, f"Host {host or '(none)'!r} is not this admin interface "
                           f"(expected {ADMIN_HOST}:{port} or localhost:{port})")
    origin = request.headers.get("Origin")
    if origin is not None and origin.strip().lower() not in {f"http://{h}" for h in own}:
        return _error(403, f"cross-origin request from {origin!r} refused")
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(),
                                                             token.encode()):
        response = _error(401, f"missing or wrong admin token (the cloud writes it to "
                               f"<dir>/{TOKEN_FILE}; the CLI reads it from there)")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if (request.method == "POST" or request.body_exists) and request.content_type != (
            "application/json"):
        return _error(415, f"Content-Type must be application/json, not "
                           f"{request.headers.get('Content-Type', '(none)')!r}")
    return None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    refused = refusal(request, request.app[TOKEN_KEY])
    if refused is not None:
        log.warning("admin: refused %s %s: %s", request.method, request.path, refused.text)
        return refused
    return await handler(request)


def make_app(
    hub: AgentHub, info_fn: Callable[[], dict[str, Any]], token: str
) -> web.Application:
    if len(token) < 16:
        raise ValueError("the admin token is too short")
    app = web.Application(middlewares=[guard])
    app[TOKEN_KEY] = token
    app[HUB_KEY] = hub
    app[INFO_KEY] = info_fn
    app.router.add_get("/info", info)
    app.router.add_get("/agents", list_agents)
    app.router.add_get("/agents/{agent_id}", get_agent)
    app.router.add_get("/agents/{agent_id}/heartbeats", heartbeats)
    app.router.add_post("/agents/{agent_id}/commands", send_command)
    app.router.add_post("/agents/{agent_id}/disconnect", disconnect)
    app.router.add_get("/acks", acks)
    app.router.add_get("/refusals", refusals)
    return app
