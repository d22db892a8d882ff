"""The executor's `lifecycle.*` messages as a test hears them on its PUB socket."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq.asyncio

from common.bus import Endpoints, Subscriber
from common.messages import Message, parse
from testkit.helpers import heard


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
