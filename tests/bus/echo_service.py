"""A small service for the bus tests, run as a real process through the service runner."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from common.bus import RemoteError
from common.service import Runtime, run_service


class EchoService:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.sleeping = 0  # `slow` calls under way: tests wait for one to be in flight
        runtime.rpc.register("echo", self.echo)
        runtime.rpc.register("sleeping", self.sleeping_calls)
        runtime.rpc.register("slow", self.slow)
        runtime.rpc.register("refuse", self.refuse)
        runtime.rpc.register("crash", self.crash)

    async def echo(self, params: dict[str, Any]) -> Any:
        return params

    async def slow(self, params: dict[str, Any]) -> Any:
        self.sleeping += 1
        try:
            await asyncio.sleep(float(params.get("seconds", 1)))
        finally:
            self.sleeping -= 1
        return "slept"

    async def sleeping_calls(self, params: dict[str, Any]) -> int:
        return self.sleeping

    async def refuse(self, params: dict[str, Any]) -> Any:
        raise RemoteError("refused", "not today")

    async def crash(self, params: dict[str, Any]) -> Any:
        raise ZeroDivisionError("boom")

    async def run(self) -> None:
        await self.rt.stop.wait()

    def close(self) -> None:
        pass


if __name__ == "__main__":
    sys.exit(run_service("echo", EchoService))
