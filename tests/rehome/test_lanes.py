"""A move changes one network's endpoints one at a time (Docker 20.10 loses count of a
network's endpoints when changes on it overlap: docs/performance.md, "Re-homing of 20,
fourth round").  The move's own steps run against an engine stand-in that counts the
calls in flight per network, through the executor's own `Networks`; the real engine's
moves are in test_rehome_engine.py."""

from __future__ import annotations

import asyncio
import types
from collections import Counter
from typing import Any

from services.executor.net import networks
from services.executor.net.networks import NetworkLocks, Networks
from services.executor.rehome import move
from services.executor.rehome.model import Member, Target


class CountingEngine:
    def __init__(self) -> None:
        self.in_flight: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.calls: list[tuple[str, str, str]] = []

    async def call(self, fn: Any, container: str, network: str, *rest: Any) -> bool:
        self.in_flight[network] += 1
        self.most[network] = max(self.most[network], self.in_flight[network])
        await asyncio.sleep(0.005)
        self.in_flight[network] -= 1
        self.calls.append((fn.__name__, container, network))
        return True

    def supports(self, version: str) -> bool:
        return True  # the engine sets each endpoint's MAC: no fix-up after a connect


class Views:
    def get(self, device: str) -> Any:
        return types.SimpleNamespace(id=f"id-{device}", running=True, pid=0)


def context() -> Any:
    engine: Any = CountingEngine()
    return types.SimpleNamespace(docker=engine, view=Views(), dhcp=None, networks=Networks(
        engine, "oat-lanes", "198.51.100.0/24", 28, None))


def members(count: int, network: str) -> list[Member]:
    return [Member(device=f"plc{i}", index=0, vnics=[{
        "name": "eth1", "network": network, "mac_address": f"02:42:c6:33:64:{i:02x}"}],
        old={"network": "old"}) for i in range(count)]


async def test_disconnects_from_one_network_never_overlap() -> None:
    ctx = context()
    group = members(6, "old")
    await asyncio.gather(*(move.leave(ctx, m, ["old", "older"]) for m in group))
    assert ctx.docker.most == {"old": 1, "older": 1}
    assert sorted(c for _, c, _ in ctx.docker.calls) == sorted(
        m.device for m in group for _ in range(2))
    assert {fn for fn, _, _ in ctx.docker.calls} == {networks.disconnect.__name__}


async def test_connects_to_one_network_never_overlap() -> None:
    ctx = context()
    target = Target(parent="oat0", subnet="198.51.100.64/26")
    group = members(6, target.network)
    await asyncio.gather(*(move.attach(ctx, m, target) for m in group))
    assert ctx.docker.most == {target.network: 1}
    assert [m.outcome for m in group] == ["rehomed"] * 6
    assert all(m.connected for m in group)


async def test_lanes_of_different_networks_run_side_by_side() -> None:
    locks = NetworkLocks()
    inside: Counter[str] = Counter()
    seen: list[dict[str, int]] = []

    async def change(name: str) -> None:
        async with locks.lane(name):
            inside[name] += 1
            await asyncio.sleep(0.01)
            seen.append(dict(inside))
            inside[name] -= 1

    await asyncio.gather(change("a"), change("b"), change("a"))
    assert len(seen) == 3
    assert max(s.get("a", 0) for s in seen) == 1
    assert any(s.get("a") == 1 and s.get("b") == 1 for s in seen)  # a and b overlapped
