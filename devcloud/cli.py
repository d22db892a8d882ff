"""``python -m devcloud`` / ``orchestrator-devcloud``: run and drive the development cloud.

Exit codes: 0 success; 1 error; 2 usage; 3 no ack in time; 4 agent not connected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any, TypeAlias

import aiohttp

from devcloud import pki
from devcloud.admin import TOKEN_FILE
from devcloud.adminclient import AdminClient, read_token
from devcloud.enroll import enroll
from devcloud.errors import AckTimeout, AgentNotConnected, DevCloudError
from devcloud.server import (
    DEFAULT_ADMIN_PORT,
    DEFAULT_PORT,
    DEFAULT_PROVISION_PORT,
    PKI_DIR,
    DevCloud,
    read_run_file,
)

log = logging.getLogger(__name__)

EXIT_ERROR, EXIT_TIMEOUT, EXIT_NOT_CONNECTED = 1, 3, 4
DEFAULT_DIR = "devcloud-data"


def _json_out(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True), flush=True)


# ------------------------------------------------------------------ commands


def cmd_init(args: argparse.Namespace) -> int:
    paths = pki.init_pki(Path(args.dir) / PKI_DIR, args.san, force=args.force)
    _json_out({"ca_cert": str(paths.ca_cert), "server_cert": str(paths.server_cert)})
    return 0


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    cloud = DevCloud(
        args.dir,
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        provision_port=args.provision_port,
        server_names=args.san,
        id_ttl=args.id_ttl,
        command_timeout=args.command_timeout,
    )
    await cloud.start()
    try:
        # One JSON line on stdout: a parent process learns the bound ports from it.
        print(json.dumps(cloud.info()), flush=True)
        await stop.wait()
    finally:
        await cloud.stop()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_serve(args))
    except OSError as exc:
        print(f"devcloud: cannot listen: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _admin(args: argparse.Namespace) -> AdminClient:
    run_dir = Path(args.dir)
    token = read_token(Path(args.admin_token_file) if args.admin_token_file
                       else run_dir / TOKEN_FILE)
    if args.admin_url:
        return AdminClient(args.admin_url, token)
    if (run_dir / "run.json").exists():
        return AdminClient(read_run_file(run_dir)["admin_url"], token)
    return AdminClient(f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}", token)


def cmd_agents(args: argparse.Namespace) -> int:
    agents = _admin(args).agents()
    if args.json:
        _json_out(agents)
        return 0
    print(f"{'ID':<10} {'CONNECTED':<9} {'HEARTBEATS':>10}  LAST HEARTBEAT")
    for a in agents:
        last = a["last_heartbeat_at"] or "-"
        connected = "yes" if a["connected"] else "no"
        print(f"{a['id']:<10} {connected:<9} {a['heartbeat_count']:>10}  {last}")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        print(f"devcloud: payload is not JSON: {exc}", file=sys.stderr)
        return 2
    try:
        answer = _admin(args).send(
            args.agent, args.topic, payload, timeout=args.timeout, stamp=not args.raw
        )
    except AckTimeout as exc:
        print(f"devcloud: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    except AgentNotConnected as exc:
        print(f"devcloud: {exc}", file=sys.stderr)
        return EXIT_NOT_CONNECTED
    _json_out(answer["record"] if args.verbose else answer["ack"])
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    client = _admin(args)
    deadline = time.monotonic() + args.seconds if args.seconds else None
    seen = 0
    known = client.heartbeats(args.agent, limit=1)
    after = known[-1]["seq"] if known else 0
    while args.count is None or seen < args.count:
        wait = 30.0
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                break
        for beat in client.heartbeats(args.agent, after=after, wait=wait):
            print(json.dumps(beat, sort_keys=True), flush=True)
            after = beat["seq"]
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    return 0 if args.count is None or seen >= args.count else EXIT_TIMEOUT


def cmd_acks(args: argparse.Namespace) -> int:
    _json_out(_admin(args).acks(args.agent, args.topic))
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    cafile = Path(args.cacert) if args.cacert else None
    try:
        creds = asyncio.run(enroll(args.url, Path(args.out), cafile=cafile, key_kind=args.key_type))
    except (aiohttp.ClientError, OSError) as exc:
        print(f"devcloud: enrolment failed: {exc}", file=sys.stderr)
        return EXIT_ERROR
    _json_out(
        {
            "id": creds.agent_id,
            "expiresAt": creds.expires_at,
            "expiresIn": creds.expires_in,
            "client_cert": str(creds.cert_path),
            "client_key": str(creds.key_path),
            "ca_cert": str(creds.ca_path),
        }
    )
    return 0


# --------------------------------------------------------------------- parser


# argparse does not export the type of add_subparsers() publicly.
_Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _with_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=DEFAULT_DIR, help="state directory of the cloud")


def _with_admin(p: argparse.ArgumentParser) -> None:
    _with_dir(p)
    p.add_argument("--admin-url", help="admin interface (default: from <dir>/run.json)")
    p.add_argument("--admin-token-file",
                   help=f"the admin token (default: <dir>/{TOKEN_FILE}, written by serve)")


def _add_init(sub: _Sub) -> None:
    p = sub.add_parser("init", help="create the CA and the server certificate")
    _with_dir(p)
    p.add_argument("--san", action="append", default=[], help="extra server name or IP")
    p.add_argument("--force", action="store_true", help="replace an existing CA")
    p.set_defaults(func=cmd_init)


def _add_serve(sub: _Sub) -> None:
    p = sub.add_parser("serve", help="run the cloud (creates the PKI when missing)")
    _with_dir(p)
    p.add_argument("--host", default="127.0.0.1", help="address of the TLS listeners")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="Socket.IO (mTLS) port")
    p.add_argument("--provision-port", type=int, default=DEFAULT_PROVISION_PORT)
    p.add_argument("--admin-port", type=int, default=DEFAULT_ADMIN_PORT, help="on 127.0.0.1")
    p.add_argument("--san", action="append", default=[], help="extra server name or IP")
    p.add_argument("--id-ttl", type=int, default=900, help="seconds an id may wait for enrolment")
    p.add_argument("--command-timeout", type=float, default=15.0)
    p.set_defaults(func=cmd_serve)


def _add_admin_commands(sub: _Sub) -> None:
    """The commands that talk to a running cloud's admin interface."""
    p = sub.add_parser("agents", help="list agents")
    _with_admin(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_agents)

    p = sub.add_parser("send", help="send a command, print its ack")
    _with_admin(p)
    p.add_argument("agent")
    p.add_argument("topic")
    p.add_argument("payload", nargs="?", default="{}", help="JSON payload (default {})")
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--raw", action="store_true", help="do not add a correlation_id")
    p.add_argument("--verbose", action="store_true", help="print the whole ack record")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("watch", help="print heartbeats as they arrive")
    _with_admin(p)
    p.add_argument("agent")
    p.add_argument("--count", type=int, help="stop after this many")
    p.add_argument("--seconds", type=float, help="stop after this long")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("acks", help="print recorded acks")
    _with_admin(p)
    p.add_argument("--agent")
    p.add_argument("--topic")
    p.set_defaults(func=cmd_acks)


def _add_enroll(sub: _Sub) -> None:
    p = sub.add_parser("enroll", help="enrol like the installer: id, key, CSR, certificate")
    p.add_argument("--url", required=True, help="provisioning base URL")
    p.add_argument("--out", required=True, help="directory for client.crt, client.key, ca.crt")
    p.add_argument("--cacert", help="trust anchor for the provisioning server")
    p.add_argument("--key-type", default="ec", choices=["ec", "rsa", "rsa4096"])
    p.set_defaults(func=cmd_enroll)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator-devcloud", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_init(sub)
    _add_serve(sub)
    _add_admin_commands(sub)
    _add_enroll(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except DevCloudError as exc:
        print(f"devcloud: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout.close()
        return EXIT_ERROR
