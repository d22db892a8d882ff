"""Shared steps of the re-homing tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import docker
import zmq.asyncio

from common.bus import Endpoints, RpcClient, Subscriber
from common.messages import Alive, parse
from testkit.executor import wait_status
from testkit.helpers import heard
from testkit.movinglan import MovingLan, host


def manual(lan: MovingLan, subnet: str, n: int) -> dict[str, Any]:
    return {"name": "eth0", "parent_interface": lan.parent, "network_mode": "manual",
            "ip_address": host(subnet, n), "subnet": subnet, "gateway": lan.gateway(subnet)}


def dhcp(lan: MovingLan) -> dict[str, Any]:
    return {"name": "eth0", "parent_interface": lan.parent, "network_mode": "dhcp"}


async def on_network(bus: RpcClient, name: str, network: str | None,
                     timeout: float = 30) -> dict[str, Any]:
    """Wait until the runtime's only LAN network is `network` (None: no LAN network) and
    its endpoint has an address."""
    def ok(body: dict[str, Any]) -> bool:
        nets = body.get("networks") or {}
        if network is None:
            return body.get("status") == "success" and not nets
        return set(nets) == {network} and bool(nets[network].get("ip_address")) \
            and "rehoming" not in body
    return await wait_status(bus, name, ok, timeout)


def lan_view(body: dict[str, Any]) -> tuple[str, str, str]:
    """(network, IP, MAC) of a runtime's single LAN network."""
    ((network, ep),) = body["networks"].items()
    return network, ep["ip_address"], ep["mac_address"]


def started_at(dc: docker.DockerClient, name: str) -> str:
    return str(dc.api.inspect_container(name)["State"]["StartedAt"])


def endpoints_of(dc: docker.DockerClient, name: str) -> dict[str, str]:
    """Network → endpoint id: a re-connection makes a new endpoint."""
    nets = dc.api.inspect_container(name)["NetworkSettings"]["Networks"]
    return {net: str(ep.get("EndpointID")) for net, ep in nets.items()}


def stored_vnics(state_dir: Path, name: str) -> list[dict[str, Any]]:
    data = json.loads((state_dir / "runtime_vnics.json").read_text())
    return list(data[name])


def network_ids(dc: docker.DockerClient, instance: str | None = None) -> dict[str, str]:
    """Name → id of the engine's networks (only those of an executor `instance`)."""
    filters = {"label": [f"orchestrator.instance={instance}"]} if instance else None
    return {n["Name"]: n["Id"] for n in dc.api.networks(filters=filters)}


class Beats:
    """The executor's liveness beats: its counters, to know what it has processed."""

    def __init__(self, ctx: zmq.asyncio.Context, run_dir: Path) -> None:
        self.sub = Subscriber(ctx, [Endpoints(run_dir).pub("executor")], ["svc.executor.alive"])
        self.last: dict[str, int] = {}

    async def wait(self, cond: Any, timeout: float = 20) -> dict[str, int]:
        async for envelope in heard(self.sub, timeout):
            message = parse(envelope)
            if isinstance(message, Alive):
                self.last = dict(message.counters)
                if cond(self.last):
                    return self.last
        raise AssertionError(f"executor counters never matched; last: {self.last}")

    async def current(self, timeout: float = 20) -> dict[str, int]:
        """The counters of a beat published from now on (queued older beats dropped)."""
        while await self.sub.recv(0.0) is not None:
            pass
        return await self.wait(lambda c: True, timeout)

    async def settled_after(self, events_before: int, timeout: float = 20) -> dict[str, int]:
        """Wait until a pass that started after the next event has finished."""
        return await self.wait(lambda c: c.get("net_events_settled", 0) > events_before,
                               timeout)

    def close(self) -> None:
        self.sub.close()


PROGRAMS = {"gateway": "services.gateway.main", "executor": "services.executor.main",
            "metrics": "services.metrics.main", "netbridge": "services.netbridge.main",
            "fatalwatch": "services.fatalwatch.main"}


def program_dir(base: Path) -> Path:
    """`orchestrator-<name>` launchers for supervisord, so the suite runs from this tree
    whether or not the package's entry points are installed."""
    bindir = base / "bin"
    bindir.mkdir(exist_ok=True)
    for name, module in PROGRAMS.items():
        path = bindir / f"orchestrator-{name}"
        path.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import main\n"
                        "sys.exit(main())\n")
        path.chmod(0o755)
    return bindir
