"""The topic table: every cloud command, the process and bus method that serve it.

For each command the router, in order: reads the payload (the first Socket.IO argument;
anything else is ignored), looks up the replay cache, validates against the topic's
contract, sends **one** bus request with the command budget as deadline, and builds
**one** ack.  Whatever happens — a payload that is not an object, a validation failure, an
owning process that is down, slow, or does not serve the method yet, an internal error —
the result is an ack dict; `handle()` never raises and never returns None.

Error acks carry `reason`, a short machine-readable kind next to the human `error`:

* `not_available` — the owning process runs but does not serve this command (yet);
* `unavailable` — the owning process did not answer and sends no liveness beats;
* `timeout` — the owning process is alive but did not answer within the budget;
* `expired`, `stopping` — the bus's own refusals;
* the kind of a `RemoteError` the owning process raised (`busy`, `not_found`, ...);
* `internal` — a bug, logged with its traceback.

Replay policy (see `replay.py`): only valid commands that change state are deduplicated,
by topic, `correlation_id` and payload digest; reads are always answered fresh.  An ack is
kept for repeats unless it proves the command never ran (not delivered, `not_available`,
`expired`, `docker_unavailable`).  Validation failures are never cached.

`run_command` waits longer than the executor's proxy deadline (`RUN_COMMAND_BUDGET`); when
the executor still does not answer, the ack is the documented HTTP 500 `http_response`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from common.bus import Counters, RpcClient, RpcError, RpcTimeout
from services.gateway import acks
from services.gateway.contracts import (
    CONTRACTS,
    Command,
    ContractError,
    echo_correlation_id,
    validate,
)
from services.gateway.jsoncodec import Undecodable
from services.gateway.peers import PeerWatch
from services.gateway.replay import Ack, ReplayCache, replay_key
from services.gateway.schema import validation_text

log = logging.getLogger(__name__)

Call = Callable[[str, str, dict[str, Any], float], Awaitable[Any]]
Composer = Callable[["Router", "Route", Command, float], Awaitable[Any]]


class Outcome(Exception):
    """An error ack decided below `handle()`: the text, its kind and whether to keep it."""

    def __init__(self, error: str, reason: str, keep: bool) -> None:
        super().__init__(error)
        self.error = error
        self.reason = reason
        self.keep = keep


@dataclass(frozen=True)
class Route:
    topic: str
    process: str
    method: str
    mutating: bool = False  # changes state: a timeout is replayed rather than re-run
    budget: float | None = None  # seconds; None = the config's rpc_timeout
    compose: Composer | None = None  # replaces the single call when an ack needs more


async def _with_ip_addresses(router: Router, route: Route, command: Command,
                             budget: float) -> Any:
    """`get_consumption_orchestrator` = metrics' figures + addresses from netbridge, asked
    at the same time; when netbridge cannot say, the figures go out with no addresses."""
    addresses = asyncio.create_task(router.ip_addresses(budget))
    try:
        result = await router.call(route.process, route.method, command.params, budget)
    except BaseException:
        addresses.cancel()
        raise
    found = await addresses
    return {"ip_addresses": found, **result} if isinstance(result, dict) else result


def ip_addresses(interfaces: Any) -> list[dict[str, str]]:
    """`[{"interface", "ip_address"}]` from netbridge IFACE records, one per IPv4 address."""
    out: list[dict[str, str]] = []
    if not isinstance(interfaces, list):
        return out
    for iface in interfaces:
        if not isinstance(iface, dict) or not isinstance(iface.get("interface"), str):
            continue
        for entry in iface.get("ipv4_addresses") or []:
            address = entry.get("address") if isinstance(entry, dict) else entry
            if isinstance(address, str) and _is_ipv4(address):
                out.append({"interface": iface["interface"], "ip_address": address})
    return sorted(out, key=lambda a: (a["interface"], a["ip_address"]))


def _is_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


# The executor's HTTP proxy gives a runtime 30 s (its `ProxyLimits.total_timeout`, plus a
# quarter second for its worker to report) before it answers with its own 500; the gateway
# waits longer, so the cloud gets the proxy's answer rather than a gateway timeout.
RUN_COMMAND_BUDGET = 35.0

ROUTES: Mapping[str, Route] = {r.topic: r for r in (
    Route("create_new_runtime", "executor", "create_runtime", mutating=True),
    Route("delete_device", "executor", "delete_device", mutating=True),
    Route("start_device", "executor", "start_device", mutating=True),
    Route("stop_device", "executor", "stop_device", mutating=True),
    Route("restart_device", "executor", "restart_device", mutating=True),
    Route("get_device_status", "executor", "device_status"),
    Route("run_command", "executor", "run_command", mutating=True,
          budget=RUN_COMMAND_BUDGET),
    Route("get_consumption_device", "metrics", "consumption_device"),
    Route("get_consumption_orchestrator", "metrics", "consumption_orchestrator",
          compose=_with_ip_addresses),
    Route("get_host_interfaces", "netbridge", "host_interfaces"),
    Route("get_serial_devices", "netbridge", "serial_devices"),
    Route("delete_orchestrator", "executor", "delete_orchestrator", mutating=True),
)}

assert set(ROUTES) == set(CONTRACTS), "every contract needs a route and vice versa"

# Bus refusals that prove the owning process did not run the command.  The executor
# raises `docker_unavailable` only before it changed anything (services/executor/service.py),
# so a resend after the engine is back really runs.
NOT_RUN = frozenset({"unknown_method", "expired", "docker_unavailable"})
# Outcomes where the owning process did not answer in time.
SILENT = frozenset({"timeout", "unavailable"})


def http_error(status_code: int, message: str) -> dict[str, Any]:
    """A `run_command` reply made by the gateway: `http_response` with `{"error"}`."""
    return {"status": "error", "http_response": {
        "status_code": status_code, "headers": {"Content-Type": "application/json"},
        "body": {"error": message}, "ok": False, "content_type": "application/json"}}


class Router:
    def __init__(self, clients: Mapping[str, RpcClient], watch: PeerWatch, budget: float,
                 replay: ReplayCache, counters: Counters) -> None:
        self.clients = clients
        self.watch = watch
        self.budget = budget
        self.replay = replay
        self.counters = counters

    async def call(self, process: str, method: str, params: dict[str, Any],
                   budget: float) -> Any:
        return await self.clients[process].call(method, params, timeout=budget)

    async def ip_addresses(self, budget: float) -> list[dict[str, str]]:
        if "netbridge" in self.watch.down():
            return []  # known down: no reason to spend the budget waiting for it
        try:
            reply = await self.call("netbridge", "interfaces", {}, budget)
        except (RpcTimeout, RpcError) as exc:
            log.info("no interface list from netbridge: %s", exc)
            return []
        return ip_addresses(reply.get("interfaces") if isinstance(reply, dict) else None)

    # --- the one entry point ----------------------------------------------------------

    async def handle(self, topic: str, args: tuple[Any, ...]) -> Ack:
        started = time.monotonic()
        payload = args[0] if args else None
        correlation_id = echo_correlation_id(payload)
        if len(args) > 1:
            log.debug("%s: ignoring %d extra arguments", topic, len(args) - 1)
        try:
            ack, kind = await self._execute(topic, payload, correlation_id)
        except Exception:
            log.exception("%s (correlation_id %s) failed inside the gateway", topic,
                          correlation_id)
            ack = acks.error_ack(topic, correlation_id, "internal error in the gateway",
                                 reason="internal")
            kind = "error"
        self._log(topic, correlation_id, ack, kind, time.monotonic() - started)
        return ack

    async def _execute(self, topic: str, payload: Any, correlation_id: Any) -> tuple[Ack, str]:
        """(ack, outcome kind for counters and logs).  Only valid commands reach the
        replay cache, which decides whether they are deduplicated at all."""
        if isinstance(payload, Undecodable):
            error = ContractError(validation_text("", payload.reason))
            return acks.validation_ack(topic, None, error), "invalid"
        try:
            command = validate(topic, payload)
        except ContractError as exc:
            return acks.validation_ack(topic, correlation_id, exc), "invalid"
        route = ROUTES[topic]  # validate() knows only routed topics
        budget = self._budget(route)
        kind = "replayed"

        async def produce() -> tuple[Ack, bool]:
            nonlocal kind
            try:
                body = await self._forward(route, command, budget)
            except Outcome as outcome:
                kind = "error"
                return self._outcome_ack(route, command, outcome), outcome.keep
            kind = "ok"
            return acks.wrap_reply(topic, command.correlation_id, body), True

        key = replay_key(topic, payload, command.correlation_id, command.params)
        ack, _ = await self.replay.run(key, produce)
        return ack, kind

    def _budget(self, route: Route) -> float:
        # A long budget is for a process that works on it; one that sends no liveness
        # beats gets the quick one, so the cloud hears about it before its own timeout.
        if route.budget is None or not self.watch.is_up(route.process):
            return self.budget
        return max(route.budget, self.budget)

    def _outcome_ack(self, route: Route, command: Command, outcome: Outcome) -> Ack:
        if route.topic == "run_command" and outcome.reason in SILENT:
            # The documented shape of a run_command that got no reply: an HTTP 500.
            return acks.wrap_reply(route.topic, command.correlation_id, {
                **http_error(500, outcome.error), "reason": outcome.reason})
        return acks.error_ack(route.topic, command.correlation_id, outcome.error,
                              reason=outcome.reason)

    async def _forward(self, route: Route, command: Command, budget: float) -> dict[str, Any]:
        try:
            if route.compose is not None:
                result = await route.compose(self, route, command, budget)
            else:
                result = await self.call(route.process, route.method, command.params, budget)
        except RpcTimeout as exc:
            raise self._silence(route, budget, exc.delivered) from None
        except RpcError as exc:
            raise self._refusal(route, exc) from None
        if not isinstance(result, dict):
            log.error("%s.%s returned %s, not an object", route.process, route.method,
                      type(result).__name__)
            raise Outcome(f"{route.process} returned an invalid reply", "internal", True)
        return result

    def _silence(self, route: Route, budget: float, delivered: bool) -> Outcome:
        keep = delivered and route.mutating
        if self.watch.is_up(route.process):
            return Outcome(f"{route.process} did not answer within {budget:g} s", "timeout",
                           keep)
        quiet = self.watch.silence(route.process)
        since = f" for {quiet:.0f} s" if quiet is not None else ""
        return Outcome(f"{route.process} is not running (no liveness beat{since}); "
                       f"{route.topic} cannot be served now", "unavailable", keep)

    def _refusal(self, route: Route, exc: RpcError) -> Outcome:
        if exc.kind == "unknown_method":
            return Outcome(f"{route.topic} is not available on this agent: {route.process} "
                           f"does not serve {route.method!r}", "not_available", False)
        return Outcome(exc.message or exc.kind, exc.kind, exc.kind not in NOT_RUN)

    # --- logging ----------------------------------------------------------------------

    def _log(self, topic: str, correlation_id: Any, ack: Ack, kind: str,
             elapsed: float) -> None:
        self.counters[f"cmd_{kind}"] += 1
        status = ack.get("status")
        if kind == "replayed":
            outcome = f"replayed the first ack (status {status})"
        elif kind == "invalid":
            outcome = f"rejected: {ack.get('error')}"
        elif kind == "error":
            outcome = f"error ({ack.get('reason')}): {ack.get('error')}"
        else:
            outcome = f"ok (status {status})"
        # A part that has not landed is a known state, not an incident.
        level = (logging.WARNING if kind == "error" and ack.get("reason") != "not_available"
                 else logging.INFO)
        log.log(level, "command %s correlation_id=%s: %s in %.1f ms", topic, correlation_id,
                outcome, elapsed * 1000)
