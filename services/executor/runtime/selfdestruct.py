"""`delete_orchestrator` — remove everything the agent owns, then the agent itself.

Progress is journalled under device `__orchestrator__` (steps `waiting_for_operations`,
`removing_runtimes`, `removing_networks`, `removing_sidecar`, `removing_agent`, with
counts), so `get_device_status` can follow it and a restarted executor resumes it.
A request while one runs is answered `Self-destruct operation already in progress`.
Only objects with our labels are removed, plus the runtimes adopted from the original
agent (and their `<name>_internal`), the sidecar container by its configured name when it
carries the netmon's component label (a foreign container of that name is left and the
final status says so), and the agent's own container; a user's containers and networks
stay.  Running it again is harmless: it finds nothing left to remove.
"""

from __future__ import annotations

import logging
from typing import Any

import docker.errors

from common import labels
from services.executor.context import Context
from services.executor.engine import containers
from services.executor.net import names, networks
from services.executor.runtime.create import error_text
from services.executor.runtime.journal import Operation
from services.executor.runtime.lifecycle import remove_runtime

log = logging.getLogger(__name__)

DEVICE = names.ORCHESTRATOR_DEVICE
WAIT_FOR_OPERATIONS = 60.0
# The original's answer to a second request while one runs (PROTOCOL "Compatibility").
ALREADY = {"status": "error", "error": "Self-destruct operation already in progress"}
ACK = {"status": "accepted",
       "message": "Self-destruct initiated. Poll get_device_status with "
                  "device_id='__orchestrator__' for progress.",
       "poll_device_id": DEVICE}


async def start_self_destruct(ctx: Context) -> dict[str, Any]:
    if ctx.ops.current(DEVICE) is not None:
        return dict(ALREADY)  # already under way: no second run
    ctx.require_docker()

    async def prepare() -> Operation:
        op = Operation(DEVICE, "delete_orchestrator", step="waiting_for_operations",
                       message="Self-destruct in progress")
        await ctx.save_op(op)
        return op

    await ctx.ops.launch(DEVICE, "delete_orchestrator", prepare,
                         lambda op: run_self_destruct(ctx, op), name="self-destruct")
    return dict(ACK)


def _runtime_names(api: Any, instance: str) -> list[str]:
    rows = api.containers(all=True, filters=labels.filters(instance, labels.KIND_RUNTIME))
    return [str(row["Names"][0]).lstrip("/") for row in rows if row.get("Names")]


async def _step(ctx: Context, op: Operation, name: str) -> None:
    op.set_step(name)
    await ctx.save_op(op)


async def _remove_sidecar(ctx: Context, op: Operation) -> str:
    """Remove the sidecar when the container of that name is our netmon; otherwise leave
    it and return the sentence the final status carries about it."""
    sidecar = ctx.config.sidecar_container
    if not sidecar:
        return ""
    outcome: str = await ctx.docker.call(containers.remove_labelled, sidecar, labels.COMPONENT,
                                         labels.NETMON_COMPONENT, ctx.config.stop_grace)
    op.progress["sidecar_removed"] = outcome == "removed"
    if outcome != "foreign":
        return ""
    op.progress["sidecar_foreign"] = True
    log.warning("container %s is not the agent's network monitor (no label %s=%s); left alone",
                sidecar, labels.COMPONENT, labels.NETMON_COMPONENT)
    return (f"; container {sidecar} was left in place: it does not carry the network "
            f"monitor's label {labels.COMPONENT}={labels.NETMON_COMPONENT}")


async def run_self_destruct(ctx: Context, op: Operation) -> None:
    ctx.destroying = True
    try:
        if not await ctx.ops.wait_idle(WAIT_FOR_OPERATIONS, ignore=DEVICE):
            log.warning("operations still running after %.0f s; removing anyway",
                        WAIT_FOR_OPERATIONS)
        await _step(ctx, op, "removing_runtimes")
        runtimes = await ctx.docker.call(_runtime_names, ctx.instance)
        runtimes += sorted(set(ctx.view.adopted.values()) - set(runtimes))
        op.progress.update(runtimes_total=len(runtimes), runtimes_removed=0)
        await ctx.save_op(op)
        for device in runtimes:
            await remove_runtime(ctx, device)
            if ctx.journal.get(device) is not None:
                await ctx.forget_op(device)
            op.progress["runtimes_removed"] += 1
            await ctx.save_op(op)
        for device in ctx.vnics.devices():
            await ctx.forget_vnics(device)
        await _step(ctx, op, "removing_networks")
        removed = 0
        for net in await ctx.docker.call(networks.owned_networks, ctx.instance):
            try:
                if await ctx.docker.call(networks.remove_network, net["Id"], ctx.agent_container):
                    removed += 1
            except docker.errors.APIError as exc:
                log.warning("network %s kept: %s", net.get("Name"), exc.explanation or exc)
        op.progress["networks_removed"] = removed
        await _step(ctx, op, "removing_sidecar")
        kept = await _remove_sidecar(ctx, op)
        await _step(ctx, op, "removing_agent")
        agent: str | None = ctx.agent_container
        op.succeed("Self-destruct completed" + kept + ("; removing the agent container"
                                                        if agent else
                                                        "; the agent runs on the host"))
        await ctx.save_op(op)
        log.warning("self-destruct completed: %d runtime(s), %d network(s) removed",
                    len(runtimes), removed)
        if agent:
            # Last: this ends the process running this code.
            await ctx.docker.call(containers.remove, agent, None)
    except Exception as exc:
        text = error_text(exc)
        log.error("self-destruct failed at %s: %s", op.step, text)
        op.fail(text)
        await ctx.save_op(op)
    finally:
        ctx.destroying = False
