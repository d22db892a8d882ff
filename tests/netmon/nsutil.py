"""Helpers for netmon tests: namespaces, a netmon subprocess, a line reader.

Everything here touches only network namespaces the tests create, veth ends named
``oat*`` (or ``vethoat*`` when a filtered name is the point) and documentation subnets.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testkit.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
_names = itertools.count()


def unique_ns() -> str:
    return f"oatnm{os.getpid()}x{next(_names)}"


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=10)


def ip_batch(ns: str, commands: list[str]) -> None:
    """Several changes in one process, so they land within milliseconds."""
    subprocess.run(
        ["ip", "-n", ns, "-batch", "-"],
        input="\n".join(commands) + "\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=30,
    )


def link_info(ns: str, name: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ip", "-n", ns, "-j", "link", "show", "dev", name],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return dict(json.loads(out)[0])


class LineClient:
    """Blocking JSON-lines reader with a deadline on every read."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self._buf = b""
        self.seen: list[dict[str, Any]] = []
        self.links: list[dict[str, Any]] = []

    def close(self) -> None:
        self.sock.close()

    def read(self, timeout: float) -> dict[str, Any] | None:
        """Next interface message, or None when nothing complete arrives within
        ``timeout``.  `ethernet_links` lines (the links watch, sent after the discovery and
        on sysfs changes) are kept in ``links`` and skipped: these tests are about the
        interface records."""
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_line(deadline)
            if message is None or message.get("type") != "ethernet_links":
                return message
            self.links.append(message)

    def _read_line(self, deadline: float) -> dict[str, Any] | None:
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("netmon closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        self.seen.append(message)
        return message

    def discovery(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        message = self.read(timeout)
        assert message is not None, "no discovery line"
        assert message["type"] == "network_discovery", message
        assert set(message["data"]) >= {"interfaces", "timestamp"}
        return list(message["data"]["interfaces"])

    def changes_for(self, name: str, timeout: float) -> list[dict[str, Any]]:
        """All change events for ``name`` arriving within ``timeout``."""
        deadline = time.monotonic() + timeout
        got = []
        while (remaining := deadline - time.monotonic()) > 0:
            message = self.read(remaining)
            if message is None:
                break
            if (
                message["type"] == "network_change"
                and message["data"]["interface"] == name
            ):
                got.append(message["data"])
        return got

    def wait_change(
        self, name: str, pred: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = self.read(remaining)
            if message is None:
                break
            data = message["data"]
            if (
                message["type"] == "network_change"
                and data["interface"] == name
                and pred(data)
            ):
                return dict(data)
        raise AssertionError(
            f"no matching change for {name} within {timeout}s: {self.seen}"
        )


def addresses(iface: dict[str, Any]) -> list[str]:
    return [f"{a['address']}/{a['prefixlen']}" for a in iface["ipv4_addresses"]]


class NetmonProcess:
    """``python -m services.netmon`` inside namespace ``ns``."""

    def __init__(self, ns: str, state_dir: Path, debounce: float | None = 0.3) -> None:
        self.ns = ns
        self.state_dir = state_dir
        self.debounce = debounce
        self.sock_path = state_dir / "netmon.sock"
        self.log_path = state_dir / f"netmon-{next(_names)}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> NetmonProcess:
        cmd = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "services.netmon"]
        cmd += ["--state-dir", str(self.state_dir), "--log-level", "DEBUG"]
        if self.debounce is not None:
            cmd += ["--debounce", str(self.debounce)]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("ORCH_STATE_DIR", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            wait_for(self._ready, 15, f"netmon to serve (log: {self.log()})", interval=0.02)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"netmon exited {self.proc.returncode}: {self.log()}")
        try:
            client = LineClient(self.sock_path, timeout=1.0)
        except OSError:
            return False
        try:
            return client.read(1.0) is not None
        finally:
            client.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def client(self) -> LineClient:
        return LineClient(self.sock_path)

    def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit()

    def kill(self) -> None:
        """SIGKILL the python process itself (``ip netns exec`` execs into it)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
