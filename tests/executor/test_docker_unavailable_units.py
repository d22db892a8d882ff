"""`docker_unavailable` proves nothing changed: the executor raises it only before the
first engine call that changes anything (the gateway lets a resend run again).  An
engine lost during a start/stop/restart is that command's own error.  Fakes stand in for
the engine here; the real engine's side is in test_unavailable.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from services.executor.engine.liveview import ContainerView
from services.executor.errors import DockerUnavailable
from services.executor.runtime import lifecycle
from services.executor.runtime.intents import IntentStore
from services.executor.runtime.journal import Journal
from services.executor.runtime.registry import OperationRegistry


class FakeDocker:
    def __init__(self, available: bool, fail_on: str | None) -> None:
        self.available = available
        self.last_error = "socket not found"
        self.fail_on = fail_on
        self.calls: list[str] = []

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(fn.__name__)
        if fn.__name__ == self.fail_on:
            raise DockerUnavailable("connection reset")
        return None


def context(tmp_path: Path, docker: FakeDocker) -> Any:
    view = ContainerView(id="c1", name="plc-1", status="running", running=True, pid=1,
                         started_at=None, exit_code=None, restart_count=0, health=None,
                         internal_ip="172.30.0.2")
    saved: list[Any] = []

    async def save_op(op: Any) -> None:
        saved.append(op)

    def require_docker() -> None:
        if not docker.available:
            raise DockerUnavailable(docker.last_error)

    intents = IntentStore(tmp_path)
    intents.load()

    async def save_intent(intent: Any) -> None:
        saved.append(intent)

    return SimpleNamespace(
        docker=docker, ops=OperationRegistry(), journal=Journal(tmp_path), saved=saved,
        intents=intents, save_intent=save_intent, publish=lambda message: None,
        config=SimpleNamespace(sidecar_container="sidecar", stop_grace=1.0),
        agent_name=None, agent_container=None, require_docker=require_docker,
        view=SimpleNamespace(get=lambda name: view if name == "plc-1" else None,
                             adopted={}),
        save_op=save_op, dhcp=None)  # DHCP off: no lease check before a start


@pytest.mark.parametrize("action", ["start", "stop", "restart"])
async def test_engine_known_gone_raises_before_any_call(tmp_path: Path, action: str) -> None:
    docker = FakeDocker(available=False, fail_on=None)
    ctx = context(tmp_path, docker)
    with pytest.raises(DockerUnavailable):
        await lifecycle.control(ctx, "plc-1", action)
    assert docker.calls == []
    assert ctx.ops.current("plc-1") is None


@pytest.mark.parametrize("action", ["start", "stop", "restart"])
async def test_engine_lost_during_the_action_is_the_commands_own_error(
        tmp_path: Path, action: str) -> None:
    docker = FakeDocker(available=True, fail_on=action)
    ctx = context(tmp_path, docker)
    body = await lifecycle.control(ctx, "plc-1", action)
    assert body["status"] == "error" and body["success"] is False
    assert body["error"] == (f"Could not {action} container plc-1: Docker unavailable: "
                             "connection reset; its state is unknown until the engine answers")
    assert docker.calls == [action]
    assert ctx.ops.current("plc-1") is None
