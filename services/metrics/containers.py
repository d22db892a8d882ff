"""What metrics asks the engine about runtime containers: read-only calls only.

Only managed runtimes count: containers carrying the executor's labels with this agent's
instance id and kind `runtime` (`common/labels.py`), and the runtimes the executor adopted
from the original agent (`common/adopted.py`: id → name, read from the state directory).
A user's own containers, the agent itself and the sidecar are never sampled.  The
functions take the engine client (`engine.Engine`) as first argument, the shape
`EngineAccess.call` runs in its pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common import labels
from services.metrics.engine import Engine, NotFound

MIB = 1024 * 1024


@dataclass(frozen=True)
class Listed:
    cid: str
    device: str
    running: bool


@dataclass(frozen=True)
class Facts:
    """What one inspect tells about a runtime container."""

    cid: str
    device: str
    running: bool
    pid: int
    cgroup_parent: str
    memory_bytes: int  # 0: unlimited
    nano_cpus: int  # 0: unlimited


def list_runtimes(api: Engine, instance: str,
                  adopted: Mapping[str, str] | None = None) -> list[Listed]:
    """Every managed runtime container of `instance`, running or not, adopted ones too."""
    rows = api.list_containers(all=True, filters=labels.filters(instance, labels.KIND_RUNTIME))
    out = []
    for row in rows:
        row_labels = row.get("Labels") or {}
        if not labels.owned(row_labels, instance):
            continue  # the engine filtered already; a second look costs nothing
        names = row.get("Names") or []
        device = row_labels.get(labels.DEVICE) or (names[0].lstrip("/") if names else "")
        if device:
            out.append(Listed(row["Id"], device, row.get("State") == "running"))
    if adopted:
        for row in api.list_containers(all=True, filters={"id": sorted(adopted)}):
            if row.get("Id") in adopted:
                out.append(Listed(row["Id"], adopted[row["Id"]], row.get("State") == "running"))
    return out


def inspect_runtime(api: Engine, name_or_id: str, instance: str,
                    adopted: Mapping[str, str] | None = None) -> Facts | None:
    """The facts of a managed runtime, or None when there is no such container or it is
    not one of ours."""
    try:
        attrs = api.inspect_container(name_or_id)
    except NotFound:
        return None
    return parse_inspect(attrs, instance, adopted)


def parse_inspect(attrs: dict[str, Any], instance: str,
                  adopted: Mapping[str, str] | None = None) -> Facts | None:
    config_labels = (attrs.get("Config") or {}).get("Labels") or {}
    labelled = labels.owned(config_labels, instance) and \
        config_labels.get(labels.KIND) == labels.KIND_RUNTIME
    if not labelled and str(attrs.get("Id", "")) not in (adopted or {}):
        return None
    state = attrs.get("State") or {}
    host = attrs.get("HostConfig") or {}
    device = config_labels.get(labels.DEVICE) or str(attrs.get("Name", "")).lstrip("/")
    return Facts(
        cid=str(attrs.get("Id", "")),
        device=device,
        running=bool(state.get("Running")),
        pid=int(state.get("Pid") or 0),
        cgroup_parent=str(host.get("CgroupParent") or ""),
        memory_bytes=int(host.get("Memory") or 0),
        nano_cpus=effective_nano_cpus(host),
    )


def effective_nano_cpus(host_config: dict[str, Any]) -> int:
    """The CPU limit in billionths of a CPU: `--cpus` (NanoCpus) or the older quota and
    period pair (`--cpu-quota`, `--cpu-period`, default period 100 ms); 0 when unlimited."""
    nano = int(host_config.get("NanoCpus") or 0)
    if nano > 0:
        return nano
    quota = int(host_config.get("CpuQuota") or 0)
    period = int(host_config.get("CpuPeriod") or 0) or 100_000
    if quota > 0:
        return quota * 1_000_000_000 // period
    return 0


def format_memory(memory_bytes: int | None) -> str:
    if memory_bytes is None:
        return "unknown"
    if memory_bytes <= 0:
        return "unlimited"
    return f"{max(1, round(memory_bytes / MIB))} MB"


def format_cpu(nano_cpus: int | None) -> str:
    if nano_cpus is None:
        return "unknown"
    if nano_cpus <= 0:
        return "unlimited"
    # Two decimals at most, one at least: "1.0 vCPU", "0.5 vCPU", "0.25 vCPU".
    text = f"{nano_cpus / 1e9:.2f}".rstrip("0")
    if text.endswith("."):
        text += "0"
    return f"{text} vCPU"
