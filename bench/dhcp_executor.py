"""The executor path of `bench/dhcp.py`: create → leased → reachable from the LAN.

A real executor process (the stand-in runtime image), a scripted netbridge answering
the interface table, dnsmasq (`--no-ping`) in the LAN's namespace serving a free
documentation /27: `create_runtime` for N dhcp vPLCs at once over the bus, then for each
the time until `device_status` shows the lease bound, and until the runtime answers HTTPS
from inside the LAN at the leased address.  Everything made is removed at the end.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import zmq.asyncio

from common.bus import RpcClient
from testkit import dockerenv
from testkit.executor import (
    STANDIN_TAG,
    ExecutorProc,
    cleanup_instance,
    https_ok_from,
    short_id,
    wait_ready,
    wait_status,
)
from testkit.helpers import short_tmpdir
from testkit.movinglan import free_blocks
from tests.dhcp.lan import DhcpLan, make_lan
from tests.rehome.fakebridge import FakeBridge


def bound(body: dict[str, Any]) -> bool:
    nets = list((body.get("networks") or {}).values())
    return len(nets) == 1 and (nets[0].get("dhcp") or {}).get("state") == "bound"


async def reachable(ns: str, ip: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not await asyncio.to_thread(https_ok_from, ns, ip):
        if time.monotonic() > end:
            raise TimeoutError(f"{ip} not reachable from the LAN")
        await asyncio.sleep(0.1)


async def one_round(bus: RpcClient, lan: DhcpLan, count: int) -> dict[str, Any]:
    names = [f"oat-db-{short_id()}" for _ in range(count)]
    leased: list[float] = []
    answered: list[float] = []
    t0 = time.monotonic()

    async def create(name: str) -> None:
        ack = await bus.call("create_runtime", {
            "container_name": name, "runtime_version": STANDIN_TAG,
            "vnic_configs": [{"name": "eth0", "parent_interface": lan.parent,
                              "network_mode": "dhcp"}]})
        assert ack.get("status") == "creating", ack
        body = await wait_status(bus, name, bound, 180)
        leased.append(time.monotonic() - t0)
        ip = next(iter(body["networks"].values()))["ip_address"]
        await reachable(lan.ns, ip)
        answered.append(time.monotonic() - t0)

    await asyncio.gather(*(create(n) for n in names))
    for name in names:
        await bus.call("delete_device", {"device_id": name})
    for name in names:
        await wait_status(bus, name, lambda b: b.get("status") == "not_found", 60)
    return {"vplcs": count,
            "leased_first_s": round(min(leased), 2), "leased_last_s": round(max(leased), 2),
            "reachable_first_s": round(min(answered), 2),
            "reachable_last_s": round(max(answered), 2)}


async def _run(executor: ExecutorProc, lan: DhcpLan, block: str,
               counts: list[int]) -> list[dict[str, Any]]:
    zctx = zmq.asyncio.Context()
    bridge = FakeBridge(zctx, executor.run_dir).start()
    bridge.table[lan.parent] = lan.host_interface(block)
    executor.start()
    bus = executor.client(zctx, timeout=30.0)
    try:
        await wait_ready(bus)
        return [await one_round(bus, lan, n) for n in counts]
    finally:
        bus.close()
        await bridge.close()
        zctx.term()


def executor_path(counts: list[int]) -> list[dict[str, Any]]:
    dc = docker.from_env()
    dockerenv.ensure_standin_image(dc)
    (block,) = free_blocks(dc, 1, set())
    with tempfile.TemporaryDirectory() as tmp, short_tmpdir("oatbd") as base:
        lan = make_lan(Path(tmp), ping=False)
        executor = ExecutorProc(Path(base), ORCH_LOG_LEVEL="INFO", ORCH_DHCP_LEASES="on")
        try:
            lan.serve(block, pool=(3, 28))
            return asyncio.run(_run(executor, lan, block, counts))
        finally:
            executor.stop()
            cleanup_instance(dc, executor.instance)
            lan.close()
            dc.close()
