"""Helpers shared by the tests: bounded waiting, private directories, agent processes."""

from __future__ import annotations

import asyncio
import inspect
import io
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.bus import Subscriber
    from common.wire import Envelope

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class _Poll:
    """The bookkeeping of one bounded wait: the deadline, the last error, the message."""

    def __init__(self, timeout: float, what: str,
                 ignore: tuple[type[BaseException], ...]) -> None:
        self.deadline = time.monotonic() + timeout
        self.timeout, self.what, self.ignore = timeout, what, ignore
        self.last_error: BaseException | None = None

    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def failure(self) -> AssertionError:
        detail = f" (last error: {self.last_error!r})" if self.last_error else ""
        return AssertionError(f"timed out after {self.timeout} s waiting for {self.what}{detail}")


def wait_for(condition: Callable[[], Any], timeout: float, what: str = "condition", *,
             interval: float = 0.05, ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll until `condition()` is truthy and return its value; after `timeout` seconds
    fail with an AssertionError naming `what`.  Exceptions of the `ignore` types count as
    "not yet" (the last one is shown on failure); any other propagates at once."""
    poll = _Poll(timeout, what, ignore)
    while True:
        try:
            value = condition()
            if value:
                return value
        except ignore as exc:
            poll.last_error = exc
        if poll.expired():
            raise poll.failure()
        time.sleep(interval)


async def async_wait_for(condition: Callable[[], Any], timeout: float, what: str = "condition",
                         *, interval: float = 0.05,
                         ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """`wait_for` in a coroutine: the loop keeps running between polls, and `condition`
    may be a plain function or return an awaitable."""
    poll = _Poll(timeout, what, ignore)
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except ignore as exc:
            poll.last_error = exc
        if poll.expired():
            raise poll.failure()
        await asyncio.sleep(interval)


async def heard(sub: Subscriber, timeout: float) -> AsyncIterator[Envelope]:
    """Each valid message `sub` receives from now until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        envelope = await sub.recv(min(remaining, 1.0))
        if envelope is not None:
            yield envelope


@contextmanager
def short_tmpdir(prefix: str = "oat") -> Iterator[Path]:
    """A private directory with a short path (ipc socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def agent_env(base: Path, **extra: str) -> dict[str, str]:
    """Environment for agent processes whose state, bus and credentials live under
    `base`."""
    env = dict(os.environ)
    env.update({
        "ORCH_STATE_DIR": str(base / "state"),
        "ORCH_RUN_DIR": str(base / "run"),
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        # Never the product cloud from a test: a closed loopback port and no credentials,
        # unless a test points the gateway at its own development cloud.
        "ORCH_CLOUD_URL": "https://127.0.0.1:9",
        "ORCH_MTLS_DIR": str(base / "mtls"),
        # supervisord.conf runs gateway and netbridge as this user (the image's is
        # unprivileged; here it is whoever runs the tests).
        "ORCH_PROGRAM_USER": pwd.getpwuid(os.geteuid()).pw_name,
        # The test LANs have no DHCP server: "dhcp" vNICs there keep the engine's address
        # unless a test serves the LAN and turns leases on (tests/dhcp/test_executor.py).
        "ORCH_DHCP_LEASES": "off",
    })
    env.update(extra)
    return env


def start_module(module: str, env: dict[str, str], log: Path,
                 *args: str) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")  # noqa: SIM115 - the child keeps it; closed with the process
    try:
        return subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=ROOT,
                                stdout=handle, stderr=subprocess.STDOUT)
    finally:
        handle.close()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout)


def zip_program(members: Mapping[str, bytes | str]) -> bytes:
    """A PLC program archive (what `upload-file` takes) holding `members`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()
