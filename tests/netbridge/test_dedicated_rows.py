"""`get_host_interfaces` rows for dedicated NICs end to end: a real netmon in a test
namespace reports an up ethernet link without IPv4 (`dedicated_only`), and the real bridge
adds `dedicated_to` from the executor's record for a NIC the namespace no longer shows."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.dedicated_rules import FILE_NAME
from tests.netbridge.bridge import BridgeProcess, Bus
from tests.netbridge.test_with_netmon import bridge_on_bus
from tests.netmon.nsutil import NetmonProcess, ip

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]


def rows(reply: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in reply.get("interfaces") or []}


async def test_dedicated_only_and_dedicated_to(
        bus: Bus, bridge_factory: Callable[[], BridgeProcess], lan: str, state_dir: Path,
        netmon_factory: Callable[..., NetmonProcess]) -> None:
    await bridge_on_bus(bus, bridge_factory)
    netmon_factory(lan)
    await bus.next_event("net.discovery", lambda b: True, 15)
    # oat0p, the LAN's end of the pair, is up without IPv4 like a fieldbus NIC would be.
    first = await bus.wait_call("host_interfaces", lambda r: "oat0p" in rows(r), 10)
    assert list(rows(first)) == ["oat0", "oat0p"] and rows(first)["oat0p"]["dedicated_only"]
    assert "dedicated_only" not in rows(first)["oat0"]

    # A fieldbus NIC: up, cable in (its peer up), no IPv4.
    ip(lan, "link", "add", "oatfb0", "type", "veth", "peer", "name", "oatfb0p")
    ip(lan, "link", "set", "oatfb0p", "up")
    ip(lan, "link", "set", "oatfb0", "up")
    reply = await bus.wait_call("host_interfaces", lambda r: "oatfb0" in rows(r), 10)
    row = rows(reply)["oatfb0"]
    assert row["dedicated_only"] is True and row["ip_address"] is None
    assert row["ipv4_addresses"] == [] and row["mac_address"]
    assert rows(reply)["oat0"] == rows(first)["oat0"]  # the others unchanged

    # With an address it is an ordinary row again.
    ip(lan, "addr", "add", "198.51.100.7/24", "dev", "oatfb0")
    reply = await bus.wait_call(
        "host_interfaces", lambda r: rows(r).get("oatfb0", {}).get("ip_address"), 10)
    assert "dedicated_only" not in rows(reply)["oatfb0"]

    # A NIC inside a runtime is not in the namespace: the row comes from the record.
    record = {"oat-plc-1": [{"vnic": "fieldbus", "interface": "oatgone0"}]}
    (state_dir / FILE_NAME).write_text(json.dumps(record))
    reply = await bus.call("host_interfaces", {"detailed": False})
    assert rows(reply)["oatgone0"] == {"name": "oatgone0", "ip_address": None,
                                       "ipv4_addresses": [], "mac_address": None,
                                       "dedicated_to": "oat-plc-1"}
