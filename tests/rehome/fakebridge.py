"""A scripted netbridge on the bus: answers `interfaces` from a table the test sets and
publishes `net.change` / `net.discovery` on the netbridge's PUB endpoint, so the executor's
re-homing can be driven event by event without netmon."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import zmq.asyncio

from common import wire
from common.bus import Counters, Endpoints, Publisher, RpcServer
from common.messages import NetChange, NetDiscovery


class FakeBridge:
    def __init__(self, ctx: zmq.asyncio.Context, run_dir: Path) -> None:
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        endpoints = Endpoints(run_dir)
        stamper = wire.Stamper("netbridge")
        self.publisher = Publisher(ctx, endpoints.pub("netbridge"), stamper, Counters())
        self.server = RpcServer(ctx, endpoints.rpc("netbridge"), stamper, None, Counters())
        self.server.register("interfaces", self.interfaces)
        self.table: dict[str, dict[str, Any]] = {}
        self.snapshots = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> FakeBridge:
        self._task = asyncio.create_task(self.server.serve(self._stop))
        return self

    async def interfaces(self, params: dict[str, Any]) -> dict[str, Any]:
        self.snapshots += 1
        items = [copy.deepcopy(i) for _, i in sorted(self.table.items()) if i.get("active", True)]
        return {"interfaces": items, "stale": False, "connected": True}

    def change(self, iface: dict[str, Any]) -> None:
        """The parent's new state: kept for snapshots and published as `net.change`."""
        self.table[iface["interface"]] = copy.deepcopy(iface)
        self.publisher.publish(NetChange(copy.deepcopy(iface)))

    def discovery(self) -> None:
        items = [copy.deepcopy(i) for _, i in sorted(self.table.items()) if i.get("active", True)]
        self.publisher.publish(NetDiscovery(items, "2026-01-01T00:00:00+00:00"))

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        self.server.close()
        self.publisher.close()
