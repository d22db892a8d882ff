"""The dedicated-NIC keeper's decisions over a made-up world (where each NIC is, which
namespaces are pinned), in addition to the real moves of tests/executor/test_dedicated.py:
every starting point a crash can leave is a world here, and the keeper must end where the
runtime's state says."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from services.executor.runtime import dedicatednet as net
from services.executor.runtime.dedicated import DedicatedStore
from services.executor.runtime.dedicatedkeeper import DedicatedKeeper

HOST = "/proc/host/ns/net"


class World:
    """NIC locations ("host" or a namespace inode), pins (ref → inode), processes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.where: dict[str, Any] = {"enp3s0": "host"}
        self.pins: dict[str, int] = {}
        self.procs: dict[int, int] = {}  # pid → namespace inode
        self.up = {"enp3s0": True}
        self.log: list[str] = []
        for name in ("pinned_ino", "ns_ino", "in_netns", "host_facts", "pin", "unpin",
                     "move_in", "configure", "move_out", "restore_host"):
            monkeypatch.setattr(net, name, getattr(self, name))

    def pinned_ino(self, ref: str) -> int | None:
        return self.pins.get(ref)

    def ns_ino(self, pid: int) -> int | None:
        return self.procs.get(pid)

    def in_netns(self, netns: str, name: str) -> bool:
        if netns == HOST:
            return self.where.get(name) == "host"
        if netns.startswith("/proc/"):
            return self.where.get(name) == self.procs.get(int(netns.split("/")[2]))
        return netns in self.pins and self.where.get(name) == self.pins[netns]

    def host_facts(self, host: str, name: str) -> net.HostFacts:
        return net.HostFacts(self.up[name], "02:00:00:00:00:01", [])

    def pin(self, pid: int, ref: str) -> int:
        self.pins[ref] = self.procs[pid]
        self.log.append(f"pin {self.procs[pid]}")
        return self.pins[ref]

    def unpin(self, ref: str) -> None:
        if self.pins.pop(ref, None) is not None:
            self.log.append("unpin")

    def move_in(self, host: str, name: str, ref: str) -> None:
        self.where[name] = self.pins[ref]
        self.up[name] = False
        self.log.append(f"in {self.pins[ref]}")

    def configure(self, ref: str, name: str, want: net.Addressing) -> list[str]:
        self.log.append(f"configure {want.ip}")
        return []

    def move_out(self, host: str, ref: str, name: str) -> None:
        self.where[name] = "host"
        self.log.append("out")

    def restore_host(self, host: str, name: str, facts: dict[str, Any]) -> None:
        self.up[name] = bool(facts.get("was_up"))


def keeper(tmp_path: Path, running: dict[str, int]) -> DedicatedKeeper:
    store = DedicatedStore(tmp_path)
    store.load()
    view = SimpleNamespace(get=lambda d: SimpleNamespace(pid=running[d], running=True)
                           if d in running else None)
    return DedicatedKeeper(store, view, tmp_path / "run", HOST)  # type: ignore[arg-type]


ITEM = {"vnic": "fb", "interface": "enp3s0", "network_mode": "manual",
        "ip_address": "192.0.2.5", "prefixlen": 24, "gateway": None, "host": None,
        "released": False}


async def test_in_restart_stop_and_release(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(monkeypatch)
    running = {"plc": 100}
    world.procs[100] = 7
    k = keeper(tmp_path, running)
    await k.claim("plc", [dict(ITEM)])
    assert await k.sync_device("plc")
    assert world.where["enp3s0"] == 7 and world.log == ["pin 7", "in 7", "configure 192.0.2.5"]
    assert k.store.get("plc")[0]["host"]["was_up"] is True  # saved before the move
    assert await k.sync_device("plc") and world.log[-1] == "configure 192.0.2.5"  # no move

    world.procs[200] = 8  # restarted: a new namespace
    running["plc"] = 200
    world.log.clear()
    assert await k.sync_device("plc")
    assert world.where["enp3s0"] == 8
    assert world.log == ["out", "unpin", "pin 8", "in 8", "configure 192.0.2.5"]

    del running["plc"]  # stopped or removed
    assert await k.sync_device("plc")
    assert world.where["enp3s0"] == "host" and world.up["enp3s0"] and not world.pins
    assert k.states["enp3s0"] == ("on_host", None)
    assert k.store.get("plc"), "still on record until released"
    assert await k.release("plc")
    assert k.store.devices() == [] and "enp3s0" not in k.states


async def test_a_restarted_executor_takes_up_where_the_world_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(monkeypatch)
    world.procs[100] = 7
    first = keeper(tmp_path, {"plc": 100})
    await first.claim("plc", [dict(ITEM)])
    assert await first.sync_device("plc")
    world.log.clear()

    # The executor died; the runtime still runs: nothing moves, the NIC is re-applied.
    again = keeper(tmp_path, {"plc": 100})
    assert await again.sync_device("plc")
    assert world.log == ["configure 192.0.2.5"] and world.where["enp3s0"] == 7

    # The pin was lost (a new mount namespace) but the runtime runs: pinned again.
    world.pins.clear()
    again = keeper(tmp_path, {"plc": 100})
    assert await again.sync_device("plc")
    assert world.pins and world.where["enp3s0"] == 7

    # Died again, and the container was removed meanwhile: the pin still holds the NIC.
    del world.procs[100]
    again = keeper(tmp_path, {})
    assert await again.release("plc")
    assert world.where["enp3s0"] == "host" and world.up["enp3s0"] and not world.pins
    assert again.store.devices() == []


async def test_a_nic_nowhere_is_missing_and_a_stale_pin_is_released(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(monkeypatch)
    world.procs[100] = 7
    k = keeper(tmp_path, {"plc": 100})
    await k.claim("plc", [dict(ITEM)])
    world.where["enp3s0"] = "gone"
    world.pins[k.ref("enp3s0")] = 5
    assert not await k.sync_device("plc")
    assert k.states["enp3s0"] == ("missing", None) and not world.pins

    def refuse(*_: Any) -> None:
        raise net.DedicatedError("cannot move enp3s0 into the runtime: File exists")

    world.where["enp3s0"] = "host"
    monkeypatch.setattr(net, "move_in", refuse)
    assert not await k.sync_device("plc")
    state, error = k.states["enp3s0"]
    assert state == "error" and "File exists" in str(error)
    assert world.where["enp3s0"] == "host" and not world.pins  # the pin was undone


async def test_the_keeper_sleeps_with_nothing_on_record_and_a_claim_wakes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(monkeypatch)
    world.procs[100] = 7
    k = keeper(tmp_path, {"plc": 100})
    k.interval = 0.01
    passes: list[str] = []
    real, listed = k._sync_device, k.store.devices
    looks = []

    async def counted(device: str) -> bool:
        passes.append(device)
        return await real(device)

    def devices() -> list[str]:
        looks.append(1)
        return listed()

    monkeypatch.setattr(k, "_sync_device", counted)
    monkeypatch.setattr(k.store, "devices", devices)
    runner = asyncio.create_task(k.run())
    try:
        # Twenty intervals with an empty record: one pass, then it waits for a claim.
        await asyncio.sleep(0.2)
        assert len(looks) <= 2 and passes == [] and world.where["enp3s0"] == "host"
        await k.claim("plc", [dict(ITEM)])
        for _ in range(100):
            if world.where["enp3s0"] == 7:
                break
            await asyncio.sleep(0.01)
        assert world.where["enp3s0"] == 7  # the claim woke it, no sync_device call needed
        await asyncio.sleep(0.1)
        assert len(passes) >= 3  # with a NIC on record it polls again
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
