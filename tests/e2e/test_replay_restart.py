"""Exactly-once across a kill -9 of the gateway: the real suite under supervisord, the
development cloud over mTLS, the executor's own request traces as the count of runs."""

from __future__ import annotations

import os
import signal
from typing import Any

from devcloud.errors import AckTimeout, AgentNotConnected
from services.gateway.replaylog import decode
from testkit.helpers import wait_for
from tests.e2e.conftest import RPC_TIMEOUT, Agent


def runs(agent: Agent, method: str) -> int:
    return sum(1 for t in agent.sentinel("executor")
               if t["method"] == method and t["caller"] == "gateway")


def started_on_file(agent: Agent, cid: int) -> bool:
    path = agent.base / "state" / "gateway" / "replay.log"
    try:
        lines = path.read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        return False
    return any((r := decode(line)) is not None and r.get("c") == cid for line in lines)


def kill_gateway(agent: Agent) -> None:
    old = agent.suite.status()["gateway"][1]
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: (s := agent.suite.status()["gateway"])[0] == "RUNNING" and s[1] != old,
             30, interval=0.2, what="gateway restarted by supervisord")
    agent.wait_connected(20)


def test_a_resend_after_a_gateway_kill_runs_once(agent: Agent) -> None:
    agent.sentinel("executor")
    # 1. A finished command whose answer proves it did not run ("Docker unavailable":
    #    this executor has no engine): that outcome is not kept across the gateway's death.
    done_cid = agent.next_cid()
    stop = {"device_id": "plc-e2e-once", "correlation_id": done_cid,
            "requested_at": "2026-01-01T00:00:00Z"}
    first = agent.send("stop_device", stop).ack
    assert first["correlation_id"] == done_cid and first.get("reason") != "in_doubt"
    assert first["error"].startswith("Docker unavailable"), first
    assert runs(agent, "stop_device") == 1

    # 2. A command the gateway dies on: sent to a frozen executor, then kill -9.
    doubt_cid = agent.next_cid()
    delete = {"device_id": "plc-e2e-doubt", "correlation_id": doubt_cid}
    executor = agent.suite.status()["executor"][1]
    assert executor is not None
    os.kill(executor, signal.SIGSTOP)
    try:
        pending = agent.clouds.submit(agent.cloud.send_record(
            agent.id, "delete_device", delete, timeout=RPC_TIMEOUT + 10, stamp=False))
        wait_for(lambda: started_on_file(agent, doubt_cid), 10, interval=0.05,
                 what="the started record")
        kill_gateway(agent)
    finally:
        os.kill(executor, signal.SIGCONT)
    try:
        lost: Any = pending.result(RPC_TIMEOUT + 15).ack
    except (AgentNotConnected, AckTimeout):
        lost = None
    assert lost is None  # the first attempt's ack died with the gateway

    # 3. The cloud resends both after reconnecting: the one that provably did not run runs
    #    again (once); the one the gateway died on does not.
    assert agent.send("stop_device", stop).ack == first
    again = agent.send("delete_device", delete).ack
    assert again["status"] == "error" and again["reason"] == "in_doubt", again
    assert again["correlation_id"] == doubt_cid
    assert again["device_id"] == again["poll_device_id"] == "plc-e2e-doubt"
    assert "Poll get_device_status" in again["error"]
    assert agent.send("delete_device", delete).ack == again
    traces = agent.sentinel("executor")
    assert len([t for t in traces if t["method"] == "stop_device"
                and t["caller"] == "gateway"]) == 1, traces
    # The frozen executor may have served the first attempt late, or refused it as
    # expired; the resend never reached it.
    assert sum(1 for t in traces if t["method"] == "delete_device"
               and t["outcome"] in ("ok", "error")) <= 1

    # 4. The same id with another payload is a new command and runs.
    other = agent.send("stop_device", {**stop, "device_id": "plc-e2e-other"}).ack
    assert other["correlation_id"] == done_cid
    assert runs(agent, "stop_device") == 1


def test_reads_are_never_cached_across_restarts_either(agent: Agent) -> None:
    cid = agent.next_cid()
    status = {"device_id": "plc-e2e-read", "correlation_id": cid}
    agent.sentinel("executor")
    for _ in range(3):
        ack = agent.send("get_device_status", status).ack
        assert ack["correlation_id"] == cid and ack.get("reason") != "in_doubt"
    assert runs(agent, "device_status") == 3
