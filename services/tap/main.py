"""orchestrator-tap: watch the agent's bus.

Examples:
  orchestrator-tap                     everything
  orchestrator-tap metrics. svc.       only these topic prefixes
  orchestrator-tap --source executor   only what the executor publishes
  orchestrator-tap --json --count 10   ten messages as JSON lines, then exit
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import zmq.asyncio

from common import dirs, wire
from common.bus import SERVICES, Endpoints, Subscriber
from common.config import Config, ConfigError

EXIT_OK, EXIT_CONFIG = 0, 2


def format_line(envelope: wire.Envelope, gap: int, as_json: bool, width: int = 240) -> str:
    header = envelope.header
    if as_json:
        record: dict[str, Any] = {
            "time": header.timestamp, "source": header.source, "topic": envelope.topic,
            "seq": header.seq, "id": header.msg_id, "body": envelope.body,
        }
        if header.reply_to:
            record["reply_to"] = header.reply_to
        if gap:
            record["gap"] = gap
        return json.dumps(record, default=repr, separators=(",", ":"))
    stamp = dt.datetime.fromtimestamp(header.timestamp).strftime("%H:%M:%S.%f")[:-3]
    body = json.dumps(envelope.body, default=repr, separators=(",", ":"))
    if len(body) > width:
        body = body[: width - 3] + "..."
    gap_note = f" GAP({gap} missed)" if gap else ""
    return f"{stamp} {header.source:<9} {envelope.topic:<28} #{header.seq}{gap_note} {body}"


async def tap(sub: Subscriber, sources: Sequence[str], as_json: bool, count: int | None,
              seconds: float | None, out: TextIO) -> int:
    """Show what `sub` receives until a signal, `count` messages or `seconds` pass."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + seconds if seconds is not None else None
    shown = 0
    try:
        while not stop.is_set():
            wait = 0.5
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            envelope = await sub.recv(wait)
            if envelope is None:
                continue
            if sources and envelope.header.source not in sources:
                continue
            gap = sub.last_gap[2] if sub.last_gap else 0
            out.write(format_line(envelope, gap, as_json) + "\n")
            out.flush()
            shown += 1
            if count is not None and shown >= count:
                break
    except BrokenPipeError:  # `orchestrator-tap | head` is a normal way to use it
        pass
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="orchestrator-tap", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefixes", nargs="*", help="topic prefixes to show (default: all)")
    parser.add_argument("--source", action="append", default=[], choices=SERVICES,
                        help="only messages from this process (repeatable)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--count", type=int, help="exit after this many messages")
    parser.add_argument("--seconds", type=float, help="exit after this many seconds")
    try:
        config, args = Config.load(argv, parser=parser)
    except ConfigError as exc:
        print(f"orchestrator-tap: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if not config.run_dir.is_dir():
        print(f"orchestrator-tap: no bus at {config.run_dir} (is the agent running? set "
              f"ORCH_RUN_DIR or --run-dir)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        # Sockets in a directory another user controls could be anyone's bus.
        dirs.check_run_dir(config.run_dir, config.agent_gid())
    except dirs.UnsafeDirectory as exc:
        print(f"orchestrator-tap: refused: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    ctx = zmq.asyncio.Context()
    sub = Subscriber(ctx, Endpoints(config.run_dir).all_pubs(SERVICES), args.prefixes or ("",))
    try:
        return asyncio.run(tap(sub, args.source, args.json, args.count, args.seconds,
                               sys.stdout))
    finally:
        sub.close()
        ctx.term()


if __name__ == "__main__":
    sys.exit(main())
