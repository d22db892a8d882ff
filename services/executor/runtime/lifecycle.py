"""`start_device`, `stop_device`, `restart_device` (ack when done) and `delete_device`
(ack `deleting`, work in the background).

Only containers this agent manages (labels, `common/labels.py`) are touched: the agent's own
container, the network-monitor sidecar and any container without our labels are refused
with an error and left exactly as they are.  Deleting a device that does not exist ends
in success.
"""

from __future__ import annotations

import logging
from typing import Any

from common import labels
from services.executor.context import QUICK, Context
from services.executor.dhcp import wiring as dhcp_wiring
from services.executor.engine import containers
from services.executor.engine.liveview import ContainerView
from services.executor.errors import (
    Conflict,
    DockerUnavailable,
    ExecutorError,
    NotManaged,
    OperationFailed,
)
from services.executor.runtime.create import apply_macs, error_text
from services.executor.runtime.journal import Operation

log = logging.getLogger(__name__)

ACTIONS = {"start": "running", "stop": "exited", "restart": "running"}


def protected(ctx: Context, device: str) -> bool:
    """The agent's own container and the sidecar, whatever their labels say."""
    if device in (ctx.config.sidecar_container, ctx.agent_name):
        return True
    agent = ctx.agent_container or ""
    return bool(agent) and len(device) >= 12 and agent.startswith(device)


async def managed(ctx: Context, device: str, action: str) -> ContainerView | None:
    """Our view of `device`; None when no such container exists; NotManaged when it
    exists but is not ours."""
    if protected(ctx, device):
        raise NotManaged(device, action)
    view = ctx.view.get(device)
    if view is not None:
        return view
    attrs = await ctx.docker.call(containers.container_exists, device, budget=QUICK)
    if attrs is None:
        return None
    if not labels.owned((attrs.get("Config") or {}).get("Labels"), ctx.instance):
        raise NotManaged(device, action)
    return await ctx.view.refresh(device)


def error_body(device: str, text: str) -> dict[str, Any]:
    return {"status": "error", "success": False, "device_id": device, "error": text}


async def control(ctx: Context, device: str, action: str) -> dict[str, Any]:
    """Start, stop or restart a managed runtime and answer when it is done."""
    ctx.require_docker()
    try:
        ctx.ops.begin(device, action)
    except ExecutorError as exc:
        return error_body(device, exc.text)
    try:
        view = await managed(ctx, device, action)
        if view is None:
            return error_body(device, f"Container {device} not found")
        grace = ctx.config.stop_grace
        if action == "start":
            await ctx.docker.call(containers.start, view.id, budget=QUICK)
        elif action == "stop":
            await ctx.docker.call(containers.stop, view.id, grace, budget=grace + QUICK)
        else:
            await ctx.docker.call(containers.restart, view.id, grace, budget=grace + QUICK)
        view = await ctx.view.refresh(device)
        if view is None:
            return error_body(device, f"Container {device} disappeared")
        if view.running:
            await apply_macs(ctx, device, ctx.vnics.get(device))
            await dhcp_wiring.after_start(ctx, device)
        else:
            await dhcp_wiring.stopped(ctx, device)  # done before the answer, not after
        previous = ctx.journal.get(device)
        if previous is not None and previous.state == "error" and \
                previous.operation in ACTIONS:
            await ctx.forget_op(device)
        return {"status": "success", "success": True, "device_id": device,
                "container_status": view.status}
    except DockerUnavailable:
        raise
    except Exception as exc:
        text = error_text(exc)
        if not isinstance(exc, ExecutorError):
            text = f"Could not {action} container {device}: {text}"
        log.warning("%s of %s failed: %s", action, device, text)
        if not isinstance(exc, Conflict):
            failed = Operation(device, action)
            failed.fail(text)
            await ctx.save_op(failed)
        return error_body(device, text)
    finally:
        ctx.ops.end(device)


# --- delete ------------------------------------------------------------------------------------


async def start_delete(ctx: Context, device: str) -> dict[str, Any]:
    ctx.require_docker()

    async def prepare() -> Operation:
        await managed(ctx, device, "delete")
        op = Operation(device, "delete", step="stopping_container",
                       message=f"Container {device} is being deleted")
        await ctx.save_op(op)
        return op

    await ctx.ops.launch(device, "delete", prepare, lambda op: run_delete(ctx, op),
                         name=f"delete-{device}")
    return {"status": "deleting", "device_id": device,
            "message": f"Container deletion started for {device}"}


async def run_delete(ctx: Context, op: Operation) -> None:
    """The work of a delete; the caller holds the device's claim."""
    device = op.device_id
    try:
        await remove_runtime(ctx, device, op)
        await ctx.forget_op(device)
        log.info("runtime %s deleted", device)
    except Exception as exc:
        text = error_text(exc)
        log.warning("delete of %s failed at %s: %s", device, op.step, text)
        op.fail(text)
        await ctx.save_op(op)


async def remove_runtime(ctx: Context, device: str, op: Operation | None = None) -> None:
    """Stop and remove the container, its internal network, its vNICs, and MACVLAN
    networks nobody uses any more.  Idempotent."""
    view = await ctx.view.refresh(device)
    networks = {v.get("network") for v in ctx.vnics.get(device) if v.get("network")}
    if view is not None:
        networks |= set(view.networks)
        await dhcp_wiring.before_remove(ctx, device)
        await ctx.docker.call(containers.remove, view.id, ctx.config.stop_grace)
        ctx.view.forget(device)
    if op is not None:
        op.set_step("removing_networks")
        await ctx.save_op(op)
    await ctx.networks.remove_internal(device)
    await ctx.forget_vnics(device)
    ctx.applied_macs.pop(device, None)
    await ctx.networks.collect_macvlans(only=[n for n in networks if n])
    if await ctx.view.refresh(device) is not None:
        raise OperationFailed(f"Container {device} still exists after removal")
