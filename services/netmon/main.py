"""Command line entry point: serve, or ``--check`` as a container healthcheck.

Configuration is the agent's shared `Config` (``--state-dir``/``ORCH_STATE_DIR``,
``--log-level``/``ORCH_LOG_LEVEL``, ...) plus netmon's own flags.  Logs go to stderr and
to the daily files under the state directory, next to the agent's.

Exit codes: 0 clean stop (SIGTERM/SIGINT) or healthy; 1 startup failure or unhealthy;
2 bad command line or setting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common.config import Config, ConfigError
from common.logs import setup_logging
from common.netmon_proto import DISCOVERY, SOCKET_NAME
from services.netmon.discovery import DiscoveryError
from services.netmon.links import LinkWatch
from services.netmon.monitor import DEFAULT_DEBOUNCE, Monitor
from services.netmon.serial import SerialWatch
from services.netmon.server import Server, ServerError

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 5.0
_CHECK_MAX_LINE = 1 << 20


def build_parser() -> argparse.ArgumentParser:
    """Netmon's own flags; the shared ones (--state-dir, --log-level, ...) and their
    `ORCH_*` environment defaults come from `common.config.Config`."""
    parser = argparse.ArgumentParser(
        prog="orchestrator-netmon", description="Network monitor sidecar"
    )
    parser.add_argument(
        "--debounce",
        type=float,
        default=DEFAULT_DEBOUNCE,
        help="seconds an interface must be quiet before its change is announced",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="healthcheck: read the discovery line from the socket, exit 0 or 1",
    )
    parser.add_argument("--check-timeout", type=float, default=CHECK_TIMEOUT)
    parser.add_argument("--serial-poll", type=float, default=1.0,
                        help="seconds between looks at the serial by-id directory")
    return parser


def load(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    """Config and flags; exits 2 (like argparse) on a bad command line or setting."""
    parser = build_parser()
    try:
        config, args = Config.load(argv, parser=parser)
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: configuration error: {exc}\n")
    if args.debounce < 0:
        parser.error("--debounce must not be negative")
    if args.serial_poll <= 0:
        parser.error("--serial-poll must be positive")
    return config, args


def check(path: Path, timeout: float) -> int:
    """Healthy when the socket answers with a discovery line within ``timeout``."""
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            while b"\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no complete discovery line in time")
                if len(buf) > _CHECK_MAX_LINE:
                    raise ValueError("first line longer than 1 MiB")
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed before a discovery line")
                buf += chunk
        message = json.loads(buf.split(b"\n", 1)[0])
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {path}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(message, dict) or message.get("type") != DISCOVERY:
        print("unhealthy: first line is not a network_discovery", file=sys.stderr)
        return 1
    count = len(message.get("data", {}).get("interfaces", []))
    print(f"healthy: {count} interface(s)")
    return 0


async def serve(state_dir: Path, debounce: float, group: int | None = None,
                serial_dir: Path | None = None, serial_poll: float = 1.0) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    state_dir.mkdir(parents=True, exist_ok=True)
    # The lambda binds late: the server asks the monitor for its state only once serving.
    server = Server(state_dir / SOCKET_NAME, lambda: monitor.interfaces(), group=group,
                    serial=None if serial_dir is None else lambda: serial_devices(),
                    links=lambda: links.links)
    monitor = Monitor(server.broadcast, debounce=debounce)
    serial = (SerialWatch(serial_dir, server.broadcast_serial, interval=serial_poll)
              if serial_dir is not None else None)

    links = LinkWatch(server.broadcast_links, interval=serial_poll)

    def serial_devices() -> list[dict[str, object]]:
        return serial.devices if serial is not None else []

    try:
        await server.bind()
        await monitor.start()
        if serial is not None:
            serial.start()
        links.start()
        await server.serve()
    except (ServerError, DiscoveryError, OSError) as exc:
        log.error("cannot start: %s", exc)
        if serial is not None:
            await serial.stop()
        await links.stop()
        await monitor.stop()
        await server.stop()
        return 1
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(monitor.wait())
    await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if failed.done():
        log.error("monitoring failed: %r", failed.exception())
        code = 1
    else:
        log.info("stopping")
    for task in (stopped, failed):
        task.cancel()
    if serial is not None:
        await serial.stop()
    await links.stop()
    await server.stop()
    await monitor.stop()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    config, args = load(argv)
    path = config.state_dir / SOCKET_NAME
    if args.check:
        # A healthcheck runs every few seconds: stderr only, nothing in the daily files.
        setup_logging(config, "netmon", files=False)
        return check(path, args.check_timeout)
    setup_logging(config, "netmon")
    return asyncio.run(serve(config.state_dir, args.debounce, config.agent_gid(),
                             config.serial_by_id_dir, args.serial_poll))
