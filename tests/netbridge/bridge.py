"""Helpers for netbridge tests: the process, bus probes, a scripted fake netmon."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq.asyncio

from common import wire
from common.bus import Endpoints, RpcClient, Subscriber
from testkit.helpers import agent_env, async_wait_for, heard, start_module

# Short beats and reconnects so state changes show within a second or two.
FAST_ENV = {"ORCH_BEAT_INTERVAL": "0.3", "ORCH_RECONNECT_MAX": "0.5", "ORCH_LOG_LEVEL": "DEBUG"}


class BridgeProcess:
    """`python -m services.netbridge` with state and bus under `base`."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.env = agent_env(base, **FAST_ENV)
        self.log_path = base / "netbridge.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_codes: list[int] = []

    def start(self) -> BridgeProcess:
        self.proc = start_module("services.netbridge", self.env, self.log_path)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.exit_codes.append(code)
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)


class Bus:
    """A request client and a subscriber on the netbridge's endpoints."""

    def __init__(self, ctx: zmq.asyncio.Context, run_dir: Path) -> None:
        endpoints = Endpoints(run_dir)
        self.rpc = RpcClient(ctx, endpoints.rpc("netbridge"), wire.Stamper("test"), 2.0)
        self.sub = Subscriber(ctx, [endpoints.pub("netbridge")], ["net.", "svc.netbridge."])

    async def call(self, method: str, params: dict[str, Any] | None = None,
                   timeout: float = 2.0) -> Any:
        return await self.rpc.call(method, params or {}, timeout)

    async def wait_call(self, method: str, cond: Callable[[Any], bool], timeout: float,
                        params: dict[str, Any] | None = None) -> Any:
        """Call `method` until its result satisfies `cond`; bounded."""
        last: Any = None

        async def satisfied() -> Any:
            nonlocal last
            last = await self.call(method, params, timeout=1.0)
            return last if cond(last) else None
        try:
            return await async_wait_for(satisfied, timeout, f"{method} to satisfy the condition",
                                        ignore=(Exception,))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last result {last!r}") from None

    async def next_event(self, topic: str, cond: Callable[[dict[str, Any]], bool],
                         timeout: float) -> dict[str, Any]:
        """The body of the next message on `topic` that satisfies `cond`."""
        async for envelope in heard(self.sub, timeout):
            if envelope.topic == topic and cond(envelope.body):
                return envelope.body
        raise AssertionError(f"no matching {topic} within {timeout} s")

    async def beat(self, cond: Callable[[dict[str, int]], bool], timeout: float) -> dict[
            str, int]:
        """Counters of the first liveness beat whose counters satisfy `cond`."""
        body = await self.next_event("svc.netbridge.alive", lambda b: cond(b["counters"]),
                                     timeout)
        return dict(body["counters"])

    def close(self) -> None:
        self.rpc.close()
        self.sub.close()


class ScriptedNetmon:
    """A Unix socket server in a thread that plays bytes to each client it accepts.

    `script` is sent to every connection; the connection then stays open until
    `hang_up()` or `stop()`.  Used to feed the bridge what the real netmon never sends."""

    def __init__(self, path: Path, script: list[bytes]) -> None:
        self.path = path
        self.script = script
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(4)
        self._server.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            try:
                for chunk in self.script:
                    conn.sendall(chunk)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._conns.append(conn)
                self.accepted += 1

    def send(self, data: bytes) -> None:
        """Send to the newest connection."""
        with self._lock:
            self._conns[-1].sendall(data)

    def hang_up(self) -> None:
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def stop(self) -> None:
        self._stop.set()
        self.hang_up()
        self._server.close()
        self._thread.join(5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
