"""The agent suite under a real supervisord, in a private directory, for tests."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testkit.helpers import BIN, ROOT, agent_env, short_tmpdir, stop_process, wait_for

PROGRAMS = ("gateway", "executor", "metrics", "netbridge")


class Suite:
    def __init__(self, base: Path, **env: str) -> None:
        self.base = base
        self.env = agent_env(base, **env)
        (base / "run").mkdir(mode=0o700, exist_ok=True)
        self.log = base / "supervisord.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "supervisord"), "-c", str(ROOT / "supervisord.conf")],
                # supervisord itself as the image's entrypoint starts it
                env={**self.env, "PYTHONOPTIMIZE": "2"}, cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT)

    def ctl(self, *args: str) -> str:
        result = subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(ROOT / "supervisord.conf"), *args],
            env=self.env, capture_output=True, text=True, timeout=30)
        return result.stdout

    def status(self) -> dict[str, tuple[str, int | None]]:
        """Program name → (state, pid)."""
        states: dict[str, tuple[str, int | None]] = {}
        for line in self.ctl("status").splitlines():
            parts = line.split()
            if len(parts) >= 2:
                pid = re.search(r"pid (\d+)", line)
                states[parts[0]] = (parts[1], int(pid.group(1)) if pid else None)
        return states

    def running_pids(self) -> dict[str, int]:
        """Program → pid of every RUNNING program, and supervisord's while it lives."""
        found = {name: pid for name, (state, pid) in self.status().items()
                 if state == "RUNNING" and pid}
        if self.proc is not None and self.proc.poll() is None:
            found["supervisord"] = self.proc.pid
        return found

    def wait_running(self, timeout: float = 30, programs: tuple[str, ...] = PROGRAMS) -> dict[
            str, tuple[str, int | None]]:
        def all_running() -> dict[str, tuple[str, int | None]] | None:
            states = self.status()
            ok = all(states.get(p, ("", None))[0] == "RUNNING" for p in programs)
            return states if ok else None
        return wait_for(all_running, timeout, interval=0.2, what=f"{programs} RUNNING")  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc, 30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_suite(**env: str) -> Iterator[Suite]:
    """A suite in a private directory with every program RUNNING; stopped afterwards."""
    with short_tmpdir() as base:
        (base / "state").mkdir()
        s = Suite(base, **env)
        s.start()
        try:
            s.wait_running()
            yield s
        finally:
            s.stop()


def bin_path(name: str) -> str:
    return str(BIN / name)
