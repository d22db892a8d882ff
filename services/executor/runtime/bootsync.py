"""Boot sync: bring every runtime that should run back up, networks first.

Runs after the executor's start and after every reconnection to the engine (a host boot,
a Docker restart and an executor restart all end here), once the live view is rebuilt and
interrupted operations are reconciled:

1. runtimes still carrying a Docker restart policy (made before the agent owned restarts)
   get policy `no`; one that is stopped under `unless-stopped`/`always` without a record of
   ours was stopped on purpose (the engine would have started it otherwise) and is
   recorded as such;
2. the runtimes to start: not running, desired state `running`, not held by the
   crash-loop guard, no operation under way.  None: done at once;
3. wait until the network monitor has reported the host's interfaces (netbridge's
   discovery or snapshot), at most `boot_netmon_wait` seconds; past that, log it and go on
   with what is known (no re-homing onto unknown subnets);
4. one re-homing pass over every parent (`rehome/`): a parent whose subnet changed while
   the device was off has its network moved before any runtime on it starts;
5. start them, `boot_concurrency` at a time, in name order; each start holds the device
   like any operation;
6. log and publish `lifecycle.boot` with the counts and the seconds from the executor's
   start (or the reconnection) until all of them ran.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from common.messages import LifecycleBoot
from services.executor.context import QUICK, Context
from services.executor.engine import containers
from services.executor.errors import Busy, DockerUnavailable
from services.executor.runtime import live, unleased
from services.executor.runtime.create import error_text
from services.executor.runtime.intents import RUNNING, STOPPED, BadDevice, Intent

log = logging.getLogger(__name__)

OPERATION = "boot_start"
POLL = 0.2


@dataclass
class Tally:
    runtimes: int = 0
    started: int = 0
    already_running: int = 0
    kept_stopped: int = 0
    crash_loop: int = 0
    failed: int = 0


async def adopt_policies(ctx: Context) -> None:
    """Step 1: the agent, not the engine, restarts runtimes."""
    for view in ctx.view.all():
        if view.restart_policy in ("", "no"):
            continue
        if not view.running and view.restart_policy in ("always", "unless-stopped") \
                and not ctx.intents.known(view.name):
            try:
                intent = Intent(view.name, STOPPED, "stopped before the agent owned restarts")
                await ctx.save_intent(intent)
            except BadDevice:
                continue
        await ctx.docker.call(containers.set_restart_policy, view.id, "no")
        await ctx.view.refresh(view.id)
        log.info("runtime %s: engine restart policy %s replaced by the agent's watchdog",
                 view.name, view.restart_policy)


async def wait_for_netmon(ctx: Context) -> tuple[str, float]:
    """Step 3: ("reported" | "timeout", seconds waited)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = began + ctx.config.boot_netmon_wait
    while not ctx.hostnets.known:
        if loop.time() >= deadline:
            log.warning("the network monitor has not reported the host's interfaces within "
                        "%.0f s; starting runtimes without checking their networks",
                        ctx.config.boot_netmon_wait)
            return "timeout", loop.time() - began
        await asyncio.sleep(POLL)
    return "reported", loop.time() - began


async def start_one(ctx: Context, device: str, tally: Tally) -> None:
    try:
        ctx.ops.begin(device, OPERATION)
    except Busy as exc:
        log.info("boot sync leaves %s to the operation under way: %s", device, exc.text)
        return
    try:
        view = await ctx.view.refresh(device)
        if view is None:
            return
        if view.running:
            tally.already_running += 1
            return
        await unleased.before_start(ctx, device)
        await ctx.docker.call(containers.start, view.id, budget=QUICK)
        view = await ctx.view.refresh(device)
        if view is not None and view.running:
            await live.after_start(ctx, device)
        tally.started += 1
        log.info("boot sync started %s", device)
    except DockerUnavailable:
        raise
    except Exception as exc:
        tally.failed += 1
        log.error("boot sync could not start %s: %s", device, error_text(exc))
    finally:
        ctx.ops.end(device)


def plan(ctx: Context, tally: Tally) -> list[str]:
    """Step 2: the runtimes to start, in name order."""
    wanted: list[str] = []
    if ctx.destroying:
        return wanted  # self-destruct removes them all
    for view in sorted(ctx.view.all(), key=lambda v: v.name):
        tally.runtimes += 1
        intent = ctx.intents.get(view.name)
        if view.running:
            tally.already_running += 1
        elif intent.crash_loop:
            tally.crash_loop += 1
        elif intent.desired != RUNNING:
            tally.kept_stopped += 1
        elif ctx.ops.current(view.name) is None:
            wanted.append(view.name)
    return wanted


async def boot_sync(ctx: Context, rehome_pass: Callable[[float], Awaitable[bool]],
                    reason: str, since: float) -> Tally:
    """Steps 1 to 6; `since` is the monotonic time the clock of `seconds` starts at."""
    await adopt_policies(ctx)
    tally = Tally()
    wanted = plan(ctx, tally)
    netmon, waited = "not_needed", 0.0
    if wanted:
        log.info("boot sync (%s): %d runtime(s) to start: %s", reason, len(wanted),
                 ", ".join(wanted))
        netmon, waited = await wait_for_netmon(ctx)
        if netmon == "reported" and not await rehome_pass(ctx.config.boot_netmon_wait):
            log.warning("boot sync: the re-homing pass did not finish in time; starting "
                        "runtimes anyway")
        gate = asyncio.Semaphore(ctx.config.boot_concurrency)

        async def gated(device: str) -> None:
            async with gate:
                await start_one(ctx, device, tally)
        await asyncio.gather(*(gated(d) for d in wanted))
    seconds = round(time.monotonic() - since, 3)
    log.info("boot sync (%s) done after %.1f s: %d runtime(s), %d started, %d already "
             "running, %d kept stopped, %d in crash loop, %d failed; network monitor %s "
             "(waited %.1f s)", reason, seconds, tally.runtimes, tally.started,
             tally.already_running, tally.kept_stopped, tally.crash_loop, tally.failed,
             netmon, waited)
    ctx.publish(LifecycleBoot(reason, tally.runtimes, tally.started, tally.already_running,
                              tally.kept_stopped, tally.crash_loop, tally.failed, netmon,
                              round(waited, 3), seconds))
    return tally
