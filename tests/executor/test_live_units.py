"""The work after a runtime's start is done once per start (`runtime/live.py`): the
operation that started it and the live view's hook share it, and both return only when
it is done."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from services.executor.runtime import live


class Views:
    def __init__(self) -> None:
        self.views: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        return self.views.get(name)


def fake_ctx() -> Any:
    views = Views()
    views.views["plc1"] = SimpleNamespace(running=True, pid=100)
    return SimpleNamespace(view=views, start_work={}, applied_macs={})


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Each run of the start work recorded in `runs` as (device, pid); each takes a
    moment, so concurrent callers overlap; a device put in `failing` fails once."""
    work = SimpleNamespace(runs=[], failing=set())

    async def start_work(ctx: Any, device: str) -> None:
        await asyncio.sleep(0.02)
        if device in work.failing:
            work.failing.discard(device)
            raise OSError("engine hiccup")
        work.runs.append((device, ctx.view.get(device).pid))

    monkeypatch.setattr(live, "_start_work", start_work)
    return work


async def test_once_per_start_and_every_caller_waits(work: SimpleNamespace) -> None:
    ctx = fake_ctx()
    finished: list[str] = []

    async def caller(name: str) -> None:
        await live.after_start(ctx, "plc1")
        finished.append(name)

    await asyncio.gather(caller("hook"), caller("restart_device"))
    assert work.runs == [("plc1", 100)]
    assert sorted(finished) == ["hook", "restart_device"]
    await live.after_start(ctx, "plc1")  # a late hook for the same start: nothing again
    assert work.runs == [("plc1", 100)]

    ctx.view.views["plc1"] = SimpleNamespace(running=True, pid=200)  # started again
    await live.after_start(ctx, "plc1")
    assert work.runs == [("plc1", 100), ("plc1", 200)]


async def test_a_failed_run_is_tried_again(work: SimpleNamespace) -> None:
    ctx = fake_ctx()
    work.failing.add("plc1")
    with pytest.raises(OSError):
        await live.after_start(ctx, "plc1")
    assert work.runs == []
    await live.after_start(ctx, "plc1")
    assert work.runs == [("plc1", 100)]


async def test_nothing_for_a_stopped_or_unknown_runtime(work: SimpleNamespace) -> None:
    ctx = fake_ctx()
    ctx.view.views["plc1"] = SimpleNamespace(running=False, pid=0)
    await live.after_start(ctx, "plc1")
    await live.after_start(ctx, "ghost")
    assert work.runs == [] and ctx.start_work == {}


async def test_forget_drops_what_was_recorded(work: SimpleNamespace) -> None:
    ctx = fake_ctx()
    await live.after_start(ctx, "plc1")
    ctx.applied_macs["plc1"] = (100, {})
    live.forget(ctx, "plc1")
    assert ctx.start_work == {} and ctx.applied_macs == {}
    await live.after_start(ctx, "plc1")  # the same pid after a forget: done again
    assert work.runs == [("plc1", 100), ("plc1", 100)]
