"""Reconciliation: make the engine, the journal and the vNIC file agree.

Runs after the live view is rebuilt, at start and after every reconnection to the engine:

* an operation cut off by a crash is finished or rolled back — a create whose container
  was made and connected is finished (started, completed, `success`); one cut off
  earlier is rolled back and reported as failed; a delete or a self-destruct is carried
  through;
* a failed create whose rollback could not finish (engine gone) is rolled back now;
* leftovers are removed: our `<name>_internal` networks without a runtime, our MACVLAN
  networks without users, stored vNICs of runtimes that no longer exist.
"""

from __future__ import annotations

import logging

from common import labels
from services.executor.context import Context
from services.executor.errors import OperationFailed
from services.executor.net import names, networks
from services.executor.runtime import dedicated
from services.executor.runtime.create import (
    complete,
    fail_and_roll_back,
    roll_back,
    start_runtime,
)
from services.executor.runtime.journal import Operation
from services.executor.runtime.lifecycle import run_delete
from services.executor.runtime.live import apply_live
from services.executor.runtime.selfdestruct import run_self_destruct

log = logging.getLogger(__name__)


async def reconcile(ctx: Context) -> None:
    for op in ctx.journal.all():
        device = op.device_id
        if ctx.ops.current(device) is not None:
            continue  # being carried out by this process right now
        if op.operation == "rehome":
            continue  # carried through by the re-homing pass (rehome.recover)
        if op.in_progress:
            log.warning("resuming %s of %s interrupted at step %s", op.operation, device,
                        op.step)
            ctx.ops.begin(device, op.operation)
            if op.operation == "create":
                ctx.ops.carry(device, recover_create(ctx, op), f"recover-create-{device}")
            elif op.operation == "delete":
                ctx.ops.carry(device, run_delete(ctx, op), f"recover-delete-{device}")
            elif op.operation == "delete_orchestrator":
                ctx.ops.carry(device, run_self_destruct(ctx, op), "recover-self-destruct")
            else:
                ctx.ops.end(device)
                op.fail("Interrupted by an executor restart")
                await ctx.save_op(op)
        elif op.state == "error" and op.progress.get("rollback_pending"):
            ctx.ops.begin(device, op.operation)
            ctx.ops.carry(device, retry_rollback(ctx, op), f"rollback-{device}")
    await collect_leftovers(ctx)
    for view in ctx.view.all():
        if view.running and ctx.ops.current(view.name) is None:
            await apply_live(ctx, view.name, ctx.vnics.get(view.name))


async def recover_create(ctx: Context, op: Operation) -> None:
    device = op.device_id
    vnics = list(op.request.get("vnics") or [])
    try:
        view = await ctx.view.refresh(device)
        built = (view is not None and op.progress.get("networks_done")
                 and op.progress.get("container_id")
                 and view.labels.get(labels.OPERATION) == op.op_id
                 and all(v.get("network") in view.networks or v.get("wifi") for v in vnics))
        if not built:
            raise OperationFailed(f"Interrupted by an executor restart during step {op.step}; "
                                  "rolled back")
        assert view is not None
        op.progress["container_id"] = view.id
        if not view.running:
            # Held like a create holds them: a re-creation without real-time limits
            # leaves the networks briefly without users.
            async with ctx.networks.locks.hold(v["network"] for v in vnics):
                await start_runtime(ctx, device, str(op.request.get("image")), vnics, op)
        await complete(ctx, op, vnics)
        op.succeed(f"Container {device} created (finished after an executor restart)")
        await ctx.save_op(op)
        log.info("create of %s finished after restart", device)
    except Exception as exc:
        await fail_and_roll_back(ctx, op, exc, [v.get("network") for v in vnics])


async def retry_rollback(ctx: Context, op: Operation) -> None:
    try:
        vnics = op.request.get("vnics") or []
        await roll_back(ctx, op.device_id, [v.get("network") for v in vnics if v.get("network")],
                        vnics)
        op.progress.pop("rollback_pending", None)
        await ctx.save_op(op)
    except Exception as exc:
        log.warning("rollback of %s still incomplete: %s", op.device_id, exc)


async def collect_leftovers(ctx: Context) -> None:
    busy = set(ctx.ops.busy_devices())
    for net in await ctx.docker.call(networks.owned_networks, ctx.instance,
                                     labels.KIND_INTERNAL):
        device = (net.get("Labels") or {}).get(labels.DEVICE) or ""
        if not device or device in busy or ctx.view.get(device) is not None:
            continue
        if net.get("Name") != names.internal_network(device):
            continue
        log.info("removing leftover network %s", net["Name"])
        await ctx.docker.call(networks.remove_network, net["Id"], ctx.agent_container)
    for device in ctx.vnics.devices():
        if device not in busy and ctx.view.get(device) is None:
            log.info("forgetting stored vNICs of %s: the runtime no longer exists", device)
            await ctx.forget_vnics(device)
    for device in ctx.intents.devices():
        if device not in busy and ctx.view.get(device) is None:
            await ctx.forget_intent(device)
    if ctx.serials is not None:
        for device in ctx.serials.store.devices():
            if device not in busy and ctx.view.get(device) is None:
                await ctx.save_serials(device, [])
    if ctx.dedicated is not None:
        for device in ctx.dedicated.store.devices():
            if device not in busy and ctx.view.get(device) is None:
                await dedicated.release(ctx, device)
    await ctx.networks.collect_macvlans()
