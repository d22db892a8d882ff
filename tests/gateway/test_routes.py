"""Cloud → gateway → bus → ack, with stand-in peer processes on real sockets.

The peers answer what each test needs (slow, failing, counting), which is how the
gateway's side of every rule is pinned down: one ack per command, in time, with the
right shape, and never a second execution of a repeated command.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from typing import Any

import aiohttp
import pytest

from common import wire
from common.bus import RemoteError, RpcClient
from devcloud.errors import AckTimeout
from services.gateway.contracts import TOPICS
from services.gateway.router import ROUTES
from tests.gateway.conftest import (
    Env,
    connected,
    creating_reply,
    peers,
    running_gateway,
)

VALID: dict[str, dict[str, Any]] = {
    "create_new_runtime": {
        "container_name": "plc-001",
        "vnic_configs": [{"name": "eth0", "parent_interface": "oat0", "network_mode": "dhcp"}],
    },
    "delete_device": {"device_id": "plc-001"},
    "start_device": {"device_id": "plc-001"},
    "stop_device": {"device_id": "plc-001"},
    "restart_device": {"device_id": "plc-001"},
    "get_device_status": {"device_id": "plc-001"},
    "run_command": {"device_id": "plc-001", "method": "get", "api": "api/status"},
    "get_consumption_device": {"device_id": "plc-001", "cpuPeriod": "2h", "memoryPeriod": "1h"},
    "get_consumption_orchestrator": {"cpuPeriod": "1h", "memoryPeriod": "30m"},
    "get_host_interfaces": {"include_virtual": True},
    "get_serial_devices": {},
    "delete_orchestrator": {},
}

IFACES = [
    {"interface": "oat1", "ipv4_addresses": [{"address": "198.51.100.7", "prefixlen": 24},
                                             {"address": "198.51.100.8", "prefixlen": 24}]},
    {"interface": "oat0", "ipv4_addresses": [{"address": "192.0.2.10", "prefixlen": 24}]},
]


def echo(method: str) -> Any:
    async def handler(params: dict[str, Any]) -> dict[str, Any]:
        return {"status": "success", "method": method, "params": params,
                "action": "forged", "correlation_id": -1}
    return handler


async def test_every_topic_reaches_its_process_and_method_once(env: Env) -> None:
    config = env.config()
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "executor", "metrics", "netbridge") as ps:
        for route in ROUTES.values():
            ps[route.process].serve(route.method, echo(route.method))
        ps["netbridge"].serve("interfaces", echo("interfaces"))
        for peer in ps.values():
            peer.start()
        await connected(env, gw)
        for topic in TOPICS:
            ack = await env.cloud.send(env.creds.agent_id, topic,
                                       {**VALID[topic], "correlation_id": 77})
            route = ROUTES[topic]
            # action and correlation_id are the gateway's, whatever the reply said.
            assert list(ack)[:2] == ["action", "correlation_id"]
            assert (ack["action"], ack["correlation_id"]) == (topic, 77)
            assert ack["status"] == "success" and ack["method"] == route.method
            assert "correlation_id" not in ack["params"] and "action" not in ack["params"]
            assert ps[route.process].calls[route.method] == 1
        assert ps["executor"].calls["run_command"] == 1
        sent = [r for r in env.cloud.acks if r.problems]
        assert sent == []
    params = {r.topic: r.ack["params"] for r in env.cloud.acks}
    # The contract's normalised params travel, defaults filled in.
    assert params["run_command"]["method"] == "GET"
    assert params["run_command"]["api"] == "/api/status"
    assert params["run_command"]["port"] == 8443
    assert params["create_new_runtime"]["runtime_version"] == "latest"
    assert params["get_consumption_device"] == {"device_id": "plc-001", "cpuPeriod": "2h",
                                                "memoryPeriod": "1h"}
    assert params["get_host_interfaces"] == {"include_virtual": True, "detailed": True}
    assert params["delete_orchestrator"] == {}


async def test_consumption_orchestrator_is_composed_with_addresses(env: Env) -> None:
    figures = {"memory": 7821, "cpu": 4, "os": "Linux 6.8.0", "kernel": "6.8.0", "disk": 234,
               "cpu_usage": [{"timestamp": 1760000000, "cpu": 12}],
               "memory_usage": [{"timestamp": 1760000000, "memory": 2560}]}

    async def consumption(params: dict[str, Any]) -> dict[str, Any]:
        return figures

    async def interfaces(params: dict[str, Any]) -> dict[str, Any]:
        return {"interfaces": IFACES, "stale": False, "connected": True}

    config = env.config()
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "metrics", "netbridge") as ps:
        ps["metrics"].serve("consumption_orchestrator", consumption)
        ps["netbridge"].serve("interfaces", interfaces)
        ps["metrics"].start()
        ps["netbridge"].start()
        await connected(env, gw)
        ack = await env.cloud.send(env.creds.agent_id, "get_consumption_orchestrator",
                                   {"cpuPeriod": "1h", "memoryPeriod": "1h"})
        assert "status" not in ack
        assert ack["ip_addresses"] == [
            {"interface": "oat0", "ip_address": "192.0.2.10"},
            {"interface": "oat1", "ip_address": "198.51.100.7"},
            {"interface": "oat1", "ip_address": "198.51.100.8"},
        ]
        assert {k: ack[k] for k in figures} == figures

        # netbridge gone: the figures still come, with no addresses, inside the budget.
        await ps["netbridge"].close()
        started = time.monotonic()
        ack = await env.cloud.send(env.creds.agent_id, "get_consumption_orchestrator",
                                   {"cpuPeriod": "1h", "memoryPeriod": "1h"})
        assert time.monotonic() - started < config.rpc_timeout + 0.5
        assert ack["ip_addresses"] == [] and ack["memory"] == 7821


async def test_a_peer_that_does_not_serve_the_method_yet(env: Env) -> None:
    config = env.config()
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "executor") as ps:
        ps["executor"].start()
        await connected(env, gw)
        payload = {"device_id": "plc-1", "correlation_id": 501}
        ack = await env.cloud.send(env.creds.agent_id, "get_device_status", payload)
        assert ack == {
            "action": "get_device_status", "correlation_id": 501, "status": "error",
            "error": "get_device_status is not available on this agent: executor does not "
                     "serve 'device_status'",
            "reason": "not_available"}
        # Nothing ran, so nothing is replayed: once the method lands, the retry works.
        ps["executor"].serve("device_status", echo("device_status"))
        ack = await env.cloud.send(env.creds.agent_id, "get_device_status", payload)
        assert ack["status"] == "success"


async def test_slow_and_dead_peers_get_an_error_ack_within_the_budget(env: Env) -> None:
    release = asyncio.Event()

    async def stuck(params: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"status": "success"}

    config = env.config(rpc_timeout=0.8)
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "executor") as ps:
        ps["executor"].serve("device_status", stuck)
        ps["executor"].start()
        await connected(env, gw)
        record = await env.cloud.send_record(env.creds.agent_id, "get_device_status",
                                             {"device_id": "plc-1"})
        assert 0.8 <= record.elapsed < 1.3
        assert record.ack["reason"] == "timeout"
        assert record.ack["error"] == "executor did not answer within 0.8 s"
        # metrics is not there at all (no liveness beats either).
        record = await env.cloud.send_record(env.creds.agent_id, "get_consumption_device",
                                             {"device_id": "plc-1", "cpuPeriod": "1h",
                                              "memoryPeriod": "1h"})
        assert record.elapsed < 1.3
        assert record.ack["status"] == "error" and record.ack["reason"] == "unavailable"
        assert record.ack["error"].startswith("metrics is not running")
        release.set()


async def test_remote_errors_and_bad_replies_become_error_acks(env: Env) -> None:
    async def busy(params: dict[str, Any]) -> dict[str, Any]:
        raise RemoteError("busy", "Container plc-1 already has a create operation in progress")

    async def broken(params: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("bug")

    async def not_an_object(params: dict[str, Any]) -> list[int]:
        return [1, 2]

    config = env.config()
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "executor") as ps:
        ps["executor"].serve("create_runtime", busy)
        ps["executor"].serve("delete_device", broken)
        ps["executor"].serve("start_device", not_an_object)
        ps["executor"].start()
        await connected(env, gw)
        send = env.cloud.send
        agent = env.creds.agent_id
        ack = await send(agent, "create_new_runtime", VALID["create_new_runtime"])
        assert ack["status"] == "error" and ack["reason"] == "busy"
        assert ack["error"] == "Container plc-1 already has a create operation in progress"
        ack = await send(agent, "delete_device", {"device_id": "plc-1"})
        assert ack["reason"] == "internal" and "KeyError" in ack["error"]
        ack = await send(agent, "start_device", {"device_id": "plc-1"})
        assert ack["reason"] == "internal"
        assert ack["error"] == "executor returned an invalid reply"


async def test_payloads_that_are_not_one_object_still_get_one_ack(env: Env) -> None:
    config = env.config()
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "executor") as ps:
        ps["executor"].serve("device_status", echo("device_status"))
        ps["executor"].start()
        await connected(env, gw)
        agent = env.creds.agent_id
        for payload, kind in (("text", "a string"), ([1, 2], "a list"), (7, "a number"),
                              (True, "a boolean")):
            ack = await env.cloud.send(agent, "get_device_status", payload)
            assert ack == {"action": "get_device_status", "correlation_id": None,
                           "status": "error",
                           "error": f"Validation error: payload must be a JSON object, "
                                    f"not {kind}"}
        # No argument at all (a bare emit with an ack callback).
        sid = env.cloud.hub.agent(agent).sid
        ack = await env.cloud.hub.sio.call("get_device_status", to=sid, timeout=5)
        assert ack["error"] == "Validation error: payload must be a JSON object, not null"
        # Extra positional arguments: the first is the payload, the rest is ignored.
        ack = await env.cloud.hub.sio.call(
            "get_device_status", ({"device_id": "plc-1", "correlation_id": 9}, "extra", 3),
            to=sid, timeout=5)
        assert ack["status"] == "success" and ack["correlation_id"] == 9
        # An event the agent does not know, asked with an ack.
        ack = await env.cloud.send(agent, "make_coffee", {"correlation_id": 10})
        assert ack == {"action": "make_coffee", "correlation_id": 10, "status": "error",
                       "error": "Validation error: unknown command 'make_coffee'"}
        # JSON the client library cannot decode: an integer of 150 digits.
        ack = await env.cloud.send(agent, "get_device_status",
                                   {"device_id": "plc-1", "big": 10**150})
        assert ack["status"] == "error" and ack["correlation_id"] is None
        assert ack["error"].startswith("Validation error: payload is not valid JSON")
        # Larger than the bus could ever carry: refused before parsing, link intact.
        ack = await env.cloud.send(agent, "get_device_status",
                                   {"device_id": "plc-1", "junk": "x" * 17_000_000},
                                   timeout=30)
        assert ack["error"].startswith("Validation error: payload is larger than")
        ack = await env.cloud.send(agent, "get_device_status", {"device_id": "plc-1"})
        assert ack["status"] == "success"
        assert env.cloud.hub.agent(agent).connections == 1
        assert ps["executor"].calls["device_status"] == 2


async def test_repeated_correlation_id_runs_once_even_in_flight_and_after_reconnect(
        env: Env) -> None:
    async def create(params: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.3)
        return creating_reply(params)

    config = env.config()
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "executor") as ps:
        ps["executor"].serve("create_runtime", create)
        ps["executor"].start()
        await connected(env, gw)
        agent = env.creds.agent_id
        payload = {**VALID["create_new_runtime"], "correlation_id": 4242}
        first, second = await asyncio.gather(
            env.cloud.send(agent, "create_new_runtime", payload),
            env.cloud.send(agent, "create_new_runtime", payload))
        assert first == second and first["status"] == "creating"
        assert ps["executor"].calls["create_runtime"] == 1
        # The cloud lost the link and retries after reconnecting.
        await env.cloud.disconnect_agent(agent)
        assert await env.cloud.hub.wait_for(
            lambda: env.cloud.hub.agent(agent).connections == 2 and
            env.cloud.hub.is_connected(agent), 10)
        await gw.wait(lambda: gw.status.connected, 5, "the link")
        again = await env.cloud.send(agent, "create_new_runtime", payload)
        assert again == first
        assert ps["executor"].calls["create_runtime"] == 1
        # Another correlation id is another command.
        other = await env.cloud.send(agent, "create_new_runtime",
                                     {**payload, "correlation_id": 4243})
        assert other["correlation_id"] == 4243
        assert ps["executor"].calls["create_runtime"] == 2
        assert gw.counters["cmd_replayed"] == 2


async def test_timeouts_are_replayed_for_changes_and_retried_for_reads(env: Env) -> None:
    release = asyncio.Event()

    async def slow(params: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"status": "success"}

    config = env.config(rpc_timeout=0.4)
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "executor") as ps:
        ps["executor"].serve("stop_device", slow)
        ps["executor"].serve("device_status", slow)
        ps["executor"].start()
        await connected(env, gw)
        agent = env.creds.agent_id
        for topic, method, calls in (("stop_device", "stop_device", 1),
                                     ("get_device_status", "device_status", 2)):
            payload = {"device_id": "plc-1", "correlation_id": 31}
            first = await env.cloud.send(agent, topic, payload)
            second = await env.cloud.send(agent, topic, payload)
            assert first["reason"] == second["reason"] == "timeout"
            assert ps["executor"].calls[method] == calls, topic
        release.set()


async def test_heartbeats_carry_the_metrics_sample_and_say_what_is_missing(env: Env) -> None:
    config = env.config(heartbeat_interval=0.3, metrics_interval=0.2)
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "metrics", "executor") as ps:
        ps["metrics"].start()
        ps["executor"].start()
        await connected(env, gw)
        agent = env.creds.agent_id

        async def beat_after(predicate: Any, timeout: float = 5) -> dict[str, Any]:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                ps["metrics"].publish_sample(cpu_usage=42.5)
                count = env.cloud.hub.agent(agent).heartbeat_count
                beats = await env.cloud.wait_heartbeats(agent, 1, after_seq=count, timeout=1)
                if beats and predicate(beats[-1].payload):
                    return beats[-1].payload
            raise AssertionError("no heartbeat matched")

        fresh = await beat_after(lambda p: p["sample_source"] == "metrics" and p["unavailable"])
        assert fresh["cpu_usage"] == 42.5 and fresh["disk_total"] == 500.0
        assert fresh["agent_id"] == agent and fresh["status"] == "active"
        assert fresh["unavailable"] == ["netbridge"]
        assert 0 <= fresh["sample_age"] < 1
        assert env.cloud.hub.agent(agent).last_heartbeat.problems == ()

        # metrics goes quiet: the heartbeat keeps its rhythm with the gateway's own sample.
        await ps["metrics"].close()
        count = env.cloud.hub.agent(agent).heartbeat_count
        stale_after = gw.service.heartbeat.stale_after
        beats = await env.cloud.wait_heartbeats(
            agent, int(stale_after / 0.3) + 4, after_seq=count, timeout=stale_after + 3)
        last = beats[-1].payload
        assert last["sample_source"] == "gateway" and last["sample_age"] is None
        assert last["unavailable"] == ["metrics", "netbridge"]
        assert last["memory_total"] > 0 and last["cpu_usage"] != 42.5
        assert beats[-1].problems == ()
        intervals = [b.received_at - a.received_at for a, b in itertools.pairwise(beats)]
        assert all(0.2 < i < 0.45 for i in intervals), intervals


async def test_heartbeat_rhythm_holds_while_commands_wait_on_the_bus(env: Env) -> None:
    async def slow(params: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(1.5)
        return {"status": "success"}

    config = env.config(heartbeat_interval=0.25, rpc_timeout=3)
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "executor") as ps:
        ps["executor"].serve("device_status", slow)
        ps["executor"].start()
        await connected(env, gw)
        agent = env.creds.agent_id
        count = env.cloud.hub.agent(agent).heartbeat_count
        acks = await asyncio.gather(*(
            env.cloud.send(agent, "get_device_status", {"device_id": f"plc-{i}"})
            for i in range(40)))
        assert all(a["status"] == "success" for a in acks)
        beats = env.cloud.hub.heartbeats(agent, after_seq=count)
        assert len(beats) >= 5
        intervals = [b.received_at - a.received_at for a, b in itertools.pairwise(beats)]
        assert all(0.15 < i < 0.35 for i in intervals), intervals


async def test_link_status_on_the_bus(env: Env) -> None:
    config = env.config()
    async with running_gateway(config) as gw:
        await connected(env, gw)
        rt = gw.runtime
        client = RpcClient(rt.ctx, rt.endpoints.rpc("gateway"), wire.Stamper("test"), 2)
        try:
            status = await client.call("link_status", {}, timeout=2)
        finally:
            client.close()
        assert status["connected"] is True and status["agent_id"] == env.creds.agent_id
        assert status["url"] == env.cloud.url and status["connections"] == 1


async def test_cloud_stop_and_start_reconnects_with_backoff(env: Env) -> None:
    config = env.config(reconnect_max=1.0)
    async with running_gateway(config) as gw:
        await connected(env, gw)
        port = env.cloud.port
        await env.cloud.stop()
        await gw.wait(lambda: gw.status.attempts >= 3, 10, "failed attempts")
        assert not gw.status.connected
        assert "Cannot connect" in (gw.status.last_error or "")
        env.cloud.__init__(env.cloud.directory, port=port, admin_port=0,  # type: ignore[misc]
                           provision_port=0)
        await env.cloud.start()
        started = time.monotonic()
        assert await env.cloud.wait_connected(env.creds.agent_id, 5)
        # The cap bounds the wait: at most one capped delay, plus the handshake.
        assert time.monotonic() - started < 1.0 + 0.5
        assert await env.cloud.wait_heartbeats(env.creds.agent_id, 1, timeout=5)


async def test_cloud_command_timeout_is_never_reached(env: Env) -> None:
    """Even with nothing answering on the bus, the cloud gets its ack before it gives up."""
    config = env.config(rpc_timeout=1.0)
    async with running_gateway(config) as gw:
        await connected(env, gw)

        async def one(topic: str) -> Any:
            try:
                return await env.cloud.send_record(env.creds.agent_id, topic, VALID[topic],
                                                   timeout=2.5)
            except AckTimeout:
                pytest.fail(f"{topic}: no ack")

        records = await asyncio.gather(*(one(topic) for topic in TOPICS))
        for topic, record in zip(TOPICS, records, strict=True):
            assert record.ack["status"] == "error", topic
            assert record.ack["reason"] == "unavailable", topic
            assert record.elapsed < 1.5, topic


async def test_reconnections_leave_no_sessions_or_tasks_behind(env: Env) -> None:
    def open_sessions() -> int:
        return sum(1 for o in gc.get_objects()
                   if isinstance(o, aiohttp.ClientSession) and not o.closed)

    def client_tasks() -> list[str]:
        # The cloud's server keeps ping tasks of closed sockets for a while; count only
        # the tasks of the agent's side.
        names = []
        for task in asyncio.all_tasks():
            code = getattr(task.get_coro(), "cr_code", None)
            where = code.co_filename if code is not None else ""
            if "async_client" in where or "services/gateway" in where:
                names.append(f"{where.rsplit('/', 1)[-1]}:{code.co_name}")
        return sorted(names)

    config = env.config(reconnect_max=0.3)
    async with running_gateway(config) as gw:
        await connected(env, gw)
        agent = env.creds.agent_id
        await env.cloud.wait_heartbeats(agent, 2, timeout=5)
        baseline = client_tasks()
        for n in range(2, 6):
            await env.cloud.disconnect_agent(agent)
            assert await env.cloud.hub.wait_for(
                lambda n=n: env.cloud.hub.agent(agent).connections == n
                and env.cloud.hub.is_connected(agent), 10)
            await gw.wait(lambda: gw.status.connected, 5, "the link")
        gc.collect()
        assert open_sessions() == 1  # the live connection's, nothing else
        assert client_tasks() == baseline, (client_tasks(), baseline)
        assert any("_read_loop" in t for t in baseline), baseline
        assert any(t.endswith(":run") for t in baseline), baseline
        assert gw.status.connections == 5
