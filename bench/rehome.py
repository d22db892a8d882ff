"""Re-homing benchmark: prints one JSON object.

Figures, with 1, 5 and 20 runtimes (auto-detected vNICs on one parent): time from the
parent's address change to netbridge's `net.change` (netmon's debounce), to every
runtime re-homed (`runtime.rehome` events), and to every runtime answering HTTPS from a
LAN host on the new subnet; plus netmon's idle CPU and memory (PSS, USS) over a quiet
period, and (`engine_floor`) the same move of the largest set made with bare engine calls
— the engine serialises endpoint changes per network, which bounds any implementation.
The largest set is moved `--repeat` times (back and forth) and the floor made as often;
the agent's share is the difference of the medians, since one move's time varies with
the engine's by as much as the share itself.

Real processes (netmon in the host namespace, netbridge, executor), the real engine, a
veth parent `oat…` in the host namespace whose peer lives in a namespace made here; only
those are changed, on /27 blocks of the documentation ranges.  Run from the repository
root as root with the Docker engine up:
    PYTHONPATH=. python bench/rehome.py [--sizes 1,5,20] [--debounce 3] [--idle 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import psutil
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common_info import context
from common.bus import Endpoints, RpcClient, Subscriber
from common.messages import parse
from services.executor.engine import containers, macfix
from services.executor.engine.docker_api import version_tuple
from testkit import dockerenv
from testkit.executor import STANDIN_TAG, ExecutorProc, cleanup_instance, wait_ready
from testkit.helpers import agent_env, heard, short_tmpdir, start_module, stop_process
from testkit.movinglan import MovingLan, free_blocks, make_moving_lan, remove_moving_lan

# Runs inside the LAN namespace: reads a JSON list of IPs per line, answers with the Unix
# time at which every one of them answered HTTPS (polled concurrently).
PROBER = r"""
import concurrent.futures, http.client, json, ssl, sys, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def until_up(ip, deadline):
    while time.time() < deadline:
        try:
            c = http.client.HTTPSConnection(ip, 8443, timeout=0.5, context=ctx)
            c.request("GET", "/api/version")
            if c.getresponse().status == 200:
                return True
        except OSError:
            time.sleep(0.01)
    return False
pool = concurrent.futures.ThreadPoolExecutor(32)
for line in sys.stdin:
    ips = json.loads(line)
    deadline = time.time() + 60
    ok = all(pool.map(lambda ip: until_up(ip, deadline), ips))
    print(json.dumps({"ok": ok, "at": time.time()}), flush=True)
"""


def netmon_footprint(pid: int, seconds: float) -> dict[str, Any]:
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    started = time.monotonic()
    samples = []
    while time.monotonic() - started < seconds:
        samples.append(proc.memory_full_info())
        time.sleep(min(1.0, seconds / 10))
    after = proc.cpu_times()
    elapsed = time.monotonic() - started
    cpu = (after.user - before.user) + (after.system - before.system)
    last = samples[-1]
    return {"seconds": round(elapsed, 1), "cpu_percent": round(100 * cpu / elapsed, 3),
            "cpu_seconds": round(cpu, 3), "pss_mb": round(last.pss / 2**20, 1),
            "uss_mb": round(last.uss / 2**20, 1), "rss_mb": round(last.rss / 2**20, 1),
            "pss_max_mb": round(max(s.pss for s in samples) / 2**20, 1)}


# The executor can be ready before netmon's first interface report has reached it; a
# create asked then fails at once with this (and changes nothing), so it is asked again.
NOT_YET = "has not reported any interface yet"


async def create(bus: RpcClient, name: str, parent: str) -> None:
    for _attempt in range(40):
        ack = await bus.call("create_runtime", {
            "container_name": name, "runtime_version": STANDIN_TAG,
            "vnic_configs": [{"name": "eth0", "parent_interface": parent,
                              "network_mode": "dhcp"}]})
        if ack.get("status") != "creating":
            raise RuntimeError(f"create of {name}: {ack}")
        body = await created(bus, name)
        if body is None:
            return
        if NOT_YET not in str(body.get("error")):
            raise RuntimeError(f"create of {name}: {body}")
        await asyncio.sleep(0.5)
    raise RuntimeError(f"create of {name}: no interface report from netmon")


async def created(bus: RpcClient, name: str) -> dict[str, Any] | None:
    """None once `name` runs; the status body when its create failed."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = await bus.call("device_status", {"device_id": name})
        if body["status"] == "success" and body.get("is_running"):
            return None
        if body["status"] != "creating":
            return dict(body)
        await asyncio.sleep(0.05)
    raise RuntimeError(f"create of {name} timed out")


async def next_topic(sub: Subscriber, topic: str, deadline: float) -> dict[str, Any]:
    async for envelope in heard(sub, deadline - time.monotonic()):
        if envelope.topic == topic:
            return parse(envelope).to_body()
    raise RuntimeError(f"no {topic} in time")


class MoveFailed(RuntimeError):
    """The agent reported a move failed (on Docker 20.10: the engine's endpoint count
    race left the old network unremovable; the agent put the runtimes back)."""


async def probe(prober: subprocess.Popen[str], ips: list[str]) -> dict[str, Any]:
    """When (Unix time) every IP answered HTTPS from the LAN host."""
    assert prober.stdin is not None and prober.stdout is not None
    prober.stdin.write(json.dumps(ips) + "\n")
    prober.stdin.flush()
    line = await asyncio.get_running_loop().run_in_executor(None, prober.stdout.readline)
    return dict(json.loads(line))


async def one_move(lan: MovingLan, subnet: str, devices: set[str], events: Subscriber,
                   changes: Subscriber, prober: subprocess.Popen[str]) -> dict[str, Any]:
    for sub in (events, changes):  # forget anything queued before the move
        while await sub.recv(0.0) is not None:
            pass
    t0 = time.time()
    lan.move_host(subnet)
    deadline = time.monotonic() + 120
    change = await next_topic(changes, "net.change", deadline)
    t_change = time.time()
    if change["interface"]["interface"] != lan.parent:
        raise RuntimeError(f"unexpected change: {change}")
    waiting, ips, outcomes, errors = set(devices), [], [], set()
    while waiting:
        body = await next_topic(events, "runtime.rehome", deadline)
        if body["device"] in waiting:
            waiting.discard(body["device"])
            ips.append(body["event"]["ip_address"])
            outcomes.append(body["event"]["outcome"])
            if body["event"].get("outcome") == "failed":
                errors.add(str(body["event"].get("error")))
    t_rehomed = time.time()
    if errors:
        # The runtimes are back on the old network; the next move would find them where
        # the LAN is and have nothing to do.
        raise MoveFailed(f"the agent's move to {subnet} failed: {'; '.join(sorted(errors))}")
    answer = await probe(prober, ips)
    return {"runtimes": len(devices), "to_subnet": subnet,
            "change_event_s": round(t_change - t0, 3),
            "all_rehomed_s": round(t_rehomed - t0, 3),
            "all_reachable_s": round(answer["at"] - t0, 3),
            "rehomed_after_event_s": round(t_rehomed - t_change, 3),
            "reachable_after_event_s": round(answer["at"] - t_change, 3),
            "all_reachable": answer["ok"],
            "outcomes": sorted(set(outcomes))}


async def run(args: argparse.Namespace, base: Path, executor: ExecutorProc,
              lan: MovingLan, blocks: list[str], netmon_pid: int) -> dict[str, Any]:
    ctx = zmq.asyncio.Context()
    endpoints = Endpoints(executor.run_dir)
    bus = executor.client(ctx, timeout=30)
    events = Subscriber(ctx, [endpoints.pub("executor")], ["runtime.rehome"])
    changes = Subscriber(ctx, [endpoints.pub("netbridge")], ["net.change"])
    prober = subprocess.Popen(["ip", "netns", "exec", lan.ns, sys.executable, "-c", PROBER],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        await wait_ready(bus)
        out: dict[str, Any] = {}
        if args.idle > 0:
            out["netmon_idle"] = await asyncio.get_running_loop().run_in_executor(
                None, netmon_footprint, netmon_pid, args.idle)
        devices: set[str] = set()
        rounds = []
        for i, size in enumerate(args.sizes):
            created = time.monotonic()
            new = [f"bench-rh-{n}" for n in range(len(devices), size)]
            for batch in range(0, len(new), 4):
                await asyncio.gather(*(create(bus, n, lan.parent) for n in new[batch:batch + 4]))
            devices.update(new)
            creating = round(time.monotonic() - created, 1)
            # Every runtime up and answering before the move, so freshly started runtimes
            # do not compete with the move for the CPU.
            ips: list[str] = []
            for name in sorted(devices):
                body = await bus.call("device_status", {"device_id": name})
                ips.extend(ep["ip_address"] for ep in body["networks"].values())
            if not (await probe(prober, ips))["ok"]:
                raise RuntimeError("runtimes not reachable before the move")
            result = await one_move(lan, blocks[(i + 1) % 2], devices, events, changes, prober)
            result["create_s"] = creating
            rounds.append(result)
        # The largest set moved again, back and forth: one move's time varies with the
        # engine's by a few tenths of a second, as much as the share being measured.
        out["moves"] = rounds
        out["repeats"] = []
        for j in range(args.repeat - 1):
            try:
                out["repeats"].append(await one_move(
                    lan, blocks[(len(args.sizes) + j + 1) % 2], devices, events, changes,
                    prober))
            except MoveFailed as exc:  # the engine's race, as in engine_floor
                out["move_failed"] = str(exc)
                break
        return out
    finally:
        prober.kill()
        prober.wait(10)
        events.close()
        changes.close()
        bus.close()
        ctx.destroy(linger=0)


def engine_floor(dc: docker.DockerClient, instance: str, lan: MovingLan,
                 blocks: list[str], workers: int, spacing: float,
                 macs: bool = False) -> dict[str, Any]:
    """The same move made with bare engine calls on the same runtimes (the executor
    stopped): what the engine itself needs, for comparison.

    At most `workers` endpoint changes are in flight, the disconnects started `spacing`
    seconds apart.  One at a time is what the agent does on a network: Docker 20.10 keeps
    a count of each network's endpoints and updates it racily when endpoint changes on
    one network overlap; now and then it is left one too high (four floors of eight here
    at eight at once, spaced or not), and the network stays "in use" with no endpoint
    listed until the engine restarts — `--no-floor` skips this part.

    `macs`: after each connect, each runtime's old MAC is set again in its namespace, in a
    thread of its own, as the agent does on engines before API 1.44 (which cannot set an
    endpoint's MAC): the part of a move that is neither the engine's nor the agent's
    Python, but the kernel's."""
    api = dc.api
    (old,) = [n for n in (api.inspect_network(r["Id"])
                          for r in api.networks(filters={"driver": "macvlan"}))
              if (n.get("Options") or {}).get("parent") == lan.parent]
    # Every container on the network, running or not, by the network's own list.
    members = sorted(str(c.get("Name")) for c in (old.get("Containers") or {}).values())
    old_macs = {str(c.get("Name")): str(c.get("MacAddress"))
                for c in (old.get("Containers") or {}).values()}
    pids = {n: int(api.inspect_container(n)["State"]["Pid"]) for n in members} if macs else {}
    subnet = next(b for b in blocks if b != old["IPAM"]["Config"][0]["Subnet"])
    pool = ThreadPoolExecutor(workers)
    fixes: list[threading.Thread] = []

    def connect(name: str, network: str) -> None:
        api.connect_container_to_network(name, network)
        if macs:
            fix = threading.Thread(target=macfix.apply_in,
                                   args=(pids[name], subnet, old_macs[name]))
            fix.start()
            fixes.append(fix)

    try:
        t0 = time.perf_counter()
        spaced(pool, lambda n: api.disconnect_container_from_network(n, old["Id"], force=True),
               members, spacing)
        t1 = time.perf_counter()
        removal = remove_when_left(api, old["Id"])
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
            subnet=subnet, gateway=lan.gateway(subnet))])
        new = api.create_network(f"bench-floor-{lan.parent}", driver="macvlan",
                                 options={"parent": lan.parent}, ipam=ipam,
                                 labels={"orchestrator.instance": instance})["Id"]
        t2 = time.perf_counter()
        list(pool.map(lambda n: connect(n, new), members))
        for fix in fixes:
            fix.join()
        t3 = time.perf_counter()
    finally:
        pool.shutdown()
    return {"runtimes": len(members), "workers": workers, "disconnect_spacing_s": spacing,
            "macs_set": len(fixes),
            "disconnect_s": round(t1 - t0, 3),
            "swap_networks_s": round(t2 - t1, 3), "connect_s": round(t3 - t2, 3),
            "total_s": round(t3 - t0, 3), **removal}


def spaced(pool: ThreadPoolExecutor, fn: Any, items: list[str], spacing: float) -> None:
    """`fn` of every item in `pool`, each started `spacing` seconds after the one before."""
    futures = []
    for item in items:
        futures.append(pool.submit(fn, item))
        time.sleep(spacing)
    for future in futures:
        future.result()


def agent_share(moves: list[dict[str, Any]], floors: list[dict[str, Any]]) -> dict[str, Any]:
    """The agent's total for the largest set (change event to every runtime re-homed)
    beside the engine's floor for the same runtimes, each the median of its runs, and
    the difference."""
    total = statistics.median(m["rehomed_after_event_s"] for m in moves)
    floor = statistics.median(f["total_s"] for f in floors)
    return {"runtimes": moves[0]["runtimes"], "total_s": round(total, 3),
            "engine_floor_s": round(floor, 3), "share_s": round(total - floor, 3),
            "runs": {"agent": [m["rehomed_after_event_s"] for m in moves],
                     "engine_floor": [f["total_s"] for f in floors]}}


def remove_when_left(api: Any, network: str) -> dict[str, Any]:
    """Remove the network once the engine has let go of every endpoint on it.

    The engine answers a disconnect before its endpoint count is down (Docker 20.10:
    "has active endpoints" right after the last disconnect), so a refused removal is
    retried briefly; endpoints still listed are disconnected again first.  How long
    that took and what was left are reported, not hidden in the floor."""
    started = time.perf_counter()
    refused: list[str] = []
    for _attempt in range(100):
        try:
            api.remove_network(network)
            break
        except docker.errors.APIError as exc:
            if "active endpoints" not in str(exc.explanation or exc):
                raise
            left = api.inspect_network(network).get("Containers") or {}
            refused.append(", ".join(sorted(str(c.get("Name")) for c in left.values()))
                           or "(none listed)")
            for endpoint in left.values():
                with contextlib.suppress(docker.errors.APIError):
                    api.disconnect_container_from_network(endpoint["Name"], network,
                                                          force=True)
            time.sleep(0.05)
    else:
        raise RuntimeError(f"the engine kept the old network's endpoints: {refused[-1]}")
    return {"removal_refused": len(refused), "refused_with": refused[:3],
            "removal_s": round(time.perf_counter() - started, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,5,20",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--debounce", type=float, default=3.0,
                        help="netmon's debounce (the product's default is 3 s)")
    parser.add_argument("--idle", type=float, default=30.0,
                        help="seconds of quiet over which netmon's footprint is measured")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the engine floor (on Docker 20.10 it may leave the old "
                             "network unremovable; see engine_floor)")
    parser.add_argument("--floor-workers", type=int, default=1,
                        help="endpoint changes the engine floor makes at once (the agent "
                             "makes one at a time per network; eight at once were slower "
                             "here and trip Docker 20.10's endpoint count)")
    parser.add_argument("--floor-spacing", type=float, default=0.0,
                        help="seconds between the starts of the engine floor's disconnects")
    parser.add_argument("--repeat", type=int, default=3,
                        help="moves of the largest set, and engine floors, whose medians "
                             "give the agent's share")
    parser.add_argument("--log", type=Path, help="keep the executor's log here")
    parser.add_argument("--log-level", default="DEBUG", help="the kept log's level")
    args = parser.parse_args()
    dockerenv.ensure_engine()
    dc = dockerenv.client()
    dockerenv.ensure_standin_image(dc)
    blocks = free_blocks(dc, 2, set())
    lan = make_moving_lan()
    with short_tmpdir("oatb") as base:
        executor = ExecutorProc(base, ORCH_LOG_LEVEL=args.log_level if args.log else "INFO",
                                ORCH_BEAT_INTERVAL="2")
        env = agent_env(base, ORCH_LOG_LEVEL="INFO")
        netmon = start_module("services.netmon", env, base / "netmon.out",
                              "--debounce", str(args.debounce))
        netbridge = start_module("services.netbridge", env, base / "netbridge.out")
        try:
            lan.lan_side(*blocks)
            lan.move_host(blocks[0])
            executor.start()
            figures = asyncio.run(run(args, base, executor, lan, blocks, netmon.pid))
            executor.stop()
            if not args.no_floor:
                # Engines before API 1.44 cannot set an endpoint's MAC; the agent sets it
                # after each connect, and floors with that fix-up alternate with bare ones.
                fixups = (version_tuple(dc.api.api_version)
                          < version_tuple(containers.PER_ENDPOINT_MAC_API))
                floors: list[dict[str, Any]] = []
                with_macs: list[dict[str, Any]] = []
                for _ in range(args.repeat):
                    try:
                        floors.append(engine_floor(dc, executor.instance, lan, blocks,
                                                   args.floor_workers, args.floor_spacing))
                        if fixups:
                            with_macs.append(engine_floor(
                                dc, executor.instance, lan, blocks, args.floor_workers,
                                args.floor_spacing, macs=True))
                    except RuntimeError as exc:  # the engine's own race (engine_floor)
                        figures["engine_floor_failed"] = str(exc)
                        break
                moves = [figures["moves"][-1], *figures["repeats"]]
                if floors:
                    figures["engine_floor"] = floors[-1]
                    figures["engine_floors"] = floors
                    figures["agent"] = agent_share(moves, floors)
                if with_macs:
                    figures["engine_floors_with_macs"] = with_macs
                    figures["agent_beside_mac_fixups"] = agent_share(moves, with_macs)
        finally:
            executor.stop()
            if args.log:
                args.log.write_text(executor.output())
            stop_process(netbridge)
            stop_process(netmon)
            cleanup_instance(dc, executor.instance)
            remove_moving_lan(lan)
    result = {"bench": "rehome", **context(), "engine": dc.version().get("Version"),
              "debounce_s": args.debounce, "subnets": blocks, **figures}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
