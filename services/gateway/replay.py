"""Exactly-once for cloud commands that change state, across gateway restarts.

What is deduplicated: `create_new_runtime`, `delete_device`, `start_device`,
`stop_device`, `restart_device`, `delete_orchestrator`, and `run_command` with a method
other than GET.  Reads (`get_*`, `run_command` GET) are always answered fresh, so a cloud
polling `get_device_status` with one fixed `correlation_id` sees the state change.

The key is (topic, correlation_id, digest of the payload).  The digest is SHA-256 of the
canonical JSON of the **whole** payload as received (keys sorted, no whitespace),
`correlation_id`, `action` and `requested_at` included: a cloud that retries resends the
very same payload, so a payload that differs in any byte — a new `requested_at` too — is
a new command.  The same id with another payload runs (a cloud that restarted and counts
its ids from 1 again), with a warning.  No usable correlation id → no deduplication.

Order of events for a deduplicated command:

1. a repeat of a command still running here waits for the first one's ack;
2. a repeat of a finished one gets the first ack again (a copy);
3. a new one is recorded as *started* in the log under the state directory **before** it
   is sent, then run, then its ack is recorded;
4. a repeat of a command recorded as started by a previous life of the gateway, with no
   ack (the gateway was killed while it ran), is **not** run again: it is answered with
   `status: "error"`, `reason: "in_doubt"`, a text saying so, and `poll_device_id` naming
   the device whose `get_device_status` tells the outcome.

Outcomes that prove the command never ran (`keep=False` from the producer) are
forgotten, so a retry gets a real chance.  Entries live `window` seconds (wall clock,
since they outlive the process).  Memory and file are bounded: acks are shrunk to
`max_ack_bytes` before they are kept, entries to `max_entries`, and their bytes to half
of `max_bytes` (the oldest go first).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.gateway.replaylog import Record, ReplayLog, encode

log = logging.getLogger(__name__)

Ack = dict[str, Any]
Producer = Callable[[], Awaitable[tuple[Ack, bool]]]

DEFAULT_WINDOW = 600.0
DEFAULT_MAX_ENTRIES = 2048
DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_ACK_BYTES = 2048
LOG_NAME = "replay.log"

MUTATING = frozenset({"create_new_runtime", "delete_device", "start_device", "stop_device",
                      "restart_device", "delete_orchestrator"})
ORCHESTRATOR = "__orchestrator__"


@dataclass(frozen=True)
class Key:
    topic: str
    correlation_id: int | float
    digest: str
    device: str | None  # whose get_device_status tells the outcome

    @property
    def id(self) -> str:
        return f"{self.topic}|{json.dumps(self.correlation_id)}|{self.digest}"

    @property
    def command_id(self) -> tuple[str, int | float]:
        return self.topic, self.correlation_id


def replay_key(topic: str, payload: Any, correlation_id: Any,
               params: Mapping[str, Any]) -> Key | None:
    """The key of a validated command, or None when it is not deduplicated."""
    if topic == "run_command":
        if str(params.get("method", "")).upper() == "GET":
            return None
    elif topic not in MUTATING:
        return None
    if correlation_id is None or not isinstance(payload, dict):
        return None
    try:
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return None
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    device = params.get("device_id") or params.get("container_name")
    if topic == "delete_orchestrator":
        device = ORCHESTRATOR
    return Key(topic, correlation_id, digest, device if isinstance(device, str) else None)


def shrink(ack: Ack, limit: int) -> Ack:
    """`ack` when its JSON fits in `limit` bytes; else its scalars (texts cut short) and
    the status line of an `http_response`, marked `replay_truncated`."""
    if len(json.dumps(ack, default=str)) <= limit:
        return ack
    small: Ack = {}
    for key, value in ack.items():
        if isinstance(value, str):
            small[key] = value[:256]
        elif value is None or isinstance(value, (bool, int, float)):
            small[key] = value
    response = ack.get("http_response")
    if isinstance(response, dict):
        small["http_response"] = {k: response.get(k) for k in ("status_code", "ok",
                                                              "content_type")}
    small["replay_truncated"] = True
    return small


@dataclass
class _Entry:
    key: Key
    at: float  # wall-clock seconds when it started
    ack: Ack | None = None
    size: int = 0

    def record(self) -> Record:
        base: Record = {"k": self.key.id, "t": self.key.topic, "c": self.key.correlation_id,
                        "d": self.key.device, "at": self.at, "s": "started"}
        if self.ack is not None:
            base.update(s="done", a=self.ack)
        return base


def _entry_of(record: Record) -> _Entry | None:
    try:
        key = Key(record["t"], record["c"], record["k"].rsplit("|", 1)[1], record.get("d"))
        entry = _Entry(key, float(record["at"]))
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    if key.id != record["k"]:
        return None
    if record.get("s") == "done" and isinstance(record.get("a"), dict):
        entry.ack = record["a"]
    return entry


def in_doubt_ack(key: Key, at: float) -> Ack:
    when = dt.datetime.fromtimestamp(at).isoformat(timespec="seconds")
    where = f" with device_id={key.device!r}" if key.device else ""
    ack: Ack = {
        "action": key.topic, "correlation_id": key.correlation_id, "status": "error",
        "error": (f"{key.topic} with this correlation_id was received at {when}, before the "
                  f"agent's gateway restarted, and its outcome is unknown; it was not run "
                  f"again. Poll get_device_status{where} for the outcome."),
        "reason": "in_doubt"}
    if key.device and key.device != ORCHESTRATOR:
        ack["device_id"] = key.device
    if key.device:
        ack["poll_device_id"] = key.device
    return ack


class ReplayCache:
    def __init__(self, directory: Path | None = None, window: float = DEFAULT_WINDOW,
                 max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_ack_bytes: int = DEFAULT_MAX_ACK_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        self.window = window
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_ack_bytes = max_ack_bytes
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._digests: dict[tuple[str, int | float], str] = {}
        self._running: dict[str, asyncio.Future[Ack]] = {}
        self._bytes = 0
        self._log = ReplayLog(directory / LOG_NAME, max_bytes) if directory else None
        if self._log is not None:
            self._load(self._log)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def live_bytes(self) -> int:
        return self._bytes

    # --- the one entry point ----------------------------------------------------------

    async def run(self, key: Key | None, produce: Producer) -> tuple[Ack, bool]:
        """The ack for `key`: produced now, or the earlier one. Returns (ack, replayed)."""
        if key is None:
            ack, _ = await produce()
            return ack, False
        self._purge()
        running = self._running.get(key.id)
        if running is not None:
            # shield: a repeat whose own handler is cancelled must not cancel the first.
            return copy.deepcopy(await asyncio.shield(running)), True
        entry = self._entries.get(key.id)
        if entry is not None:
            ack = entry.ack if entry.ack is not None else in_doubt_ack(key, entry.at)
            return copy.deepcopy(ack), True
        self._note_reuse(key)
        entry = self._add(_Entry(key, self.clock()))
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._running[key.id] = future
        try:
            ack, keep = await produce()
        except Exception as exc:  # a bug of the gateway's: let a retry try again
            self._forget(entry)
            future.set_exception(exc)
            future.exception()  # retrieved: waiters may not exist
            raise
        except BaseException:
            # Cancelled (the gateway is stopping) while the command may be running: it
            # stays "started", so a resend after the restart is answered in doubt.
            future.set_exception(RuntimeError("command abandoned"))
            future.exception()
            raise
        finally:
            self._running.pop(key.id, None)
        if keep:
            self._finish(entry, ack)
        else:
            self._forget(entry)
        future.set_result(ack)
        return ack, False

    # --- bookkeeping ------------------------------------------------------------------

    def _note_reuse(self, key: Key) -> None:
        earlier = self._digests.get(key.command_id)
        if earlier is not None and earlier != key.digest:
            log.warning("%s correlation_id=%s reused with another payload: run as a new "
                        "command", key.topic, key.correlation_id)
        self._digests[key.command_id] = key.digest

    def _add(self, entry: _Entry) -> _Entry:
        entry.size = len(encode(entry.record()))
        self._entries[entry.key.id] = entry
        self._bytes += entry.size
        self._write(entry.record())
        self._bound()
        return entry

    def _finish(self, entry: _Entry, ack: Ack) -> None:
        if self._entries.get(entry.key.id) is not entry:
            return  # evicted meanwhile
        entry.ack = shrink(ack, self.max_ack_bytes)
        record: Record = {"k": entry.key.id, "s": "done", "a": entry.ack}
        self._bytes -= entry.size
        entry.size = len(encode(entry.record()))
        self._bytes += entry.size
        self._write(record)
        self._bound()

    def _forget(self, entry: _Entry) -> None:
        if self._entries.get(entry.key.id) is entry:
            self._drop(entry.key.id)
            self._write({"k": entry.key.id, "s": "forget"})

    def _drop(self, key_id: str) -> None:
        entry = self._entries.pop(key_id)
        self._bytes -= entry.size
        if self._digests.get(entry.key.command_id) == entry.key.digest:
            del self._digests[entry.key.command_id]

    def _purge(self) -> None:
        # Entries sit in arrival order and share one window: expired ones are in front.
        horizon = self.clock() - self.window
        while self._entries:
            key_id, entry = next(iter(self._entries.items()))
            if entry.at >= horizon:
                break
            self._drop(key_id)

    def _bound(self) -> None:
        while self._entries and (len(self._entries) > self.max_entries
                                 or self._bytes > self.max_bytes // 2):
            self._drop(next(iter(self._entries)))

    def _write(self, record: Record) -> None:
        if self._log is not None and not self._log.append(record):
            self._compact()

    def _compact(self) -> None:
        assert self._log is not None
        self._purge()
        self._log.rewrite(e.record() for e in self._entries.values())

    def _load(self, replay_log: ReplayLog) -> None:
        horizon = self.clock() - self.window
        for record in replay_log.load():
            key_id, state = record["k"], record.get("s")
            if "t" in record:  # a whole entry: "started", or "done" once compacted
                entry = _entry_of(record)
                if entry is not None and entry.at >= horizon:
                    self._entries.pop(key_id, None)
                    self._entries[key_id] = entry
            elif key_id in self._entries and state == "done" and isinstance(record.get("a"),
                                                                             dict):
                self._entries[key_id].ack = record["a"]
            elif key_id in self._entries and state == "forget":
                del self._entries[key_id]
        for entry in self._entries.values():
            entry.size = len(encode(entry.record()))
            self._bytes += entry.size
            self._digests[entry.key.command_id] = entry.key.digest
        self._bound()
        self._compact()
        doubtful = sum(1 for e in self._entries.values() if e.ack is None)
        log.info("replay log %s: %d command(s) remembered, %d of them without an ack",
                 replay_log.path, len(self._entries), doubtful)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
