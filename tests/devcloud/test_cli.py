"""The CLI as a user runs it: ``serve`` in a subprocess, the other commands against it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from devcloud.enroll import Credentials

from .conftest import agent_client, heartbeat_payload, run

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


async def _cli(*args: str, timeout: float = 15) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "devcloud",
        "--log-level",
        "WARNING",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_serve_enroll_send_watch(tmp_path: Path) -> None:
    cloud_dir = tmp_path / "cloud"

    async def scenario() -> None:
        serve = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "devcloud",
            "serve",
            "--dir",
            str(cloud_dir),
            "--port",
            "0",
            "--provision-port",
            "0",
            "--admin-port",
            "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=_env(),
        )
        try:
            assert serve.stdout is not None
            info = json.loads(await asyncio.wait_for(serve.stdout.readline(), 10))
            assert info["admin_url"].startswith("http://127.0.0.1:")
            await _run_against(info, cloud_dir, tmp_path)
        finally:
            if serve.returncode is None:
                serve.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(serve.wait(), 10)
        assert rc == 0
        assert not (cloud_dir / "run.json").exists()

    run(scenario(), timeout=25)


async def _run_against(info: dict[str, Any], cloud_dir: Path, tmp_path: Path) -> None:
    rc, out, err = await _cli(
        "enroll",
        "--url",
        info["provision_url"],
        "--out",
        str(tmp_path / "mtls"),
        "--cacert",
        info["ca_cert"],
    )
    assert rc == 0, err
    enrolled = json.loads(out)
    creds = Credentials(enrolled["id"], tmp_path / "mtls")
    assert creds.key_path.exists() and creds.ca_path.exists()

    async def status(data: Any) -> dict[str, Any]:
        return {
            "action": "get_device_status",
            "correlation_id": data.get("correlation_id"),
            "status": "not_found",
            "device_id": data.get("device_id"),
        }

    release = asyncio.Event()

    async def stuck(data: Any) -> None:
        await release.wait()

    handlers = {"get_device_status": status, "stuck": stuck}
    async with agent_client(info["url"], creds.ssl_context(), handlers) as c:
        d = str(cloud_dir)
        rc, out, err = await _cli("agents", "--dir", d, "--json")
        assert rc == 0, err
        (agent,) = json.loads(out)
        assert agent["id"] == creds.agent_id and agent["connected"]

        rc, out, err = await _cli(
            "send", "--dir", d, creds.agent_id, "get_device_status", '{"device_id": "plc-9"}'
        )
        assert rc == 0, err
        ack = json.loads(out)
        assert ack["status"] == "not_found" and ack["device_id"] == "plc-9"
        assert isinstance(ack["correlation_id"], int)

        # An agent without a handler acks with nothing: the ack is null and flagged.
        rc, out, err = await _cli(
            "send", "--dir", d, creds.agent_id, "no_such_topic", "{}", "--verbose"
        )
        assert rc == 0, err
        record = json.loads(out)
        assert record["ack"] is None and "not an object" in record["problems"][0]

        # A handler that never returns: no ack in time, exit code 3.
        rc, out, err = await _cli(
            "send", "--dir", d, creds.agent_id, "stuck", "{}", "--timeout", "0.5"
        )
        assert rc == 3 and "no ack" in err
        rc, _, err = await _cli("send", "--dir", d, "00000000", "get_device_status", "{}")
        assert rc == 4, err

        # The CLI finds the admin token in --dir; without it, a clear error and no request.
        missing = str(tmp_path / "no-token")
        rc, _, err = await _cli("agents", "--dir", d, "--admin-token-file", missing)
        assert rc == 1 and f"no admin token at {missing}" in err, err
        rc, _, err = await _cli("agents", "--dir", str(tmp_path), "--admin-url",
                                info["admin_url"])
        assert rc == 1 and "no admin token" in err, err
        rc, out, err = await _cli("agents", "--dir", str(tmp_path), "--admin-url",
                                  info["admin_url"], "--admin-token-file",
                                  str(cloud_dir / "admin.token"), "--json")
        assert rc == 0 and json.loads(out)[0]["id"] == creds.agent_id, err

        watch = asyncio.create_task(_cli("watch", "--dir", d, creds.agent_id, "--count", "2"))
        # watch starts from the newest heartbeat it finds, so keep emitting until it is done.
        for uptime in range(1, 200):
            if watch.done():
                break
            await c.emit("heartbeat", {**heartbeat_payload(creds.agent_id), "uptime": uptime})
            await asyncio.wait({watch}, timeout=0.1)
        rc, out, err = await watch
        assert rc == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert len(lines) == 2
        assert lines[1]["seq"] == lines[0]["seq"] + 1
        assert lines[0]["payload"]["agent_id"] == creds.agent_id
        release.set()
