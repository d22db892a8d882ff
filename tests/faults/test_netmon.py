"""The netmon sidecar killed under a command stream: status keeps answering, the host
interfaces are served from the cache flagged stale, and when netmon returns the subnet
change it missed meanwhile is acted upon (the runtimes are re-homed)."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

from testkit.executor import LAN_BLOCKS, taken_subnets
from testkit.helpers import async_wait_for
from testkit.movinglan import BLOCKS, sh
from tests.faults.conftest import Faulty

pytestmark = [pytest.mark.docker, pytest.mark.netns]


def move_parent(f: Faulty) -> str:
    """Move the LAN parent's host address to a block nothing uses; the new block."""
    lan = f.agent.lans[0]
    used = taken_subnets(f.agent.dc)
    free = [b for b in (*BLOCKS, *LAN_BLOCKS)
            if not any(ipaddress.IPv4Network(b).overlaps(u) for u in used)]
    assert free, "no free documentation block to move the LAN to"
    block = free[0]
    old, new = ipaddress.IPv4Network(lan.subnet), ipaddress.IPv4Network(block)
    sh("ip", "-batch", "-", stdin=(
        f"addr add {new[2]}/{new.prefixlen} dev {lan.parent}\n"
        f"addr del {old[2]}/{old.prefixlen} dev {lan.parent}\n"))
    return block


async def interfaces(f: Faulty) -> dict[str, Any]:
    ack = await f.sender.send("get_host_interfaces", {"include_virtual": False,
                                                      "detailed": True})
    assert isinstance(ack, dict), ack
    return ack


def ours(ack: dict[str, Any], parent: str) -> dict[str, Any] | None:
    return next((i for i in ack.get("interfaces") or [] if i.get("name", i.get("interface"))
                 == parent), None)


async def test_netmon_killed_stale_answers_then_rehoming_resumes(faulty: Faulty) -> None:
    parent = faulty.agent.lans[0].parent
    moved: list[str] = []

    async def netmon_away() -> None:
        faulty.agent.kill_netmon()
        stale = await async_wait_for(lambda: _stale(faulty), 15, "a stale answer",
                                     interval=0.5)
        assert stale["status"] == "success" and ours(stale, parent) is not None, stale
        assert "stale_since" in stale, stale
        for device in faulty.devices:  # status keeps answering
            body = await faulty.sender.send("get_device_status", {"device_id": device})
            assert body["status"] == "success", body
        moved.append(move_parent(faulty))  # missed by the monitor: it is away
        await asyncio.sleep(3)
        faulty.agent.start_netmon()

    await faulty.under_stream([netmon_away], with_churn=False)
    fresh = await async_wait_for(lambda: _fresh(faulty), 20, "a fresh answer", interval=0.5)
    assert fresh["stale"] is False, fresh
    new = ipaddress.IPv4Network(moved[0])

    async def rehomed() -> bool:
        for device in faulty.devices:
            body = await faulty.sender.send("get_device_status", {"device_id": device})
            ips = [ep.get("ip_address") for ep in (body.get("networks") or {}).values()]
            if not any(ip and ipaddress.IPv4Address(ip) in new for ip in ips):
                return False
        return True
    await async_wait_for(rehomed, 60, "every runtime re-homed onto the new subnet",
                         interval=1.0)
    faulty.check_acks()
    await faulty.check_settled()


async def _stale(f: Faulty) -> dict[str, Any] | None:
    ack = await interfaces(f)
    return ack if ack.get("stale") is True else None


async def _fresh(f: Faulty) -> dict[str, Any] | None:
    ack = await interfaces(f)
    return ack if ack.get("stale") is False else None
