"""netbridge against a misbehaving netmon peer, and restarted while it serves a load."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq.asyncio

from common import wire
from common.bus import Endpoints, RpcClient, RpcError, RpcTimeout
from testkit.helpers import async_wait_for
from testkit.suite import running_suite
from tests.netbridge.bridge import BridgeProcess, Bus, ScriptedNetmon

pytestmark = pytest.mark.timeout(120)

DROP_REASONS = ("not_json", "invalid_utf8", "too_long", "not_object", "unknown_type")


def iface(name: str, address: str) -> dict[str, Any]:
    prefix = address.rsplit(".", 1)[0]
    return {"interface": name, "index": 7, "operstate": "UP", "active": True,
            "ipv4_addresses": [{"address": address, "prefixlen": 24,
                                "subnet": f"{prefix}.0/24", "network_address": f"{prefix}.0"}],
            "gateway": f"{prefix}.1", "mac_address": "02:00:00:00:00:07",
            "timestamp": "2026-01-01T00:00:00+00:00"}


def line(message: Any) -> bytes:
    return json.dumps(message).encode() + b"\n"


def discovery(*ifaces: dict[str, Any]) -> bytes:
    return line({"type": "network_discovery",
                 "data": {"interfaces": list(ifaces), "timestamp": "2026-01-01T00:00:00Z"}})


def change(data: dict[str, Any]) -> bytes:
    return line({"type": "network_change", "data": data})


GARBAGE = [
    b"this is not json\n",
    b'{"type": "network_change", "data": "\xff\xfe"}\n',
    b"[" + b"7," * (3 << 19) + b"7]\n",  # about 3 MiB on one line
    b'["network_change", {}]\n',
    b'{"type": "network_gossip", "data": {}}\n',
]


async def test_garbage_is_dropped_counted_and_serving_goes_on(
        bus: Bus, bridge_factory: Callable[[], BridgeProcess], state_dir: Path) -> None:
    script = [discovery(iface("oat5", "203.0.113.5")), *GARBAGE,
              change(iface("oat5", "203.0.113.6"))]
    server = ScriptedNetmon(state_dir / "netmon.sock", script)
    try:
        bridge = bridge_factory()
        counters = await bus.beat(lambda c: c.get("netmon_changes", 0) >= 1, 20)
        assert {r: counters[f"netmon_dropped_{r}"] for r in DROP_REASONS} == dict.fromkeys(
            DROP_REASONS, 1)
        listing = await bus.call("interfaces")
        assert listing["stale"] is False and listing["connected"] is True
        assert [i["ipv4_addresses"][0]["address"] for i in listing["interfaces"]] == [
            "203.0.113.6"], "the change after the garbage was applied"
        reply = await bus.call("host_interfaces")
        assert reply["status"] == "success"
        assert reply["interfaces"][0]["subnet"] == "203.0.113.0/24"

        # More garbage on the live connection, then the peer hangs up: the bridge
        # reconnects, the script replays, and the counts double.
        server.send(b"\x00\x01garbage\n")
        server.hang_up()
        await bus.next_event("net.discovery", lambda b: True, 10)
        counters = await bus.beat(lambda c: c.get("netmon_changes", 0) >= 2, 10)
        assert counters["netmon_reconnects"] >= 1
        assert counters["netmon_dropped_unknown_type"] == 2
        assert counters["netmon_dropped_not_json"] == 3
        assert bridge.alive()
        assert "Traceback" not in bridge.log()
    finally:
        server.stop()


def check_reply(method: str, result: Any) -> None:
    if method == "interfaces":
        assert set(result) == {"interfaces", "stale", "connected"}, result
    else:
        assert result["status"] in ("success", "error"), result
        assert isinstance(result["stale"], bool)


async def caller(ctx: zmq.asyncio.Context, endpoint: str, n: int, stop: asyncio.Event,
                 outcomes: Counter[str]) -> None:
    client = RpcClient(ctx, endpoint, wire.Stamper(f"load{n}"), 1.0)
    methods = ("interfaces", "host_interfaces")
    try:
        i = 0
        while not stop.is_set():
            method = methods[i % 2]
            i += 1
            try:
                check_reply(method, await client.call(method, {"detailed": True}, 1.0))
                outcomes["ok"] += 1
            except RpcTimeout:
                outcomes["timeout"] += 1
            except RpcError as exc:
                # A call caught by the shutdown is answered, never left hanging.
                assert exc.kind in ("stopping", "expired"), exc
                outcomes[exc.kind] += 1
    finally:
        client.close()


async def wait_ok(outcomes: Counter[str], more: int, timeout: float) -> None:
    target = outcomes["ok"] + more
    try:
        await async_wait_for(lambda: outcomes["ok"] >= target, timeout, f"{more} more calls ok")
    except AssertionError as exc:
        raise AssertionError(f"load stalled: {outcomes}") from exc


async def test_restart_under_load(
        zctx: zmq.asyncio.Context, bridge_factory: Callable[[], BridgeProcess],
        state_dir: Path, base_dir: Path) -> None:
    server = ScriptedNetmon(state_dir / "netmon.sock", [discovery(iface("oat5", "203.0.113.5"))])
    endpoint = Endpoints(base_dir / "run").rpc("netbridge")
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()
    bridges = [bridge_factory()]
    tasks = [asyncio.create_task(caller(zctx, endpoint, n, stop, outcomes)) for n in range(8)]
    try:
        await wait_ok(outcomes, 50, 20)
        for round_ in range(4):
            if round_ % 2 == 0:
                code = await asyncio.to_thread(bridges[-1].terminate)
                assert code == 0, bridges[-1].log()[-3000:]
            else:
                await asyncio.to_thread(bridges[-1].kill)
            bridges.append(bridge_factory())
            await wait_ok(outcomes, 50, 20)
        assert bridges[-1].alive()
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        server.stop()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    assert outcomes["ok"] >= 250, outcomes
    logs = bridges[0].log()  # every process appended to the same file
    assert "Traceback" not in logs, logs[-3000:]
    assert logs.count("netbridge stopped (signal)") == 2


# Lines a hostile or broken peer can send, each with the counter it must land in.  The first
# one killed the process before: the JSON decoder recursed until RecursionError.
HOSTILE = [
    (b'{"type":"network_change","data":' + b"[" * 200_000 + b"]" * 200_000 + b"}\n",
     "too_deep"),
    (b'{"type":"network_change","data":{"interface":"oat6","ipv4_addresses":[],"x":'
     + b"[" * 30 + b"]" * 30 + b"}}\n", "too_deep"),
    (b'{"type":"network_change","data":"oat6"}\n', "bad_shape"),
    (change({**iface("oat6", "203.0.113.9"), "index": "seven"}), "bad_shape"),
    (change({**iface("oat6", "203.0.113.9"), "gateway": ["203.0.113.1"]}), "bad_shape"),
    (change({**iface("oat6", "203.0.113.9"), "index": 10 ** 30}), "bad_shape"),
    (change({**iface("oat6", "203.0.113.9"), "interface": "x" * 5000}), "bad_shape"),
    (b'{"type":"network_change","data":{"interface":"oat6","index":' + b"9" * 5000
     + b',"ipv4_addresses":[]}}\n', "not_json"),
    (b'{"type":"network_change","data":{"interface":"oat6\xc3\x28"}}\n', "invalid_utf8"),
    (change({**iface("oat6", "203.0.113.9"),
             "ipv4_addresses": [{"address": "203.0.113.9"}] * 500}), "too_many_addresses"),
]


async def test_hostile_lines_never_stop_the_bridge(
        bus: Bus, bridge_factory: Callable[[], BridgeProcess], state_dir: Path) -> None:
    script = [discovery(iface("oat5", "203.0.113.5")), *(raw for raw, _ in HOSTILE),
              change(iface("oat5", "203.0.113.6"))]
    server = ScriptedNetmon(state_dir / "netmon.sock", script)
    try:
        bridge = bridge_factory()
        counters = await bus.beat(lambda c: c.get("netmon_changes", 0) >= 1, 20)
        expected = Counter(reason for _, reason in HOSTILE)
        assert {r: counters[f"netmon_dropped_{r}"] for r in expected} == dict(expected)
        assert counters["netmon_dropped_error"] == 0
        listing = await bus.call("interfaces")
        assert [i["interface"] for i in listing["interfaces"]] == ["oat5"]
        assert listing["interfaces"][0]["ipv4_addresses"][0]["address"] == "203.0.113.6"
        assert bridge.alive()
        assert "Traceback" not in bridge.log()
    finally:
        server.stop()


async def test_flood_of_interface_names_is_bounded(
        bus: Bus, bridge_factory: Callable[[], BridgeProcess], state_dir: Path) -> None:
    flood = b"".join(change(iface(f"f{n}", "203.0.113.7")) for n in range(1100))
    server = ScriptedNetmon(state_dir / "netmon.sock",
                            [discovery(iface("oat5", "203.0.113.5")), flood])
    try:
        bridge = bridge_factory()
        # oat5 plus 1023 new names fill the cache; the other 77 names are refused.
        counters = await bus.beat(lambda c: c.get("netmon_refused_cache_full", 0) >= 77, 30)
        assert counters["netmon_refused_cache_full"] == 77
        assert counters["netmon_changes"] == 1023
        listing = await bus.call("interfaces")
        assert len(listing["interfaces"]) == 1024
        assert "oat5" in {i["interface"] for i in listing["interfaces"]}, "kept, not evicted"
        # A change of a known interface still applies when the cache is full.
        server.send(change(iface("oat5", "203.0.113.8")))
        await bus.wait_call("interfaces", lambda r: any(
            i["ipv4_addresses"][0]["address"] == "203.0.113.8"
            for i in r["interfaces"] if i["interface"] == "oat5"), 10)
        assert bridge.log().count("interface cache holds its maximum") == 1
        assert bridge.alive()
    finally:
        server.stop()


async def test_hostile_line_under_supervisord(zctx: zmq.asyncio.Context) -> None:
    """The reported failure: under supervisord the bridge died on the nested line and was
    restarted into FATAL.  Now the same process serves on, and the change after it."""
    with running_suite(ORCH_BEAT_INTERVAL="0.3", ORCH_RECONNECT_MAX="0.5") as suite:
        pid = suite.status()["netbridge"][1]
        server = ScriptedNetmon(suite.base / "state" / "netmon.sock",
                                [discovery(iface("oat5", "203.0.113.5")), HOSTILE[0][0],
                                 change(iface("oat5", "203.0.113.6"))])
        probe = Bus(zctx, suite.base / "run")
        try:
            await probe.wait_call("interfaces", lambda r: [
                i["ipv4_addresses"][0]["address"] for i in r["interfaces"]] == ["203.0.113.6"],
                20)
            counters = await probe.beat(lambda c: c.get("netmon_dropped_too_deep", 0) >= 1, 10)
            assert counters["netmon_dropped_too_deep"] == 1
            assert suite.status()["netbridge"] == ("RUNNING", pid), suite.output()[-3000:]
        finally:
            probe.close()
            server.stop()
