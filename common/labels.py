"""Ownership by labels: what the executor puts on every object it creates.

An object is ours when it carries `orchestrator.managed=true` and our agent instance id.
Everything the executor deletes, stops or garbage-collects is selected by these labels,
so a user's own containers and networks (or those of another agent on the same engine)
are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

MANAGED = "orchestrator.managed"
INSTANCE = "orchestrator.instance"
DEVICE = "orchestrator.device"
VNIC = "orchestrator.vnic"
KIND = "orchestrator.kind"
OPERATION = "orchestrator.operation"
PARENT = "orchestrator.parent"
SUBNET = "orchestrator.subnet"

KIND_RUNTIME = "runtime"
KIND_INTERNAL = "internal"
KIND_MACVLAN = "macvlan"


def base(instance: str, kind: str, operation: str) -> dict[str, str]:
    return {MANAGED: "true", INSTANCE: instance, KIND: kind, OPERATION: operation}


def runtime(instance: str, device: str, vnic_names: list[str], operation: str) -> dict[str, str]:
    labels = base(instance, KIND_RUNTIME, operation)
    labels[DEVICE] = device
    labels[VNIC] = ",".join(vnic_names)
    return labels


def internal(instance: str, device: str, operation: str) -> dict[str, str]:
    labels = base(instance, KIND_INTERNAL, operation)
    labels[DEVICE] = device
    return labels


def macvlan(instance: str, device: str, vnic: str, parent: str, subnet: str,
            operation: str) -> dict[str, str]:
    # A MACVLAN network is shared by runtimes; device and vNIC name its first user.
    labels = base(instance, KIND_MACVLAN, operation)
    labels.update({DEVICE: device, VNIC: vnic, PARENT: parent, SUBNET: subnet})
    return labels


def owned(labels: Mapping[str, str] | None, instance: str) -> bool:
    return bool(labels) and labels.get(MANAGED) == "true" and labels.get(INSTANCE) == instance  # type: ignore[union-attr]


def filters(instance: str, kind: str | None = None) -> dict[str, list[str]]:
    """Engine-side list filters selecting our objects (labels are ANDed)."""
    wanted = [f"{MANAGED}=true", f"{INSTANCE}={instance}"]
    if kind is not None:
        wanted.append(f"{KIND}={kind}")
    return {"label": wanted}


# The component label the agent's own images carry (Dockerfile, Dockerfile.netmon): the
# sidecar is removed by self-destruct only when its container says it is the netmon.
COMPONENT = "orchestrator.component"
NETMON_COMPONENT = "netmon"

# The generated instance id is kept in this file under the state directory; the executor
# writes it once, other processes (metrics) only read it.
INSTANCE_FILE = "instance_id"


def read_instance(configured: str, state_dir: Path) -> str | None:
    """The configured instance id, or the one the executor keeps; None before it exists."""
    if configured:
        return configured
    try:
        return (state_dir / INSTANCE_FILE).read_text().strip() or None
    except OSError:
        return None
