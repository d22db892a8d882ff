"""The watchdog: a runtime that dies without being asked to is started again by the agent,
after a short delay that doubles with every exit in the window; one that dies
`crash_loop_exits` times within `crash_loop_window` seconds is left stopped (`crash_loop`)
until the cloud starts it again.

What counts as unexpected: the live view sees a runtime go from running to not running
(the same container) while no operation of ours holds the device (`stop_device`,
`restart_device`, delete, create, re-homing all do), its desired state is `running`, no
self-destruct is under way, and the view is not being rebuilt (a change seen while the
executor was away, or the engine was, is the boot sync's to handle: `bootsync.py`).  Any
exit code counts, 0 included, and an OOM kill is recorded as such — except an exit whose
restart finds the engine gone: the engine took the runtime down with it, and that exit is
taken back (`engine_took_it`).

The restart itself re-checks all of this when its delay is over: a runtime the cloud
started or stopped meanwhile is left alone.  Published: `lifecycle.restart_scheduled`,
`lifecycle.restart_done`, `lifecycle.crash_loop`, `lifecycle.desired`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from common.messages import (
    LifecycleCrashLoop,
    LifecycleDesired,
    LifecycleRestarted,
    LifecycleRestartScheduled,
)
from services.executor.context import QUICK, Context
from services.executor.engine import containers
from services.executor.engine.liveview import ContainerView
from services.executor.errors import Busy, DockerUnavailable
from services.executor.runtime import live, unleased
from services.executor.runtime.create import error_text
from services.executor.runtime.intents import RUNNING, STOPPED, BadDevice, now_iso

log = logging.getLogger(__name__)

OPERATION = "watchdog"
# Operations that only start a runtime: an exit while one holds the device is a crash.
STARTS = (OPERATION, "boot_start")
SHOWN_EXITS = 10


async def set_desired(ctx: Context, device: str, desired: str, reason: str) -> None:
    """Record what the cloud asked for (`start_device` / `restart_device`: running, and
    the crash-loop guard lifted; `stop_device`: stopped) before the engine is asked."""
    try:
        intent = ctx.intents.get(device)
    except BadDevice:
        return
    changed = intent.desired != desired or intent.crash_loop
    if not changed and not intent.exits and ctx.intents.known(device):
        return
    intent.desired, intent.reason = desired, reason
    intent.crash_loop, intent.crash_loop_since = False, None
    intent.exits = []
    if changed:
        intent.changed_at = now_iso()
    await ctx.save_intent(intent)
    if changed:
        log.info("desired state of %s: %s (%s)", device, desired, reason)
        ctx.publish(LifecycleDesired(device, desired, reason))


def lifecycle_block(ctx: Context, device: str) -> dict[str, Any]:
    """The `lifecycle` block of `get_device_status`."""
    intent = ctx.intents.get(device)
    known = ctx.intents.known(device)  # no record: should run since its create
    block: dict[str, Any] = {"state": intent.state, "desired": intent.desired,
                             "reason": intent.reason,
                             "changed_at": intent.changed_at if known else None,
                             "exits": intent.public_exits(SHOWN_EXITS)}
    if intent.crash_loop:
        block["crash_loop_since"] = intent.crash_loop_since
    return block


class Watchdog:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._timers: dict[str, asyncio.Task[Any]] = {}
        self._counted: dict[str, dict[str, Any]] = {}  # device → the exit last counted

    def on_view_change(self, old: ContainerView | None, new: ContainerView | None) -> None:
        """Live-view hook (on the loop)."""
        if old is None or new is None or old.id != new.id or not old.running or new.running:
            return
        ctx = self.ctx
        if ctx.view.syncing or ctx.destroying:
            return
        if ctx.ops.current(new.name) not in (None, *STARTS):
            return  # an operation of ours stopped it (a restart of our own does not)
        intent = ctx.intents.get(new.name)
        if intent.desired != RUNNING or intent.crash_loop:
            return
        task = asyncio.ensure_future(self._died(new))
        task.set_name(f"watchdog-{new.name}")
        self._track(new.name, task)

    def _track(self, device: str, task: asyncio.Task[Any]) -> None:
        previous = self._timers.get(device)
        if previous is not None and previous is not task:
            previous.cancel()
        self._timers[device] = task

        def done(t: asyncio.Task[Any]) -> None:
            if self._timers.get(device) is t:
                self._timers.pop(device, None)
            if not t.cancelled() and t.exception() is not None:
                log.error("watchdog of %s failed", device, exc_info=t.exception())
        task.add_done_callback(done)

    def close(self) -> None:
        for task in list(self._timers.values()):
            task.cancel()

    async def _died(self, view: ContainerView) -> None:
        exit_code, oom, at = view.exit_code, view.oom_killed, view.finished_at
        error: str | None = None
        try:
            while await self.record_exit(view.name, exit_code, oom, at, error):
                try:
                    failed = await self.restart(view.name)
                except DockerUnavailable as exc:
                    await self.engine_took_it(view.name, exc.text)
                    return
                if failed is None:
                    return
                # A start that failed, or a runtime gone again before we looked, is an exit.
                exit_code, oom, at, error = failed
        finally:
            self._counted.pop(view.name, None)

    async def record_exit(self, device: str, exit_code: int | None, oom_killed: bool,
                          at: float | None = None, error: str | None = None) -> bool:
        """Count one unexpected exit; then either wait out the restart delay (True: restart
        now) or apply the guard (False)."""
        ctx, cfg = self.ctx, self.ctx.config
        intent = ctx.intents.get(device)
        self._counted[device] = intent.add_exit(exit_code, oom_killed, at, error)
        recent = intent.recent(cfg.crash_loop_window)
        if len(recent) >= cfg.crash_loop_exits:
            intent.crash_loop = True
            intent.crash_loop_since = now_iso()
            await ctx.save_intent(intent)
            exits = intent.public_exits(len(recent))
            log.error("runtime %s exited %d times within %.0f s (last exit code %s%s); left "
                      "stopped until the cloud starts it again", device, len(recent),
                      cfg.crash_loop_window, exit_code, ", OOM-killed" if oom_killed else "")
            ctx.publish(LifecycleCrashLoop(device, exits))
            return False
        await ctx.save_intent(intent)
        delay = min(cfg.restart_backoff_max, cfg.restart_delay * 2 ** (len(recent) - 1))
        log.warning("runtime %s exited unexpectedly (exit code %s%s%s); restart in %.1f s "
                    "(%d exit(s) within %.0f s)", device, exit_code,
                    ", OOM-killed" if oom_killed else "", f", {error}" if error else "",
                    delay, len(recent), cfg.crash_loop_window)
        ctx.publish(LifecycleRestartScheduled(device, delay, exit_code, oom_killed, len(recent)))
        await asyncio.sleep(delay)
        return True

    async def engine_took_it(self, device: str, why: str) -> None:
        """The engine was gone when the restart was due: the runtime went down with it
        (dockerd stops every container on its way out, and its event stream carries those
        exits until it is gone), so the exit just counted is taken back — an engine
        restart, a Docker upgrade, is not the runtime crashing, and must not bring it
        nearer the crash-loop guard.  The boot sync after the reconnection starts it."""
        ctx = self.ctx
        entry = self._counted.pop(device, None)
        intent = ctx.intents.get(device)
        if entry is not None and any(e is entry for e in intent.exits):
            intent.exits = [e for e in intent.exits if e is not entry]
            await ctx.save_intent(intent)
        log.warning("watchdog restart of %s postponed: %s; the exit is put down to the "
                    "engine going away, the boot sync after the reconnection starts it",
                    device, why)

    async def restart(self, device: str
                      ) -> tuple[int | None, bool, float | None, str | None] | None:
        """Start the runtime if it should still run; None when done (or not needed),
        else the exit to count: (exit code, OOM-killed, when, error).  DockerUnavailable
        when the engine is gone."""
        ctx = self.ctx
        intent = ctx.intents.get(device)
        if intent.desired != RUNNING or intent.crash_loop or ctx.destroying:
            return None
        seen = ctx.view.get(device)
        if seen is not None and seen.running:
            # Started again meanwhile (the engine's own restart): nothing to do, and the
            # device is not claimed, so a command arriving now is not refused as busy.
            return None
        try:
            ctx.ops.begin(device, OPERATION)
        except Busy as exc:
            log.info("watchdog restart of %s skipped: %s", device, exc.text)
            return None
        try:
            view = await ctx.view.refresh(device)
            if view is None or view.running:
                return None  # deleted, or started by someone else meanwhile
            await unleased.before_start(ctx, device)
            await ctx.docker.call(containers.start, view.id, budget=QUICK)
            view = await ctx.view.refresh(device)
            if view is None:
                return None
            if not view.running:
                text = f"exited right after its start (exit code {view.exit_code})"
                ctx.publish(LifecycleRestarted(device, False, text))
                return view.exit_code, view.oom_killed, view.finished_at, text
            await live.after_start(ctx, device)
            log.info("runtime %s restarted by the watchdog", device)
            ctx.publish(LifecycleRestarted(device, True))
            return None
        except DockerUnavailable:
            raise  # the engine went away with it: engine_took_it()
        except Exception as exc:
            text = error_text(exc)
            log.warning("watchdog restart of %s failed: %s", device, text)
            ctx.publish(LifecycleRestarted(device, False, text))
            return None, False, None, text
        finally:
            ctx.ops.end(device)


__all__ = ["STOPPED", "Watchdog", "lifecycle_block", "set_desired"]
