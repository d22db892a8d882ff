"""The replay cache on its real file: what is deduplicated, by which key, and what a
restarted gateway (a new cache on the same directory) still knows."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from services.gateway.replay import LOG_NAME, Key, ReplayCache, replay_key, shrink
from services.gateway.replaylog import decode, encode


class Clock:
    def __init__(self) -> None:
        self.now = 1_760_000_000.0

    def __call__(self) -> float:
        return self.now


class Producer:
    def __init__(self, ack: dict[str, Any] | None = None, keep: bool = True) -> None:
        self.runs = 0
        self.ack = ack or {"action": "stop_device", "correlation_id": 1, "status": "success"}
        self.keep = keep
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> tuple[dict[str, Any], bool]:
        self.runs += 1
        if self.gate is not None:
            await self.gate.wait()
        return {**self.ack, "run": self.runs}, self.keep


def key(topic: str = "stop_device", cid: Any = 1, **payload: Any) -> Key:
    body = {"device_id": "plc-1", "correlation_id": cid, **payload}
    made = replay_key(topic, body, cid, body)
    assert made is not None
    return made


@pytest.mark.parametrize(("topic", "params", "deduplicated"), [
    ("create_new_runtime", {"container_name": "p"}, True),
    ("delete_device", {"device_id": "p"}, True),
    ("start_device", {"device_id": "p"}, True),
    ("stop_device", {"device_id": "p"}, True),
    ("restart_device", {"device_id": "p"}, True),
    ("delete_orchestrator", {}, True),
    ("run_command", {"device_id": "p", "method": "POST"}, True),
    ("run_command", {"device_id": "p", "method": "DELETE"}, True),
    ("run_command", {"device_id": "p", "method": "GET"}, False),
    ("get_device_status", {"device_id": "p"}, False),
    ("get_consumption_device", {"device_id": "p"}, False),
    ("get_consumption_orchestrator", {}, False),
    ("get_host_interfaces", {}, False),
    ("get_serial_devices", {}, False),
])
def test_only_commands_that_change_state_are_deduplicated(
        topic: str, params: dict[str, Any], deduplicated: bool) -> None:
    payload = {**params, "correlation_id": 5}
    assert (replay_key(topic, payload, 5, params) is not None) is deduplicated
    assert replay_key(topic, payload, None, params) is None  # no id, no deduplication


def test_key_digest_covers_the_whole_canonical_payload() -> None:
    a = replay_key("stop_device", {"device_id": "p", "correlation_id": 1,
                                   "requested_at": "2025-01-01T00:00:00Z"}, 1, {})
    b = replay_key("stop_device", {"requested_at": "2025-01-01T00:00:00Z",
                                   "correlation_id": 1, "device_id": "p"}, 1, {})
    c = replay_key("stop_device", {"device_id": "p", "correlation_id": 1,
                                   "requested_at": "2025-01-01T00:00:01Z"}, 1, {})
    assert a is not None and b is not None and c is not None
    assert a == b  # key order does not matter
    assert a.digest != c.digest  # a new requested_at is a new command


async def test_runs_once_and_shares_the_in_flight_result(tmp_path: Path) -> None:
    cache = ReplayCache(tmp_path, clock=Clock())
    produce = Producer()
    produce.gate = asyncio.Event()
    first = asyncio.create_task(cache.run(key(), produce))
    second = asyncio.create_task(cache.run(key(), produce))
    await asyncio.sleep(0.01)
    produce.gate.set()
    (ack1, replayed1), (ack2, replayed2) = await asyncio.gather(first, second)
    assert ack1 == ack2 and ack1["run"] == 1
    assert (replayed1, replayed2) == (False, True) and ack1 is not ack2
    assert (await cache.run(key(), produce)) == (ack1, True)
    assert produce.runs == 1
    await cache.run(key("delete_device"), produce)  # another topic, same id
    await cache.run(None, produce)
    await cache.run(None, produce)
    assert produce.runs == 4


async def test_same_id_with_another_payload_is_a_new_command_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = ReplayCache(tmp_path, clock=Clock())
    produce = Producer()
    await cache.run(key(), produce)
    with caplog.at_level(logging.WARNING):
        other = key(device_id="plc-2")
        assert (await cache.run(other, produce))[1] is False
        assert (await cache.run(other, produce))[1] is True
    assert produce.runs == 2
    warnings = [r for r in caplog.records if "reused with another payload" in r.message]
    assert len(warnings) == 1


async def test_a_restarted_cache_replays_finished_commands_and_never_reruns_started_ones(
        tmp_path: Path) -> None:
    clock = Clock()
    cache = ReplayCache(tmp_path, clock=clock)
    produce = Producer()
    ack, _ = await cache.run(key(cid=1), produce)
    # cid 2 is "killed" while it runs: started is on file, the ack never is.
    hung = Producer()
    hung.gate = asyncio.Event()
    task = asyncio.create_task(cache.run(key(cid=2), hung))
    await asyncio.sleep(0.01)
    assert hung.runs == 1
    task.cancel()  # a stopping gateway: the command may be running, so it stays started
    await asyncio.gather(task, return_exceptions=True)
    log_path = tmp_path / LOG_NAME
    lines = log_path.read_bytes().splitlines(keepends=True)
    states = [decode(line)["s"] for line in lines]  # type: ignore[index]
    assert states == ["started", "done", "started"]
    # ... and a torn half record at the end, as a kill in the middle of write() leaves.
    log_path.write_bytes(b"".join(lines) + encode({"k": "x", "s": "started"})[:20])
    cache.close()

    again = ReplayCache(tmp_path, clock=clock)
    assert len(again) == 2
    fresh = Producer()
    assert (await again.run(key(cid=1), fresh)) == (ack, True)
    doubt, replayed = await again.run(key(cid=2), fresh)
    assert replayed and fresh.runs == 0
    assert doubt["status"] == "error" and doubt["reason"] == "in_doubt"
    assert doubt["correlation_id"] == 2 and doubt["poll_device_id"] == "plc-1"
    assert "Poll get_device_status" in doubt["error"]
    # Past the window everything runs again.
    clock.now += 601
    assert (await again.run(key(cid=1), fresh))[1] is False
    assert fresh.runs == 1


async def test_outcomes_that_prove_nothing_ran_are_forgotten_also_on_file(
        tmp_path: Path) -> None:
    cache = ReplayCache(tmp_path, clock=Clock())
    not_run = Producer(keep=False)
    await cache.run(key(), not_run)
    await cache.run(key(), not_run)
    assert not_run.runs == 2 and len(cache) == 0

    async def boom() -> tuple[dict[str, Any], bool]:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        await cache.run(key(cid=9), boom)
    assert len(cache) == 0
    cache.close()
    assert len(ReplayCache(tmp_path, clock=Clock())) == 0


async def test_memory_and_file_stay_bounded_under_a_long_stream(tmp_path: Path) -> None:
    clock = Clock()
    cache = ReplayCache(tmp_path, clock=clock, max_bytes=64 * 1024, max_ack_bytes=512)
    big = Producer({"action": "run_command", "correlation_id": 1, "status": "success",
                    "http_response": {"status_code": 200, "body": "x" * 50_000, "ok": True,
                                      "content_type": "text/plain"}})
    for cid in range(5000):
        clock.now += 0.01
        await cache.run(key("run_command", cid, method="POST"), big)
        assert cache.live_bytes <= 32 * 1024
        assert (tmp_path / LOG_NAME).stat().st_size <= 64 * 1024 + 1024
    assert big.runs == 5000
    latest, replayed = await cache.run(key("run_command", 4999, method="POST"), big)
    assert replayed and latest["replay_truncated"] is True
    assert latest["http_response"] == {"status_code": 200, "ok": True,
                                       "content_type": "text/plain"}
    cache.close()
    reloaded = ReplayCache(tmp_path, clock=clock, max_bytes=64 * 1024, max_ack_bytes=512)
    assert 0 < len(reloaded) == len(cache)


def test_shrink_keeps_small_acks_whole() -> None:
    ack = {"action": "stop_device", "correlation_id": 1, "status": "success"}
    assert shrink(ack, 1024) is ack
    assert len(json.dumps(shrink({**ack, "blob": ["x" * 5000]}, 1024))) < 1024


def test_an_unwritable_state_directory_still_deduplicates_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    async def scenario() -> None:
        cache = ReplayCache(blocker / "gateway", clock=Clock())
        produce = Producer()
        await cache.run(key(), produce)
        assert (await cache.run(key(), produce))[1] is True
        assert produce.runs == 1

    asyncio.run(scenario())
