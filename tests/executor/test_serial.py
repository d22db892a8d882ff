"""Serial passthrough against the real engine: a pseudo-terminal pair plays a USB serial
adapter behind a test by-id directory; bytes cross into the runtime and back, and a
replug as a new node is followed without restarting the runtime."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import zmq.asyncio

from common.bus import RpcClient
from testkit.executor import STANDIN_TAG, ExecutorProc, settled, short_id, wait_ready, wait_status
from testkit.helpers import wait_for

pytestmark = [pytest.mark.docker]

CONTAINER_PATH = "/dev/ttyS5"
# Inside the runtime: open the port raw, read one line, answer it reversed.
ECHO = ("import os,tty\n"
        f"fd=os.open('{CONTAINER_PATH}',os.O_RDWR|os.O_NOCTTY)\n"
        "tty.setraw(fd)\n"
        "buf=b''\n"
        "while not buf.endswith(b'\\n'):\n"
        "    buf+=os.read(fd,64)\n"
        "os.write(fd,buf[:-1][::-1]+b'\\n')\n")


class Adapter:
    """A pty pair; the slave is the 'adapter node', the master is the far end."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.node = os.ttyname(self.slave)

    def close(self) -> None:
        # Once only: a number closed twice may by then belong to someone else.
        for fd in (self.master, self.slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self.slave = -1

    def read_line(self, timeout: float = 10.0) -> bytes:
        import select
        buf = b""
        while not buf.endswith(b"\n"):
            ready, _, _ = select.select([self.master], [], [], timeout)
            assert ready, f"nothing from the runtime within {timeout} s (got {buf!r})"
            buf += os.read(self.master, 64)
        return buf


@pytest.fixture
def by_id(tmp_path: Path) -> Path:
    d = tmp_path / "by-id"
    d.mkdir()
    return d


@pytest.fixture
def adapters() -> Iterator[Callable[[], Adapter]]:
    made: list[Adapter] = []

    def factory() -> Adapter:
        made.append(Adapter())
        return made[-1]
    yield factory
    for adapter in made:
        adapter.close()


def plug(link: Path, adapter: Adapter) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(adapter.node)
    tmp.rename(link)


def exchange(docker_client: docker.DockerClient, name: str, adapter: Adapter,
             text: bytes) -> bytes:
    """Start the echo in the runtime, send `text`, return what came back."""
    proc = subprocess.Popen(["docker", "exec", name, "python3", "-c", ECHO],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The echo must have the port open before the bytes go (a raw pty drops nothing,
        # but a port opened later would not see bytes sent before).
        wait_for(lambda: _has_open(docker_client, name), 10, "the echo opening the port")
        os.write(adapter.master, text + b"\n")
        reply = adapter.read_line()
        proc.wait(10)
        return reply.rstrip(b"\n")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def _has_open(docker_client: docker.DockerClient, name: str) -> bool:
    out = docker_client.containers.get(name).exec_run(
        ["sh", "-c", f"ls -l /proc/*/fd 2>/dev/null | grep -c {CONTAINER_PATH}"])
    return out.output.strip() not in (b"0", b"")


def port(body: dict[str, Any]) -> dict[str, Any]:
    ports = body.get("serial_ports") or [{}]
    return ports[0]  # type: ignore[no-any-return]


async def test_bytes_cross_and_a_replug_is_followed(
        make_executor: Callable[..., ExecutorProc], zctx: zmq.asyncio.Context,
        docker_client: docker.DockerClient, by_id: Path,
        adapters: Callable[[], Adapter]) -> None:
    executor = make_executor(ORCH_SERIAL_BY_ID_DIR=str(by_id)).start()
    bus: RpcClient = executor.client(zctx)
    try:
        await wait_ready(bus)
        await _replug_scenario(executor, bus, docker_client, by_id, adapters)
    finally:
        bus.close()


async def _replug_scenario(executor: ExecutorProc, bus: RpcClient,
                           docker_client: docker.DockerClient, by_id: Path,
                           adapters: Callable[[], Adapter]) -> None:
    link = by_id / "usb-OAT_Test_Adapter_A1-if00-port0"
    first = adapters()
    plug(link, first)
    name = f"oat-plc-{short_id()}"
    serial_configs = [{"name": "rs485", "device_id": str(link),
                       "container_path": CONTAINER_PATH}]
    ack = await bus.call("create_runtime", {
        "container_name": name, "vnic_configs": [], "runtime_version": STANDIN_TAG,
        "serial_configs": serial_configs})
    assert ack["status"] == "creating" and ack["serial_configs_count"] == 1, ack
    body = await wait_status(bus, name, settled)
    assert body["status"] == "success", body
    body = await wait_status(bus, name, lambda b: port(b).get("status") == "connected", 15)
    assert body["serial_ports"] == [{"name": "rs485", "device_id": str(link),
                                     "container_path": CONTAINER_PATH,
                                     "status": "connected",
                                     "current_host_path": first.node}]
    started = docker_client.api.inspect_container(name)["State"]["StartedAt"]
    assert exchange(docker_client, name, first, b"hello plc") == b"clp olleh"

    # Unplug: the link goes, the node leaves the runtime.  The next adapter is opened
    # first so that it cannot get the same pty number.
    second = adapters()
    link.unlink()
    first.close()
    await wait_status(bus, name, lambda b: port(b).get("status") == "disconnected", 10)
    wait_for(lambda: docker_client.containers.get(name).exec_run(
        ["test", "-e", CONTAINER_PATH]).exit_code != 0, 10, "the node removed")

    # Replug as a new node (another pty: another minor number).
    assert second.node != first.node
    plug(link, second)
    body = await wait_status(bus, name, lambda b: port(b).get("status") == "connected", 10)
    assert port(body)["current_host_path"] == second.node
    assert exchange(docker_client, name, second, b"again") == b"niaga"
    after = docker_client.api.inspect_container(name)
    assert after["State"]["StartedAt"] == started, "the runtime was restarted"
    stored = json.loads((executor.state_dir / "runtime_serials.json").read_text())
    assert stored[name] == serial_configs

    # A restart makes a new /dev in the container: the keeper puts the node back.
    reply = await bus.call("restart_device", {"device_id": name}, timeout=30)
    assert reply["status"] == "success", reply
    await wait_status(bus, name, lambda b: port(b).get("status") == "connected"
                      and b.get("is_running") is True, 10)
    assert exchange(docker_client, name, second, b"restarted") == b"detratser"

    ack = await bus.call("delete_device", {"device_id": name})
    assert ack["status"] == "deleting", ack
    await wait_status(bus, name, lambda b: b.get("status") == "not_found", 30)
    stored = json.loads((executor.state_dir / "runtime_serials.json").read_text())
    assert name not in stored


async def test_bad_serial_configs_are_refused_and_change_nothing(
        executor: ExecutorProc, bus: RpcClient, docker_client: docker.DockerClient) -> None:
    name = f"oat-plc-{short_id()}"
    cases = [
        ([{"name": "a", "device_id": "/tmp/elsewhere/x", "container_path": "/dev/ttyS0"}],
         "is not an entry of"),
        ([{"name": "a", "device_id": "/dev/serial/by-id/x", "container_path": "dev/ttyS0"}],
         "container_path"),
        ([{"name": "a", "device_id": "/dev/serial/by-id/x", "container_path": "/etc/passwd"}],
         "under /dev"),
        ([{"name": "a", "device_id": "/dev/serial/by-id/x", "container_path": "/dev/ttyS0"},
          {"name": "b", "device_id": "/dev/serial/by-id/x", "container_path": "/dev/ttyS1"}],
         "same device_id"),
        ([{"name": "bad name", "device_id": "/dev/serial/by-id/x",
           "container_path": "/dev/ttyS0"}], "serial port name"),
    ]
    for configs, text in cases:
        reply = await bus.call("create_runtime", {
            "container_name": name, "vnic_configs": [], "runtime_version": STANDIN_TAG,
            "serial_configs": configs})
        assert reply["status"] == "error" and text in reply["error"], (configs, reply)
    assert not docker_client.containers.list(all=True, filters={"name": f"^{name}$"})
