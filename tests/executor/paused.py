"""The executor for crash tests: halts an operation at a named point until it is killed.

`python -m tests.executor.paused` runs the real executor with one function of its
operation code wrapped, chosen by `OAT_PAUSE_AT` (the production code knows nothing of it):

* `creating_networks` — a create, right after the journal records its networks;
* `container_created` — a create, once its container is made and recorded, before its
  start;
* `creating_container` — a create, after its last step and before it is marked done;
* `rehome_old_removed` — a move, between removing the old network and creating the new.

A halted task waits for ever; the test then kills the process (SIGKILL) and restarts it
without the variable, as a crash would leave things.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from services.executor.context import Context
from services.executor.main import main
from services.executor.rehome import move
from services.executor.runtime import create
from services.executor.runtime.journal import Operation

ENV = "OAT_PAUSE_AT"
log = logging.getLogger(__name__)

# After a journal write of a create whose progress first carries this mark.
CREATE_MARKS = {"creating_networks": "networks_done"}


async def halt(point: str) -> None:
    log.warning("test pause at %s", point)
    await asyncio.Event().wait()


def pause_after_save(point: str, mark: str) -> None:
    original = Context.save_op

    async def save_op(self: Context, op: Operation) -> None:
        await original(self, op)
        if op.operation == "create" and op.progress.get(mark):
            await halt(point)

    Context.save_op = save_op  # type: ignore[method-assign]


def wrap(module: Any, name: str, point: str) -> None:
    """Halt once the named function of `module` has returned."""
    original: Callable[..., Any] = getattr(module, name)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        await original(*args, **kwargs)
        await halt(point)

    setattr(module, name, wrapper)


def wrap_before(module: Any, name: str, point: str) -> None:
    """Halt when the named function of `module` is called, before it runs."""

    async def wrapper(*_args: Any, **_kwargs: Any) -> Any:
        await halt(point)

    setattr(module, name, wrapper)


def install(point: str) -> None:
    if point in CREATE_MARKS:
        pause_after_save(point, CREATE_MARKS[point])
    elif point == "container_created":
        wrap_before(create, "start_runtime", point)  # the container's id is written first
    elif point == "creating_container":
        wrap(create, "complete", point)
    elif point == "rehome_old_removed":
        wrap(move, "leave_old", point)
    elif point:
        raise SystemExit(f"{ENV}: unknown pause point {point!r}")


if __name__ == "__main__":
    install(os.environ.get(ENV, ""))
    sys.exit(main())
