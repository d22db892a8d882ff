"""The lifecycle pieces that need no engine: the desired-state files, the watchdog's
counting and backoff, the settings."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from common import labels
from common.config import Config, ConfigError
from common.messages import LifecycleCrashLoop, LifecycleRestartScheduled, Message
from services.executor.engine.liveview import ContainerView, parse_inspect
from services.executor.errors import DockerUnavailable
from services.executor.runtime.intents import BadDevice, Intent, IntentStore
from services.executor.runtime.registry import OperationRegistry
from services.executor.runtime.watchdog import Watchdog


@pytest.mark.parametrize("device", ["../x", "a/b", ".hidden", "", "x" * 251, "a\x00b",
                                    "..", "plc 1"])
def test_device_ids_cannot_leave_the_directory(tmp_path: Path, device: str) -> None:
    store = IntentStore(tmp_path)
    store.load()
    with pytest.raises(BadDevice):
        store.path(device)
    with pytest.raises(BadDevice):
        store.put(Intent(device))
    assert list((tmp_path / "lifecycle").iterdir()) == []


def test_records_round_trip_and_damage_is_ignored(tmp_path: Path) -> None:
    store = IntentStore(tmp_path)
    store.load()
    assert store.get("plc1").desired == "running" and not store.known("plc1")
    intent = Intent("plc1", "stopped", "stop_device")
    intent.add_exit(137, True, at=1000.0)
    store.write("plc1", store.put(intent))
    folder = tmp_path / "lifecycle"
    (folder / "plc2.json").write_text("{not json")
    (folder / "plc3.json").write_text(json.dumps({"device": "other", "desired": "stopped"}))
    (folder / "plc4.json").write_text(json.dumps({"device": "plc4", "desired": "paused"}))
    (folder / ".plc1.json.1234.tmp").write_text("torn")

    again = IntentStore(tmp_path)
    again.load()
    assert again.devices() == ["plc1"]
    loaded = again.get("plc1")
    assert (loaded.desired, loaded.reason, loaded.state) == ("stopped", "stop_device",
                                                              "stopped")
    assert loaded.public_exits(5) == [{"at": "1970-01-01T00:16:40Z", "exit_code": 137,
                                       "oom_killed": True}]
    assert not (folder / ".plc1.json.1234.tmp").exists()
    again.write("plc1", None)
    assert not (folder / "plc1.json").exists()


class FakeContext(SimpleNamespace):
    async def save_intent(self, intent: Intent) -> None:
        self.intents.write(intent.device, self.intents.put(intent))


def fake_context(tmp_path: Path, **settings: Any) -> FakeContext:
    store = IntentStore(tmp_path)
    store.load()
    published: list[Message] = []
    return FakeContext(config=Config(**settings), intents=store, publish=published.append,
                       published=published)


async def test_backoff_then_crash_loop(tmp_path: Path) -> None:
    ctx = fake_context(tmp_path, restart_delay=0.01, restart_backoff_max=0.03,
                       crash_loop_exits=4, crash_loop_window=60)
    dog = Watchdog(ctx)  # type: ignore[arg-type]
    results = [await dog.record_exit("plc1", code, False) for code in (1, 0, 137)]
    assert results == [True, True, True]
    assert await dog.record_exit("plc1", 137, True) is False
    scheduled = [m for m in ctx.published if isinstance(m, LifecycleRestartScheduled)]
    assert [m.delay for m in scheduled] == [0.01, 0.02, 0.03]  # doubling, capped
    assert [m.exits_in_window for m in scheduled] == [1, 2, 3]
    (loop,) = [m for m in ctx.published if isinstance(m, LifecycleCrashLoop)]
    assert [(e["exit_code"], e["oom_killed"]) for e in loop.exits] == \
        [(1, False), (0, False), (137, False), (137, True)]
    on_disk = json.loads((tmp_path / "lifecycle" / "plc1.json").read_text())
    assert on_disk["crash_loop"] is True and len(on_disk["exits"]) == 4


async def test_old_exits_leave_the_window(tmp_path: Path) -> None:
    ctx = fake_context(tmp_path, restart_delay=0, crash_loop_exits=2, crash_loop_window=60)
    dog = Watchdog(ctx)  # type: ignore[arg-type]
    assert await dog.record_exit("plc1", 1, False, at=1.0)  # long ago
    assert await dog.record_exit("plc1", 1, False)  # one exit in the window
    assert await dog.record_exit("plc1", 1, False) is False


async def test_an_exit_the_engine_took_with_it_is_taken_back(tmp_path: Path) -> None:
    """dockerd stops every runtime on its way out and its event stream still carries the
    exits: the restart then finds the engine gone, and the exit is not the runtime's."""
    ctx = fake_context(tmp_path, restart_delay=0, crash_loop_exits=3, crash_loop_window=60)

    async def refresh(device: str) -> None:
        raise DockerUnavailable("socket not found")
    ctx.ops = OperationRegistry()
    ctx.destroying = False
    ctx.view = SimpleNamespace(refresh=refresh, get=lambda device: None)
    dog = Watchdog(ctx)  # type: ignore[arg-type]
    assert await dog.record_exit("plc1", 1, False)  # a real crash before: kept
    view = ContainerView(id="c1", name="plc1", status="exited", running=False, pid=0,
                         started_at=None, exit_code=0, restart_count=0, health=None,
                         internal_ip=None)
    for _ in range(3):  # more than the guard allows, were they counted
        await dog._died(view)
    intent = ctx.intents.get("plc1")
    assert [e["exit_code"] for e in intent.exits] == [1] and not intent.crash_loop
    on_disk = json.loads((tmp_path / "lifecycle" / "plc1.json").read_text())
    assert [e["exit_code"] for e in on_disk["exits"]] == [1]
    assert ctx.ops.current("plc1") is None


async def test_a_runtime_running_again_is_not_claimed(tmp_path: Path) -> None:
    """The engine restarted the runtime itself before the watchdog's delay ran out: the
    watchdog leaves it, without taking the device from a command arriving meanwhile."""
    ctx = fake_context(tmp_path, restart_delay=0, crash_loop_exits=3, crash_loop_window=60)
    claimed: list[str] = []

    class Registry(OperationRegistry):
        def begin(self, device: str, kind: str) -> None:
            claimed.append(device)
            super().begin(device, kind)

    async def refresh(device: str) -> None:
        raise AssertionError("a running runtime needs no engine call")
    running = ContainerView(id="c1", name="plc1", status="running", running=True, pid=42,
                            started_at=None, exit_code=None, restart_count=1, health=None,
                            internal_ip=None)
    ctx.ops = Registry()
    ctx.destroying = False
    ctx.view = SimpleNamespace(refresh=refresh, get={"plc1": running}.get)
    dog = Watchdog(ctx)  # type: ignore[arg-type]
    assert await dog.restart("plc1") is None
    assert claimed == []


@pytest.mark.parametrize(("env", "message"), [
    ({"ORCH_CRASH_LOOP_EXITS": "0"}, "crash_loop_exits"),
    ({"ORCH_CRASH_LOOP_WINDOW": "0"}, "crash_loop_window"),
    ({"ORCH_RESTART_DELAY": "-1"}, "restart_delay"),
    ({"ORCH_RESTART_DELAY": "5", "ORCH_RESTART_BACKOFF_MAX": "1"}, "restart_backoff_max"),
    ({"ORCH_BOOT_CONCURRENCY": "0"}, "boot_concurrency"),
    ({"ORCH_BOOT_NETMON_WAIT": "soon"}, "ORCH_BOOT_NETMON_WAIT"),
])
def test_bad_lifecycle_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.load([], env)


def test_lifecycle_settings_from_the_environment() -> None:
    config, _ = Config.load([], {"ORCH_CRASH_LOOP_EXITS": "3", "ORCH_BOOT_CONCURRENCY": "2",
                                 "ORCH_RESTART_DELAY": "0.5"})
    assert (config.crash_loop_exits, config.boot_concurrency, config.restart_delay) == \
        (3, 2, 0.5)
    assert (Config().crash_loop_exits, Config().crash_loop_window) == (5, 600.0)


def test_view_carries_exit_details() -> None:
    attrs = {"Id": "c1", "Name": "/plc",
             "Config": {"Labels": labels.runtime("i1", "plc", ["eth0"], "op")},
             "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}},
             "State": {"Status": "exited", "Running": False, "ExitCode": 137,
                       "OOMKilled": True, "FinishedAt": "2025-01-01T00:00:01.5Z"}}
    view = parse_inspect(attrs, "i1")
    assert view is not None and view.oom_killed is True and view.exit_code == 137
    assert view.finished_at == pytest.approx(1735689601.5)
    assert view.restart_policy == "unless-stopped"
