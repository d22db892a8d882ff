"""Deduplication and run_command deadlines through the real gateway: the development
cloud over mTLS, the real bus, stand-in peers that count their calls."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from common.bus import RemoteError
from services.gateway import router
from tests.gateway.conftest import (
    Env,
    connected,
    creating_reply,
    peers,
    running_gateway,
)


async def test_status_polls_with_a_fixed_id_see_the_state_change_and_reads_are_fresh(
        env: Env) -> None:
    state = {"status": "creating"}

    async def device_status(params: dict[str, Any]) -> dict[str, Any]:
        return {**state, "device_id": params["device_id"]}

    async def consumption(params: dict[str, Any]) -> dict[str, Any]:
        return {"device_id": params["device_id"], "memory": state["status"]}

    async def run_command(params: dict[str, Any]) -> dict[str, Any]:
        return {"status": "success", "http_response": {"status_code": 200,
                                                        "body": state["status"]}}

    config = env.config()
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "executor", "metrics") as ps:
        ps["executor"].serve("device_status", device_status)
        ps["executor"].serve("run_command", run_command)
        ps["metrics"].serve("consumption_device", consumption)
        for peer in ps.values():
            peer.start()
        await connected(env, gw)
        agent = env.creds.agent_id
        status = {"device_id": "plc-1", "correlation_id": 1}
        reads = [("get_device_status", status, lambda a: a["status"]),
                 ("get_consumption_device", {**status, "cpuPeriod": "1h",
                                             "memoryPeriod": "1h"}, lambda a: a["memory"]),
                 ("run_command", {**status, "method": "GET", "api": "/x"},
                  lambda a: a["http_response"]["body"])]
        for topic, payload, seen in reads:
            assert seen(await env.cloud.send(agent, topic, payload)) == "creating"
        state["status"] = "success"
        for topic, payload, seen in reads:
            assert seen(await env.cloud.send(agent, topic, payload)) == "success", topic
        assert ps["executor"].calls["device_status"] == 2
        assert ps["executor"].calls["run_command"] == 2
        assert ps["metrics"].calls["consumption_device"] == 2
        assert gw.counters["cmd_replayed"] == 0
        assert len(gw.service.replay) == 0


async def test_a_reused_id_with_another_payload_runs_and_a_resend_does_not(env: Env) -> None:
    async def create(params: dict[str, Any]) -> dict[str, Any]:
        return creating_reply(params)

    config = env.config()
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "executor") as ps:
        ps["executor"].serve("create_runtime", create)
        ps["executor"].start()
        await connected(env, gw)
        agent = env.creds.agent_id
        vnics = [{"name": "eth0", "parent_interface": "oat0", "network_mode": "dhcp"}]
        # A cloud that restarted counts its ids from 1 again: 40 new runtimes, then 40
        # others with the same ids; every one runs, and each resend is answered from memory.
        for round_ in ("a", "b"):
            for cid in range(1, 41):
                payload = {"container_name": f"plc-{round_}{cid}", "vnic_configs": vnics,
                           "correlation_id": cid}
                ack = await env.cloud.send(agent, "create_new_runtime", payload)
                assert ack["container_id"] == f"plc-{round_}{cid}"
                again = await env.cloud.send(agent, "create_new_runtime", payload)
                assert again == ack
        assert ps["executor"].calls["create_runtime"] == 80
        assert gw.counters["cmd_replayed"] == 80


async def test_run_command_waits_past_the_quick_budget_and_times_out_as_an_http_500(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    delay = {"s": 2.0}

    async def slow(params: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(delay["s"])
        return {"status": "success", "http_response": {"status_code": 200, "body": "late",
                                                        "ok": True}}

    # The real budget is the proxy's 30 s plus a margin; shortened here to keep it quick.
    route = dataclasses.replace(router.ROUTES["run_command"], budget=3.0)
    monkeypatch.setitem(router.ROUTES, "run_command", route)  # type: ignore[arg-type]
    config = env.config(rpc_timeout=0.5)
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "executor") as ps:
        ps["executor"].serve("run_command", slow)
        ps["executor"].start()
        await connected(env, gw)
        await gw.wait(lambda: gw.service.watch.is_up("executor"), 5, "executor beats")
        agent = env.creds.agent_id
        payload = {"device_id": "plc-1", "method": "GET", "api": "/x", "correlation_id": 5}
        record = await env.cloud.send_record(agent, "run_command", payload, timeout=10)
        assert record.ack["http_response"]["body"] == "late"  # 2 s > rpc_timeout
        delay["s"] = 10.0
        record = await env.cloud.send_record(agent, "run_command", payload, timeout=10)
        assert 3.0 <= record.elapsed < 4.0
        ack = record.ack
        assert ack["status"] == "error" and ack["reason"] == "timeout"
        assert ack["http_response"]["status_code"] == 500
        assert ack["http_response"]["ok"] is False
        assert ack["http_response"]["body"] == {"error": "executor did not answer within 3 s"}


def test_run_command_budget_covers_the_proxy_deadline() -> None:
    from services.executor.proxy.forward import DEADLINE_GRACE, DEFAULT

    budget = router.ROUTES["run_command"].budget
    assert budget is not None and budget >= DEFAULT.total_timeout + DEADLINE_GRACE + 2


async def test_a_resend_after_docker_unavailable_runs_and_a_kept_error_does_not(
        env: Env) -> None:
    """`docker_unavailable` proves the executor changed nothing: the resend (Docker back)
    really runs; an error that is the command's own answer is replayed."""
    engine = {"up": False}

    async def stop(params: dict[str, Any]) -> dict[str, Any]:
        if not engine["up"]:
            raise RemoteError("docker_unavailable", "Docker unavailable: socket not found")
        return {"status": "success", "success": True, "device_id": params["device_id"],
                "container_status": "exited"}

    async def restart(params: dict[str, Any]) -> dict[str, Any]:
        return {"status": "error", "success": False, "device_id": params["device_id"],
                "error": "Could not restart container plc-1: Docker unavailable: reset; "
                         "its state is unknown until the engine answers"}

    config = env.config()
    async with running_gateway(config) as gw, \
            peers(gw.ctx, config.run_dir, "executor") as ps:
        ps["executor"].serve("stop_device", stop)
        ps["executor"].serve("restart_device", restart)
        ps["executor"].start()
        await connected(env, gw)
        agent = env.creds.agent_id
        payload = {"device_id": "plc-1", "correlation_id": 77}
        first = await env.cloud.send(agent, "stop_device", payload)
        assert first["status"] == "error" and first["reason"] == "docker_unavailable"
        engine["up"] = True
        second = await env.cloud.send(agent, "stop_device", payload)
        assert second["status"] == "success", second
        third = await env.cloud.send(agent, "stop_device", payload)
        assert third == second
        assert ps["executor"].calls["stop_device"] == 2
        for _ in range(2):
            ack = await env.cloud.send(agent, "restart_device", payload)
            assert ack["status"] == "error"
        assert ps["executor"].calls["restart_device"] == 1
