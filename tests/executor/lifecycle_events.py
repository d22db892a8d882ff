"""The executor's `lifecycle.*` messages as a test hears them on its PUB socket, and an
executor whose watchdog acts within a test's patience."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import zmq.asyncio

from common.bus import Endpoints, RpcClient, Subscriber
from common.messages import Message, parse
from testkit.executor import ExecutorProc, wait_ready
from testkit.helpers import heard

# The watchdog restarts after half a second (backed off to 1 s at most, not 60) and the
# boot sync waits 1 s for netmon (no netmon runs in these tests), not 60.
FAST_RESTARTS = {"ORCH_RESTART_DELAY": "0.5", "ORCH_RESTART_BACKOFF_MAX": "1",
                 "ORCH_BOOT_NETMON_WAIT": "1"}


class LifecycleEvents:
    def __init__(self, ctx: zmq.asyncio.Context, run_dir: Path) -> None:
        self.sub = Subscriber(ctx, [Endpoints(run_dir).pub("executor")], ["lifecycle."])
        self.seen: list[tuple[str, Message]] = []

    async def wait(self, topic: str, cond: Callable[[Any], bool] = lambda m: True,
                   timeout: float = 30.0) -> Any:
        """The first message on `topic` (heard from now on or already heard and not yet
        taken) that satisfies `cond`; it is taken, so the next wait finds the next one."""
        for i, (seen_topic, message) in enumerate(self.seen):
            if seen_topic == topic and cond(message):
                del self.seen[i]
                return message
        async for envelope in heard(self.sub, timeout):
            message = parse(envelope)
            if envelope.topic == topic and cond(message):
                return message
            self.seen.append((envelope.topic, message))
        raise AssertionError(f"no {topic} message matched within {timeout} s; heard: "
                             f"{self.seen[-10:]}")

    async def listen(self, seconds: float) -> None:
        """Hear everything for `seconds` (kept for `topics()`)."""
        async for envelope in heard(self.sub, seconds):
            self.seen.append((envelope.topic, parse(envelope)))

    def topics(self) -> list[str]:
        """Topics heard and not taken by a wait."""
        return [t for t, _ in self.seen]

    def close(self) -> None:
        self.sub.close()


@contextlib.asynccontextmanager
async def watched_executor(make_executor: Callable[..., ExecutorProc],
                           ctx: zmq.asyncio.Context, **env: str
                           ) -> AsyncIterator[tuple[ExecutorProc, RpcClient, LifecycleEvents]]:
    """An executor started with `env`, ready on the bus, and its lifecycle messages heard
    from then on; the client and the subscription are closed at the end."""
    executor = make_executor(**env).start()
    bus = executor.client(ctx)
    try:
        await wait_ready(bus)
        events = LifecycleEvents(ctx, executor.run_dir)
        try:
            yield executor, bus, events
        finally:
            events.close()
    finally:
        bus.close()
