"""`serial_devices` end to end: a real netmon watching a test by-id directory, the real
bridge serving what it reports; a pseudo-terminal plays the adapter."""

from __future__ import annotations

import os
import pty
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.netbridge.bridge import BridgeProcess, Bus
from tests.netbridge.test_with_netmon import bridge_on_bus
from tests.netmon.nsutil import NetmonProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]


@pytest.fixture
def by_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "by-id"
    directory.mkdir()
    # netmon inherits the environment of the test (tests/netmon/nsutil.py).
    monkeypatch.setenv("ORCH_SERIAL_BY_ID_DIR", str(directory))
    return directory


@pytest.fixture
def pty_node() -> Iterator[str]:
    master, slave = pty.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


async def test_plug_and_unplug_are_reported(
        bus: Bus, bridge_factory: Callable[[], BridgeProcess], lan: str,
        netmon_factory: Callable[..., NetmonProcess], by_id: Path, pty_node: str) -> None:
    await bridge_on_bus(bus, bridge_factory)
    netmon_factory(lan)
    await bus.next_event("net.discovery", lambda b: True, 15)
    assert await bus.call("serial_devices") == {"status": "success", "devices": [],
                                                "count": 0}
    link = by_id / "usb-OAT_Test_Adapter_A1-if00-port0"
    link.symlink_to(pty_node)
    reply = await bus.wait_call("serial_devices", lambda r: r["count"] == 1, 10)
    # A pty has no USB attributes in sysfs: only the two paths are known.
    assert reply["devices"] == [{"path": pty_node, "device_id": str(link)}]
    # A dangling link (an adapter half gone) is not listed; nor is a removed one.
    dangling = by_id / "usb-OAT_Gone-if00-port0"
    dangling.symlink_to("/dev/oat-no-such-node")
    link.unlink()
    await bus.wait_call("serial_devices", lambda r: r["count"] == 0, 10)
