"""`device_status` — the `get_device_status` reply, from memory only.

Sources: the operations journal (in-progress and failed operations) and the live view
(container state, kept current by engine events).  No engine call is made per request.
Reply shapes (PROTOCOL.md): in progress (`creating` / `deleting` with `step`), failed
operation without a container (`error`), no container (`not_found`), container present
(`success`, plus `last_operation` when the latest operation on it failed).  Device
`__orchestrator__` reports self-destruct progress.
"""

from __future__ import annotations

import time
from typing import Any

from services.executor.context import Context
from services.executor.engine.liveview import ContainerView
from services.executor.net import names
from services.executor.runtime.dedicated import status_networks
from services.executor.runtime.journal import Operation
from services.executor.runtime.watchdog import lifecycle_block

IN_PROGRESS_STATUS = {"create": "creating", "delete": "deleting",
                      "delete_orchestrator": "deleting"}


def op_summary(op: Operation) -> dict[str, Any]:
    out = {"operation": op.operation, "status": op.state, "started_at": op.started_at,
           "updated_at": op.updated_at, "step": op.step}
    if op.error:
        out["error"] = op.error
    return out


def in_progress(op: Operation) -> dict[str, Any]:
    return {"status": IN_PROGRESS_STATUS.get(op.operation, "in_progress"),
            "device_id": op.device_id, "operation": op.operation,
            "started_at": op.started_at, "updated_at": op.updated_at, "step": op.step,
            "message": op.message or f"Container {op.device_id} is being processed"}


def failed(op: Operation) -> dict[str, Any]:
    return {"status": "error", "device_id": op.device_id, "operation": op.operation,
            "error": op.error, "message": f"Operation failed: {op.error}",
            "step": op.step, "started_at": op.started_at, "updated_at": op.updated_at}


def container_body(ctx: Context, view: ContainerView) -> dict[str, Any]:
    networks = {name: dict(net) for name, net in view.networks.items()}
    applied = ctx.applied_macs.get(view.name)
    if applied is not None and applied[0] == view.pid:
        for name, mac in applied[1].items():
            if name in networks:
                networks[name]["mac_address"] = mac
    if ctx.wifi is not None:
        ctx.wifi.decorate(view.name, view.pid if view.running else 0,
                          ctx.vnics.get(view.name), networks)
    if ctx.dhcp is not None:  # a dhcp vNIC shows its lease, never the engine's address
        ctx.dhcp.decorate(view.name, ctx.vnics.get(view.name), networks)
    networks.update(status_networks(ctx, view.name))
    body: dict[str, Any] = {
        "status": "success", "device_id": view.name, "container_status": view.status,
        "is_running": view.running, "networks": networks,
        "restart_count": view.restart_count, "internal_ip": view.internal_ip,
    }
    if view.running:
        started = view.started_at or time.time()
        body["uptime_seconds"] = max(0, int(time.time() - started))
    else:
        body["exit_code"] = view.exit_code
    if view.health:
        body["health_status"] = view.health
    body["lifecycle"] = lifecycle_block(ctx, view.name)
    events = ctx.netevents.get(view.name)
    if events:
        body["last_rehome"] = events[-1]
        body["network_events"] = events
    serial_ports = ctx.serials.status(view.name) if ctx.serials is not None else None
    if serial_ports is not None:
        body["serial_ports"] = serial_ports
    op = ctx.journal.get(view.name)
    if op is not None and op.operation == "rehome" and op.in_progress:
        body["rehoming"] = {"started_at": op.started_at, "step": op.step,
                            "message": op.message}
    return body


def engine_failed(device: str, reason: str) -> dict[str, Any]:
    """The original's reply when the engine cannot be asked (PROTOCOL "Compatibility")."""
    return {"status": "error", "device_id": device,
            "error": f"Failed to retrieve container status: {reason}"}


def device_status(ctx: Context, device: str) -> dict[str, Any]:
    if device == names.ORCHESTRATOR_DEVICE:
        return orchestrator_status(ctx)
    op = ctx.journal.get(device)
    if op is not None and op.in_progress and op.operation in IN_PROGRESS_STATUS:
        return in_progress(op)
    ctx.require_docker()
    view = ctx.view.get(device)
    if view is not None:
        body = container_body(ctx, view)
        if op is not None and op.state == "error":
            body["last_operation"] = op_summary(op)
        return body
    if op is not None and op.state == "error":
        return failed(op)
    return {"status": "not_found", "device_id": device,
            "message": f"Container {device} does not exist"}


def orchestrator_status(ctx: Context) -> dict[str, Any]:
    device = names.ORCHESTRATOR_DEVICE
    op = ctx.journal.get(device)
    if op is None:
        return {"status": "not_found", "device_id": device,
                "message": "No self-destruct has been requested"}
    if op.in_progress:
        body = in_progress(op)
        body["progress"] = dict(op.progress)
        return body
    if op.state == "error":
        body = failed(op)
        body["progress"] = dict(op.progress)
        return body
    return {"status": "success", "device_id": device, "operation": op.operation,
            "message": op.message or "Self-destruct completed", "step": op.step,
            "started_at": op.started_at, "finished_at": op.finished_at,
            "progress": dict(op.progress)}
