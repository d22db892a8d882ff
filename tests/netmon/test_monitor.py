"""The Monitor in-process: netlink overruns and unexpected failures."""

from __future__ import annotations

import asyncio
import time

import pytest

from common.netmon_proto import is_virtual
from services.netmon.discovery import Discovery
from services.netmon.model import Iface
from services.netmon.monitor import Monitor
from tests.netmon.nsutil import ip_batch, link_info

pytestmark = pytest.mark.timeout(60)


def test_enobufs_triggers_full_rediscovery(lan: str) -> None:
    index = link_info(lan, "oat0")["ifindex"]
    changes: list[Iface] = []

    async def scenario() -> None:
        # The smallest receive buffer the kernel allows, so a blocked loop overruns it.
        monitor = Monitor(changes.append, debounce=0.2, netns=lan, rcvbuf=1024)
        await monitor.start()
        try:
            assert [i.name for i in monitor.interfaces()
                    if not is_virtual(i.name)] == ["oat0"]
            # Deliberately block the event loop while the kernel emits hundreds of
            # notifications: the event socket cannot be drained and overflows.
            ip_batch(
                lan, [f"addr add 198.51.100.{n}/24 dev oat0" for n in range(1, 201)]
            )
            ip_batch(lan, ["addr del 192.0.2.10/24 dev oat0"])
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                state = monitor.published.get(index)
                if state is not None and len(state.addresses) == 200:
                    break
                await asyncio.sleep(0.05)
            assert monitor.counters["overruns"] >= 1
            assert monitor.counters["resyncs"] >= 1
            state = monitor.published[index]
            assert len(state.addresses) == 200
            assert "192.0.2.10" not in {a.address for a in state.addresses}
            assert changes and changes[-1] == state
        finally:
            await monitor.stop()

    asyncio.run(scenario())


class BreakableDiscovery(Discovery):
    """Real netlink queries until the test breaks it, then a bug on every snapshot."""

    broken = False

    async def snapshot(self) -> dict[int, Iface]:
        if self.broken:
            raise ValueError("bug in discovery")
        return await super().snapshot()


def test_unexpected_failure_surfaces_through_wait(lan: str) -> None:
    async def scenario() -> None:
        discovery = BreakableDiscovery(lan)
        monitor = Monitor(lambda _: None, debounce=0.05, netns=lan, discovery=discovery)
        await monitor.start()
        discovery.broken = True
        try:
            ip_batch(lan, ["addr add 203.0.113.30/24 dev oat0"])
            with pytest.raises(ValueError, match="bug in discovery"):
                await asyncio.wait_for(monitor.wait(), 10)
        finally:
            await monitor.stop()

    asyncio.run(scenario())
