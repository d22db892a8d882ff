"""`start_device`, `stop_device`, `restart_device` (ack when done) and `delete_device`
(ack `deleting`, work in the background).

Only containers this agent manages (labels, `common/labels.py`, or adopted from the
original agent, `adopt.py`) are touched: the agent's own
container, the network-monitor sidecar and any container without our labels are refused
with an error and left exactly as they are.  Deleting a device that does not exist ends
in success.

Error kind `docker_unavailable` leaves every command here having changed nothing (the
gateway lets a resend run again): it is raised only before the first engine call that
changes anything (`require_docker`, the read-only look-up); an engine lost during or after
a start/stop/restart is answered as that command's own error.  A delete acks before its
work, so the engine lost later is reported through `get_device_status`.
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
from services.executor.runtime import adopt, dedicated, live, unleased
from services.executor.runtime.create import error_text
from services.executor.runtime.journal import Operation
from services.executor.runtime.watchdog import set_desired

log = logging.getLogger(__name__)

ACTIONS = {"start": "running", "stop": "exited", "restart": "running"}
# What each action makes the runtime's desired state (docs/lifecycle.md).
DESIRED = {"start": "running", "stop": "stopped", "restart": "running"}


def protected_names(ctx: Context) -> set[str]:
    return {n for n in (ctx.config.sidecar_container, ctx.agent_name) if n}


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
    if not labels.owned((attrs.get("Config") or {}).get("Labels"), ctx.instance) and \
            attrs.get("Id") not in ctx.view.adopted:
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
        # Before the engine is asked: a stop must never look like a crash to the watchdog,
        # and a start lifts the crash-loop guard.
        await set_desired(ctx, device, DESIRED[action], f"{action}_device")
        try:
            view = await _act(ctx, view, action)
        except DockerUnavailable as exc:
            # The request may have reached the engine: this is no proof that nothing ran,
            # so it is an answer of its own, not error kind docker_unavailable.
            raise OperationFailed(f"Could not {action} container {device}: {exc.text}; "
                                  "its state is unknown until the engine answers") from None
        if view is None:
            return error_body(device, f"Container {device} disappeared")
        if view.running:
            await live.after_start(ctx, device)  # once per start, shared with the view's hook
        else:
            await dhcp_wiring.stopped(ctx, device)  # done before the answer, not after
        if ctx.dedicated is not None:  # NICs in (start) or home (stop) before the answer
            await ctx.dedicated.sync_device(device)
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


async def _act(ctx: Context, view: ContainerView, action: str) -> ContainerView | None:
    grace = ctx.config.stop_grace
    if action == "start":
        await unleased.before_start(ctx, view.name)
        await ctx.docker.call(containers.start, view.id, budget=QUICK)
    elif action == "stop":
        await ctx.docker.call(containers.stop, view.id, grace, budget=grace + QUICK)
    elif ctx.dhcp is not None and any(dhcp_wiring.is_dhcp(v) for v in ctx.vnics.get(view.name)):
        # As a stop and a start, so a lease that moved is fixed on the endpoint in between.
        await ctx.docker.call(containers.stop, view.id, grace, budget=grace + QUICK)
        await ctx.view.refresh(view.name)
        await unleased.before_start(ctx, view.name)
        await ctx.docker.call(containers.start, view.id, budget=QUICK)
    else:
        await ctx.docker.call(containers.restart, view.id, grace, budget=grace + QUICK)
    return await ctx.view.refresh(view.name)


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
        await ctx.forget_intent(device)
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
    was_adopted = device in ctx.view.adopted.values()
    if view is not None:
        networks |= set(view.networks)
        await dhcp_wiring.before_remove(ctx, device)
        await ctx.docker.call(containers.remove, view.id, ctx.config.stop_grace)
        ctx.view.forget(device)
    if op is not None:
        op.set_step("removing_networks")
        await ctx.save_op(op)
    # An adopted runtime's `<name>_internal` was made by the original agent: no labels.
    await ctx.networks.remove_internal(device, unlabelled=was_adopted)
    for cid, name in list(ctx.view.adopted.items()):
        if name == device:
            await adopt.forget(ctx, cid)
    await ctx.forget_vnics(device)
    await ctx.save_serials(device, [])
    await dedicated.release(ctx, device)
    live.forget(ctx, device)
    await ctx.networks.collect_macvlans(only=[n for n in networks if n])
    if await ctx.view.refresh(device) is not None:
        raise OperationFailed(f"Container {device} still exists after removal")
