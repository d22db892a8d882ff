"""Device ids from the bus never reach the file system unchecked.

The attack: a bus peer sends `../../victim` as a device id; the journal built
`operations/<device>.json` from it and could replace or delete files elsewhere.  The
executor now checks ids with the gateway's rule at its edge, and state paths are built
so they cannot leave their directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.bus import RpcClient, RpcError
from common.statepath import UnsafeName, within
from testkit.executor import ExecutorProc

pytestmark = pytest.mark.timeout(120)

HOSTILE_IDS = ["../../victim", "../victim", "..", "a/b", "/etc/victim", "x\x00y", "x" * 300]
METHODS = ["start_device", "stop_device", "restart_device", "delete_device", "device_status",
           "run_command"]


LOGS = ("logs", "debug")  # the daily log files under the state directory


def tree(base: Path) -> dict[str, bytes]:
    """Every file under `base` except the executor's logs, with its content.  The logs
    grow on their own (the executor's start-up lines can land during the test)."""
    out = {}
    for root, dirs, files in os.walk(base):
        if Path(root).name == "state":
            dirs[:] = [d for d in dirs if d not in LOGS]
        for name in files:
            path = Path(root) / name
            if path.name != "executor.log" and not path.is_socket():
                out[str(path.relative_to(base))] = path.read_bytes()
    return out


async def test_path_ids_are_refused_and_touch_nothing(executor: ExecutorProc,
                                                      bus: RpcClient) -> None:
    victim = executor.base / "victim.json"
    victim.write_text('{"keep": true}')
    (executor.state_dir / "victim.json").write_text('{"keep": true}')
    before = tree(executor.base)
    for method in METHODS:
        for device in HOSTILE_IDS:
            with pytest.raises(RpcError) as info:
                await bus.call(method, {"device_id": device, "method": "GET",
                                        "api": "/status"}, 5)
            assert info.value.kind == "invalid", (method, device, info.value)
            assert info.value.message.startswith("device_id: "), info.value.message
    assert victim.read_text() == '{"keep": true}'
    after = tree(executor.base)
    assert after == before, sorted(set(after) ^ set(before))
    # A well-formed id of a device that does not exist still gets the ordinary answer.
    reply = await bus.call("start_device", {"device_id": "oat-no-such-device"}, 10)
    assert reply["status"] == "error" and "not found" in reply["error"]


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "", "x\x00", "a\\b", "x" * 256])
def test_within_refuses_names_that_leave(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeName):
        within(tmp_path, name, ".json")


def test_within_joins_plain_names(tmp_path: Path) -> None:
    assert within(tmp_path, "plc-1", ".json") == tmp_path / "plc-1.json"
    assert within(tmp_path, "__orchestrator__") == tmp_path / "__orchestrator__"
