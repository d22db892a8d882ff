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

No authentication: loopback is the boundary, so nothing else may bind it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from aiohttp import web

from devcloud.errors import AckTimeout, AgentNotConnected
from devcloud.hub import AgentHub

log = logging.getLogger(__name__)

ADMIN_HOST = "127.0.0.1"
MAX_WAIT = 300.0

HUB_KEY: web.AppKey[AgentHub] = web.AppKey("hub", AgentHub)
INFO_KEY: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("info")


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


def make_app(hub: AgentHub, info_fn: Callable[[], dict[str, Any]]) -> web.Application:
    app = web.Application()
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
