"""orchestrator-health: is the agent suite healthy?  Exit 0 when it is, 1 when not.

Healthy means both:
* every program supervisord runs is RUNNING (asked over supervisord's own control socket
  in the run directory), and
* every agent process (gateway, executor, metrics, netbridge) has published its
  `svc.<name>.alive` beat on the bus within the last `--window` seconds (a RUNNING
  process whose event loop is stuck stops beating).

Prints one line saying why, which `docker inspect` shows as the health log.  The image's
HEALTHCHECK runs it; it is also handy by hand: `docker exec orchestrator_agent
orchestrator-health`.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
import xmlrpc.client
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import zmq

from common import wire
from common.bus import SERVICES, Endpoints
from common.config import Config, ConfigError

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_CONFIG = 0, 1, 2
DEFAULT_WINDOW = 6.0  # three beats at the default 2 s beat interval


def program_states(run_dir: Path, timeout: float) -> dict[str, str]:
    """{process name: state name} from supervisord's XML-RPC interface."""
    from supervisor.xmlrpc import SupervisorTransport  # only this command needs it

    transport = SupervisorTransport(None, None, serverurl=f"unix://{run_dir}/supervisor.sock")
    proxy: Any = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # the transport opens its socket without one
    try:
        infos = proxy.supervisor.getAllProcessInfo()
    finally:
        socket.setdefaulttimeout(previous)
    return {str(info["name"]): str(info["statename"]) for info in infos}


def wait_beats(sock: zmq.Socket[bytes], run_dir: Path, names: Iterable[str],
               window: float) -> set[str]:
    """The names among `names` whose alive beat arrives on `sock` (a SUB socket made by
    `main()`) within `window` seconds."""
    wanted = set(names)
    seen: set[str] = set()
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"svc.")
    for endpoint in Endpoints(run_dir).all_pubs(sorted(wanted)):
        sock.connect(endpoint)
    deadline = time.monotonic() + window
    while seen != wanted:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not sock.poll(int(remaining * 1000) + 1):
            break
        try:
            envelope = wire.decode(sock.recv_multipart())
        except wire.WireError:
            continue
        source = envelope.header.source
        if source in wanted and envelope.topic == f"svc.{source}.alive":
            seen.add(source)
    return seen


def check(sock: zmq.Socket[bytes], run_dir: Path, window: float,
          timeout: float) -> tuple[bool, str]:
    """(healthy, why)."""
    try:
        states = program_states(run_dir, timeout)
    except (OSError, xmlrpc.client.Error) as exc:
        return False, f"supervisord does not answer on {run_dir}/supervisor.sock: {exc}"
    missing = [name for name in SERVICES if name not in states]
    if missing:
        return False, f"not supervised: {', '.join(missing)}"
    down = sorted(f"{name} {state}" for name, state in states.items() if state != "RUNNING")
    if down:
        return False, f"not RUNNING: {', '.join(down)}"
    seen = wait_beats(sock, run_dir, SERVICES, window)
    silent = [name for name in SERVICES if name not in seen]
    if silent:
        return False, f"no alive beat within {window:g} s from: {', '.join(silent)}"
    return True, f"healthy: {len(states)} programs RUNNING, {len(seen)} beating"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="orchestrator-health", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW,
                        help="seconds to wait for every process's alive beat")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="seconds for supervisord to answer")
    try:
        config, args = Config.load(argv, parser=parser)
    except ConfigError as exc:
        print(f"orchestrator-health: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    try:
        healthy, why = check(sock, config.run_dir, args.window, args.timeout)
    finally:
        sock.close(linger=0)
        ctx.term()
    print(why)
    return EXIT_HEALTHY if healthy else EXIT_UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())
