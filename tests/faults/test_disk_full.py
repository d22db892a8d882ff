"""A full state directory (a small tmpfs, filled up) under a command stream: every
command is still acked — a change that cannot be recorded with a clear error — nothing is
torn or half-created, and everything works again once there is room."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest

from tests.faults.conftest import RUNTIMES, Faulty, faulty_agent

pytestmark = [pytest.mark.docker, pytest.mark.netns]

FILLER = "oat-filler"


def fill(directory: Path) -> int:
    """Write until the file system says it is full; the bytes written."""
    written = 0
    chunk = b"\0" * (1 << 20)
    with open(directory / FILLER, "wb", buffering=0) as out:
        for _ in range(4096):  # bounded: far more than the tmpfs holds
            try:
                out.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
            written += len(chunk)
    # Whatever the last write left half-done is lost with the space: top up to the byte.
    with contextlib.suppress(OSError), open(directory / f"{FILLER}2", "wb", buffering=0) as out:
        for _ in range(1 << 12):
            out.write(b"\0" * 256)
    return written


@pytest.fixture
async def full(docker_client: docker.DockerClient, standin_image: str
               ) -> AsyncIterator[Faulty]:
    async with faulty_agent(state_size="48m") as f:
        yield f


async def test_full_state_dir_acks_clear_errors_and_recovers(full: Faulty) -> None:
    state = full.agent.state_dir
    vnic = full.agent.vnic(0, 11 + RUNTIMES + 1)
    newcomer = f"{full.agent.lans[0].parent}-new"
    outcomes: dict[str, object] = {}

    async def disk_full() -> None:
        assert fill(state) > 0
        ack = await full.sender.send("create_new_runtime", {
            "container_name": newcomer, "vnic_configs": [vnic], "runtime_version": "test"})
        outcomes["create"] = ack
        outcomes["status"] = await full.sender.send("get_device_status",
                                                    {"device_id": newcomer})
        outcomes["stop"] = await full.sender.send("stop_device",
                                                  {"device_id": full.devices[0]})

    await full.under_stream([disk_full], with_churn=False)
    create = outcomes["create"]
    # The create cannot be recorded, so it is not started: a clear error, at once.
    assert isinstance(create, dict) and create.get("status") == "error", outcomes
    assert "space" in create["error"].lower(), outcomes
    full.check_acks()

    for name in (FILLER, f"{FILLER}2"):
        (state / name).unlink(missing_ok=True)
    # Room again: a new runtime is created and the stopped one starts.
    ack = await full.sender.send("create_new_runtime", {
        "container_name": f"{newcomer}2", "vnic_configs": [vnic], "runtime_version": "test"})
    assert ack["status"] == "creating", ack
    ack = await full.sender.send("start_device", {"device_id": full.devices[0]})
    assert ack["status"] == "success", ack
    full.devices.append(f"{newcomer}2")
    await full.check_settled()
