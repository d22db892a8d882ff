"""The gateway service object: the cloud link, the router and the heartbeat, wired.

Concurrency: asyncio with `zmq.asyncio`, three long-lived tasks — the cloud link loop,
the bus watch (liveness beats and host samples), and per connection the heartbeat —
plus one task per cloud command (python-socketio's).  Nothing here blocks the loop: bus
calls are asynchronous with deadlines, the only blocking work (a fallback host sample)
runs in a thread.

Request methods on the gateway's own socket (besides `ping`):

* `link_status` `{}` → `{connected, agent_id, attempts, connections, connected_since,
  last_error, transport, url, heartbeats_sent, replay_entries, down}`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from common.service import Peers, Runtime
from services.gateway.contracts import TOPICS
from services.gateway.heartbeat import Heartbeat
from services.gateway.link import CloudLink, Emit
from services.gateway.peers import OTHERS, PeerWatch
from services.gateway.replay import ReplayCache
from services.gateway.router import Router

log = logging.getLogger(__name__)

STALE_SAMPLES = 3  # metrics samples missed before the heartbeat falls back

# Calls every other process; hears their beats and the host samples.
PEERS = Peers(calls=OTHERS, hears=OTHERS, topics=("svc.", "metrics.host"))


class GatewayService:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        config = runtime.config
        self.watch = PeerWatch(config.beat_interval)
        self.sub = runtime.subscriber
        self.clients = runtime.clients
        self.replay = ReplayCache(config.state_dir / "gateway", config.replay_window)
        self.router = Router(self.clients, self.watch, config.rpc_timeout, self.replay,
                             runtime.counters)
        self.heartbeat = Heartbeat(config.heartbeat_interval, self.watch,
                                   STALE_SAMPLES * max(config.metrics_interval,
                                                       config.heartbeat_interval),
                                   self._ask_metrics)
        self.link = CloudLink(config.cloud_url, config.mtls_dir, config.ca_file,
                              config.reconnect_max, TOPICS, self.router.handle,
                              self._session)
        runtime.rpc.register("link_status", self.link_status)
        log.info("cloud %s, mTLS directory %s, extra CA %s", config.cloud_url, config.mtls_dir,
                 config.ca_file or "none")

    async def _ask_metrics(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.clients["metrics"].call("host_sample", {})
        return result

    async def _session(self, emit: Emit, agent_id: str, ended: asyncio.Event) -> None:
        await self.heartbeat.run(emit, agent_id, ended)

    async def link_status(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**self.link.status.as_dict(), "url": self.link.url,
                "heartbeats_sent": self.heartbeat.sent, "replay_entries": len(self.replay),
                "down": self.watch.down()}

    async def run(self) -> None:
        stop = self.rt.stop
        watch = asyncio.create_task(self.watch.watch(self.sub, stop), name="bus-watch")
        link = asyncio.create_task(self.link.run(stop), name="cloud-link")
        primed = asyncio.create_task(self.heartbeat.prime(stop), name="heartbeat-prime")
        stopped = asyncio.create_task(stop.wait(), name="gateway-stop")
        tasks = [watch, link, stopped]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a loop that died is a failure of the process
            # Stopping: the bus watch has nothing to finish (it waits for beats without a
            # short timeout, so it is ended here); the link says goodbye on its own.
            watch.cancel()
            await link
        finally:
            everything: list[asyncio.Task[Any]] = [*tasks, primed]  # primed: done early
            for task in everything:
                task.cancel()
            await asyncio.gather(*everything, return_exceptions=True)

    def close(self) -> None:
        self.replay.close()  # the runner closes the bus sockets
