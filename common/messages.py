"""The registry of bus message types.

Each message is a small frozen dataclass whose fields are its body.  Its topic is derived
from the type (`TOPIC`, with `{placeholders}` filled from fields), so SUB prefix filters
follow the type hierarchy: `svc.` catches every liveness beat, `rpc.executor.` every call
the executor served, `metrics.` every sample.

Receivers ignore unknown body keys (a newer sender may add fields) and unknown topics.
`parse(envelope)` returns the typed message or raises `MessageError`.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Self

from common.wire import Envelope


class MessageError(ValueError):
    """A body that does not fit its message type."""


@dataclass(frozen=True)
class Message:
    TOPIC: ClassVar[str] = ""
    _pattern: ClassVar[re.Pattern[str]]

    def topic(self) -> str:
        return self.TOPIC.format(**{f.name: getattr(self, f.name) for f in fields(self)})

    def to_body(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Self:
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in body:
                values[f.name] = body[f.name]
            elif f.default is MISSING and f.default_factory is MISSING:
                raise MessageError(f"{cls.__name__}: missing {f.name!r}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise MessageError(f"{cls.__name__}: {exc}") from None

    @classmethod
    def matches(cls, topic: str) -> bool:
        return cls._pattern.fullmatch(topic) is not None


REGISTRY: list[type[Message]] = []


def register(cls: type[Message]) -> type[Message]:
    """Add a message type; its TOPIC placeholders match one dotted segment each."""
    regex = re.sub(r"\\\{\w+\\\}", r"[^.]+", re.escape(cls.TOPIC))
    cls._pattern = re.compile(regex)
    REGISTRY.append(cls)
    return cls


def parse(envelope: Envelope) -> Message:
    for cls in REGISTRY:
        if cls.matches(envelope.topic):
            return cls.from_body(envelope.body)
    raise MessageError(f"unknown topic {envelope.topic!r}")


# --- liveness and lifecycle -------------------------------------------------------------


@register
@dataclass(frozen=True)
class Alive(Message):
    """Liveness beat of one process, every `beat_interval` seconds."""

    TOPIC: ClassVar[str] = "svc.{name}.alive"
    name: str
    pid: int
    uptime: float
    version: str
    counters: dict[str, int] = field(default_factory=dict)


@register
@dataclass(frozen=True)
class Stopping(Message):
    """Published once when a process begins a clean shutdown."""

    TOPIC: ClassVar[str] = "svc.{name}.stopping"
    name: str
    reason: str


# --- request/reply -----------------------------------------------------------------------


@register
@dataclass(frozen=True)
class Request(Message):
    """A call to a process's request socket.  `deadline` is absolute (Unix seconds): a
    server does not start work on a request whose caller has already given up."""

    TOPIC: ClassVar[str] = "req.{method}"
    method: str
    params: dict[str, Any]
    deadline: float


@register
@dataclass(frozen=True)
class Reply(Message):
    """The one answer to a Request.  On failure `error` is `{"type", "message"}`."""

    TOPIC: ClassVar[str] = "rep.{method}"
    method: str
    ok: bool
    result: Any = None
    error: dict[str, str] | None = None


@register
@dataclass(frozen=True)
class RpcTrace(Message):
    """Published by a request server after each call, so the tap shows request traffic."""

    TOPIC: ClassVar[str] = "rpc.{server}.{method}"
    server: str
    method: str
    request_id: str
    caller: str
    duration_ms: float
    outcome: str  # "ok" | "error" | "expired" | "unknown_method" | "busy"
    error: str | None = None


# --- metrics -----------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class HostMetrics(Message):
    """One host sample, in the units of the cloud heartbeat (GB, %, seconds)."""

    TOPIC: ClassVar[str] = "metrics.host"
    cpu_usage: float
    memory_usage: float
    memory_total: float
    disk_usage: float
    disk_total: float
    uptime: int
    timestamp: str
    sampled_at: float


# --- network -----------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class NetDiscovery(Message):
    """The full interface list the network monitor reported on (re)connection."""

    TOPIC: ClassVar[str] = "net.discovery"
    interfaces: list[dict[str, Any]]
    timestamp: str


@register
@dataclass(frozen=True)
class NetChange(Message):
    """One interface's new state after the monitor's debounce."""

    TOPIC: ClassVar[str] = "net.change"
    interface: dict[str, Any]


# --- runtimes --------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class RuntimeRehomed(Message):
    """The outcome of moving one runtime's vNIC to its parent interface's new network
    (the same record `get_device_status` shows under `last_rehome`)."""

    TOPIC: ClassVar[str] = "runtime.rehome"
    device: str
    event: dict[str, Any]


# --- runtime lifecycle (docs/lifecycle.md) ----------------------------------------------


@register
@dataclass(frozen=True)
class LifecycleBoot(Message):
    """A boot sync finished: after the executor's start (`reason` "start") or a
    reconnection to the engine ("reconnect").  `seconds`: from the executor's start (or the
    reconnection) until every runtime that should run was running."""

    TOPIC: ClassVar[str] = "lifecycle.boot"
    reason: str
    runtimes: int
    started: int
    already_running: int
    kept_stopped: int
    crash_loop: int
    failed: int
    netmon: str  # "reported" | "timeout" | "not_needed" (nothing to start)
    network_wait_seconds: float
    seconds: float


@register
@dataclass(frozen=True)
class LifecycleRestartScheduled(Message):
    """The watchdog saw a runtime die unexpectedly and will restart it after `delay`."""

    TOPIC: ClassVar[str] = "lifecycle.restart_scheduled"
    device: str
    delay: float
    exit_code: int | None
    oom_killed: bool
    exits_in_window: int


@register
@dataclass(frozen=True)
class LifecycleRestarted(Message):
    """The watchdog's restart of a runtime, done (`ok`) or failed (`error`)."""

    TOPIC: ClassVar[str] = "lifecycle.restart_done"
    device: str
    ok: bool
    error: str | None = None


@register
@dataclass(frozen=True)
class LifecycleCrashLoop(Message):
    """A runtime died too often in the window and is left stopped until the cloud starts
    it again; `exits`: `{"at", "exit_code", "oom_killed"}`, oldest first."""

    TOPIC: ClassVar[str] = "lifecycle.crash_loop"
    device: str
    exits: list[dict[str, Any]]


@register
@dataclass(frozen=True)
class LifecycleDesired(Message):
    """A runtime's desired state changed (`running` / `stopped`) and why."""

    TOPIC: ClassVar[str] = "lifecycle.desired"
    device: str
    desired: str
    reason: str
