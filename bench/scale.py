"""The agent at scale: every figure of the performance targets in one JSON object.

The whole suite runs under supervisord, linked over real mTLS to a development cloud in
this process, with stand-in runtimes created through the executor (real managed vPLCs on
their internal networks; the cloud contract wants a vNIC, which would need a LAN, so the
creates use the executor's bus — everything else goes through the cloud).  The stand-in
is re-tagged here with the real image's health check (every 30 s), so the engine's load
is the production one.  At each level of runtimes (default 0, 10, 50, 100):

* create → running, p50 of `--timed` sequential creates at 0 and at the top level (pull
  policy as configured, `auto` by default: the pinned bench tag is local, never pulled);
* `get_device_status` round trip, p50/p99, 1 and 16 in flight; `run_command` GET of
  `/api/version` p50/p99; `get_consumption_device` answer time; beside each timed set,
  every program's CPU per command (this process's cloud included: it shares the
  machine) and the shares of all commands, and of the slowest 5 %, that met one of the
  engine's health checks (`exec_start` events of the runtimes);
* idle CPU per program over `--idle-seconds`, PSS/USS per program and in total;

then, at the top level, the consumption answer for 48 h of history (written into the
metrics history with the metrics program stopped, as a restart would find it), an optional
soak (`--soak-seconds`: mixed commands and create/delete churn, PSS sampled), and last
`bench/rehome.py` with 20 runtimes for the agent's share of a re-homing beside the
engine's own time.  Everything created is removed, also on failure or SIGTERM.

Run from the repository root as root with the Docker engine up (under the machine lock):
    python bench/scale.py [--levels 0,10,50,100] [--idle-seconds 30] [--soak-seconds 0]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import psutil
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cloud_rtt import round_trips, stamped_round_trips, summary_ms
from bench.common_info import ROOT, compile_as_image, context, percentile
from common import labels, wire
from common.bus import Endpoints, RpcClient
from devcloud.server import DevCloud
from services.metrics.history import History
from testkit import dockerenv
from testkit.executor import STANDIN_REPO, cleanup_instance, wait_ready
from testkit.helpers import short_tmpdir
from testkit.suite import PROGRAMS, Suite

MB = 2**20
AGENT = ("gateway", "executor", "metrics", "netbridge")
TARGETS = {"create_to_running_p50_s": 0.4, "consumption_48h_ms": 10.0,
           "idle_cpu_percent_of_one_core": 0.5, "total_pss_mb": 110.0,
           "status_p99_ms_sequential": 5.0, "status_p99_ms_16_in_flight": 15.0,
           "run_command_p50_ms": 5.0, "run_command_p99_ms": 20.0, "rehome_agent_share_s": 0.2}


def bench_image(dc: docker.DockerClient, interval: int) -> str:
    """The stand-in with the real image's health check timing; returns its tag."""
    tag = f"scale-health{interval}s"
    dockerfile = (f"FROM {dockerenv.STANDIN_IMAGE}\n"
                  f"HEALTHCHECK --interval={interval}s --timeout=5s --start-period=5s "
                  "--retries=3 CMD curl -kfsS https://127.0.0.1:8443/api/version || exit 1\n")
    dc.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{STANDIN_REPO}:{tag}",
                    rm=True)
    return tag


# The executor logs each create's milliseconds per step (runtime/create.py `Timings`);
# these steps are the engine's calls, the rest is the agent's own work.
CREATED = re.compile(r"runtime (\S+) created in (\d+) ms \((.*)\)")
ENGINE_STEPS = frozenset({"image+internal", "macvlan", "container", "start", "inspect",
                          "agent link"})


def create_profile(log_text: str, prefix: str) -> dict[str, Any]:
    """Medians over the creates named `prefix…`: the executor's whole create, the
    engine's calls in it, the agent's share, and each step."""
    totals, engine, steps = [], [], defaultdict(list)
    for name, total, parts in CREATED.findall(log_text):
        if not name.startswith(prefix):
            continue
        spent: dict[str, float] = defaultdict(float)
        for part in parts.split(", "):
            what, _, ms = part.rpartition(" ")
            spent[what] += float(ms)
        totals.append(float(total))
        engine.append(sum(v for k, v in spent.items() if k in ENGINE_STEPS))
        for what, ms in spent.items():
            steps[what].append(ms)
    if not totals:
        return {}
    agent = [t - e for t, e in zip(totals, engine, strict=True)]
    return {"executor_p50_ms": statistics.median(totals),
            "engine_calls_p50_ms": statistics.median(engine),
            "agent_share_p50_ms": statistics.median(agent),
            "steps_p50_ms": {k: statistics.median(v) for k, v in steps.items()}}


class HealthChecks:
    """When the engine started the runtimes' health checks: the `exec_start` events of
    this bench's containers, followed in a thread for the whole run.  A health check is a
    `runc exec` and a `curl` in the container, CPU the engine takes from the same two
    cores as the agent, so a command's time can be set beside them."""

    def __init__(self, instance: str) -> None:
        self.started: list[float] = []
        self._sorted: list[float] = []
        self._client = docker.from_env(timeout=None)
        self._stream = self._client.api.events(decode=True, filters={
            "type": ["container"], "event": ["exec_start"],
            "label": [f"{labels.INSTANCE}={instance}"]})
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for event in self._stream:
                self.started.append(event["timeNano"] / 1e9)
        except Exception:  # the stream closed under us: the run is over
            return

    # How long a check loads the machine after the engine reports its start: in
    # bench/stalls.py's profile the runc exec and the runtime's side of the curl end
    # 100-120 ms after `exec_start`.
    LASTS = 0.15

    def met(self, sent: float, took: float) -> int:
        """How many health checks loaded the machine while a command was in flight."""
        starts = self.starts()
        return (bisect.bisect_right(starts, sent + took)
                - bisect.bisect_left(starts, sent - self.LASTS))

    def starts(self) -> list[float]:
        if len(self._sorted) != len(self.started):
            self._sorted = sorted(self.started)
        return self._sorted

    def overlap(self, stamped: list[tuple[float, float]]) -> dict[str, Any]:
        """Shares of all commands, and of the slowest 5 %, that met a health check, and
        the round trips of those that met none."""
        if not stamped:
            return {}
        cut = percentile([d for _, d in stamped], 95)
        met = [(d, self.met(sent, d) > 0) for sent, d in stamped]
        slow = [hit for d, hit in met if d >= cut]
        clear = [d for d, hit in met if not hit]
        return {"all": round(sum(hit for _, hit in met) / len(met), 2),
                "slowest_5_percent": round(sum(slow) / len(slow), 2),
                "clear_of_them": summary_ms(clear) if clear else {"n": 0}}

    def close(self) -> None:
        self._stream.close()
        self._client.close()


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Python's collector off in this process while commands are timed.  The development
    cloud answers the agent from this process and keeps its last 10,000 acks; a full
    collection of them stalled every command in flight by up to 60 ms, which is the
    bench's pause, not the agent's."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Bench:
    def __init__(self, args: argparse.Namespace, suite: Suite, cloud: DevCloud, agent_id: str,
                 bus: RpcClient, tag: str, prefix: str,
                 checks: HealthChecks | None = None) -> None:
        self.args, self.suite, self.cloud, self.agent_id = args, suite, cloud, agent_id
        self.bus, self.tag, self.prefix = bus, tag, prefix
        self.checks = checks
        self.devices: list[str] = []

    # --- runtimes ----------------------------------------------------------------------

    async def create(self, name: str) -> float:
        """Seconds from the request to `success` and running (10 ms polling)."""
        started = time.perf_counter()
        ack = await self.bus.call("create_runtime", {"container_name": name, "vnic_configs": [],
                                                     "runtime_version": self.tag})
        if ack.get("status") != "creating":
            raise RuntimeError(f"create of {name}: {ack}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            body = await self.bus.call("device_status", {"device_id": name})
            if body["status"] == "success" and body.get("is_running"):
                return time.perf_counter() - started
            if body["status"] != "creating":
                raise RuntimeError(f"create of {name}: {body}")
            await asyncio.sleep(0.01)
        raise RuntimeError(f"create of {name} timed out")

    async def delete(self, name: str) -> None:
        deadline = time.monotonic() + 120
        while True:  # `running` shows before the create's last bookkeeping step is done
            ack = await self.cloud.send(self.agent_id, "delete_device", {"device_id": name},
                                        timeout=60)
            if "in progress" not in str(ack.get("error")) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        if ack.get("status") not in ("deleting", "success"):
            raise RuntimeError(f"delete of {name}: {ack}")
        while time.monotonic() < deadline:
            body = await self.bus.call("device_status", {"device_id": name})
            if body["status"] == "not_found":
                return
            if body["status"] not in ("deleting", "success"):
                raise RuntimeError(f"delete of {name}: {body}")
            await asyncio.sleep(0.05)
        raise RuntimeError(f"delete of {name} timed out")

    async def grow(self, level: int) -> float:
        """Create runtimes up to `level`, `--grow-batch` at a time.  One at a time by
        default: a runtime's health checks keep the rhythm of its start, so runtimes
        started together check together, and four started at once made the engine run
        four checks at the same instant every 30 s, burstier than a plant's runtimes,
        which are created one by one."""
        started = time.monotonic()
        while len(self.devices) < level:
            batch = [f"{self.prefix}-{len(self.devices) + i}"
                     for i in range(min(self.args.grow_batch, level - len(self.devices)))]
            await asyncio.gather(*(self.create(n) for n in batch))
            self.devices.extend(batch)
        return time.monotonic() - started

    async def timed_creates(self) -> dict[str, Any]:
        """`--timed` sequential creates, each deleted again, so every one is timed with
        exactly the level's runtimes running."""
        times = []
        for i in range(self.args.timed):
            name = f"{self.prefix}-t{len(self.devices)}-{i}"
            times.append(await self.create(name))
            await self.delete(name)
        return {"running_before": len(self.devices), "n": len(times),
                "p50_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
                **create_profile(self.suite.output(), f"{self.prefix}-t{len(self.devices)}-")}

    # --- figures -----------------------------------------------------------------------

    async def commands(self) -> dict[str, Any]:
        device = self.devices[0] if self.devices else "bench-missing-device"
        status = {"device_id": device}
        n = self.args.commands
        await round_trips(self.cloud, self.agent_id, "get_device_status", 64, 4, status)
        out: dict[str, Any] = {
            "status_sequential": await self.timed("get_device_status", n, 1, status),
            "status_16_in_flight": await self.timed("get_device_status",
                                                    self.args.in_flight_commands, 16, status)}
        if not self.devices:
            return out
        command = {"device_id": device, "method": "GET", "api": "/api/version"}
        await round_trips(self.cloud, self.agent_id, "run_command", 10, 1, command)
        out["run_command_get"] = await self.timed("run_command", n // 2, 1, command)
        out["consumption_device_1h"] = await self.consumption(device, "1h")
        return out

    async def timed(self, topic: str, count: int, concurrency: int,
                    payload: dict[str, Any]) -> dict[str, Any]:
        """Round trips (p50/p99), with where their time went: each program's CPU per
        command (the bench's own cloud included: it shares the machine), and how many of
        them, and of the slowest 5 %, met a health check of the engine."""
        procs = self.processes()
        procs["bench_cloud"] = psutil.Process()
        before = {name: sum(proc.cpu_times()[:2]) for name, proc in procs.items()}
        with quiet_gc():
            stamped = await stamped_round_trips(self.cloud, self.agent_id, topic, count,
                                                concurrency, payload)
        cpu = {name: round(1000 * (sum(proc.cpu_times()[:2]) - before[name]) / len(stamped), 3)
               for name, proc in procs.items() if name != "fatalwatch"}
        out = {**summary_ms([d for _, d in stamped]), "cpu_ms_per_command": cpu}
        if self.checks is not None:
            out["health_check_overlap"] = self.checks.overlap(stamped)
        return out

    async def consumption(self, device: str, period: str) -> dict[str, Any]:
        payload = {"device_id": device, "cpuPeriod": period, "memoryPeriod": period}
        times = await round_trips(self.cloud, self.agent_id, "get_consumption_device", 50, 1,
                                  payload)
        ack = await self.cloud.send(self.agent_id, "get_consumption_device", payload)
        return {**summary_ms(times), "points_cpu": len(ack.get("cpu_usage", [])),
                "points_memory": len(ack.get("memory_usage", []))}

    def processes(self) -> dict[str, psutil.Process]:
        return {name: psutil.Process(pid) for name, pid in self.suite.running_pids().items()}

    async def idle(self, profile: str = "") -> dict[str, Any]:
        """CPU per program over `--idle-seconds` of nothing asked; then PSS/USS.  With
        `profile` (and `--profile-dir`), py-spy samples the agent's programs meanwhile."""
        await asyncio.sleep(5)  # past the commands just sent
        procs = self.processes()
        spies = self.spy(procs, profile)
        before = {n: sum(p.cpu_times()[:2]) for n, p in procs.items()}
        started = time.monotonic()
        await asyncio.sleep(self.args.idle_seconds)
        elapsed = time.monotonic() - started
        for spy in spies:  # py-spy can lag behind its --duration on a busy machine
            try:
                spy.wait(self.args.idle_seconds + 60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        per: dict[str, Any] = {}
        for name, proc in procs.items():
            mem = proc.memory_full_info()
            per[name] = {"cpu_percent_of_one_core":
                         round(100 * (sum(proc.cpu_times()[:2]) - before[name]) / elapsed, 3),
                         "pss_mb": round(mem.pss / MB, 1), "uss_mb": round(mem.uss / MB, 1)}
        agent_cpu = sum(per[n]["cpu_percent_of_one_core"] for n in AGENT if n in per)
        return {"window_s": round(elapsed, 1), "processes": per,
                "agent_cpu_percent_of_one_core": round(agent_cpu, 3),
                "total_pss_mb": round(sum(p["pss_mb"] for p in per.values()), 1),
                "total_uss_mb": round(sum(p["uss_mb"] for p in per.values()), 1)}

    def spy(self, procs: dict[str, psutil.Process], label: str) -> list[subprocess.Popen[bytes]]:
        """py-spy (when installed) over the idle window: collapsed stacks per program.
        Its own sampling costs the target little (no pausing: --nonblocking)."""
        if not (label and self.args.profile_dir):
            return []
        out = Path(self.args.profile_dir)
        out.mkdir(parents=True, exist_ok=True)
        spy_bin = Path(sys.executable).parent / "py-spy"
        return [subprocess.Popen(
            [str(spy_bin), "record", "--nonblocking", "--format", "raw", "--rate", "1000",
             "--duration", str(int(self.args.idle_seconds)), "--pid", str(procs[name].pid),
             "--output", str(out / f"{label}-{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name in AGENT if name in procs and spy_bin.exists()]

    def pss(self) -> dict[str, float]:
        out = {n: round(p.memory_full_info().pss / MB, 1) for n, p in self.processes().items()}
        out["total"] = round(sum(out.values()), 1)
        return out

    def memory_parts(self) -> dict[str, dict[str, float]]:
        """Each program's PSS in parts (MB): anonymous memory in the brk heap, in other
        anonymous mappings (malloc arenas, pymalloc arenas, thread stacks, mmap'd
        buffers), and file-backed (the interpreter, libraries, extension modules); with
        its thread count."""
        out: dict[str, dict[str, float]] = {}
        for name, proc in self.processes().items():
            try:
                out[name] = smaps_parts(proc.pid)
                out[name]["threads"] = proc.num_threads()
            except (OSError, psutil.Error):
                continue
        return out

    # --- 48 h of history, soak ----------------------------------------------------------

    async def history_48h(self) -> dict[str, Any]:
        """Stop metrics, give every device 48 h of 5 s samples, start it, ask."""
        self.suite.ctl("stop", "metrics")
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, self._seed)
        seeded = time.monotonic() - started
        self.suite.ctl("start", "metrics")
        self.suite.wait_running(60)
        device = self.devices[0]
        out = {"devices": len(self.devices), "seed_s": round(seeded, 1),
               "device": await self.consumption(device, "48h")}
        payload = {"cpuPeriod": "48h", "memoryPeriod": "48h"}
        times = await round_trips(self.cloud, self.agent_id, "get_consumption_orchestrator",
                                  50, 1, payload)
        out["orchestrator"] = summary_ms(times)
        return out

    def _seed(self) -> None:
        history = History(self.suite.base / "state" / "consumption.sqlite3")
        end = time.time() - 60  # older than anything the running metrics wrote
        count = 48 * 3600 // 5
        try:
            for n, device in enumerate(self.devices):
                history.add_devices((device, end - 5 * (count - i), float((i + n) % 13),
                                     40.0 + (i % 50) / 10) for i in range(count))
            for i in range(count):
                history.add(end - 5 * (count - i), float(i % 9), 900.0 + i % 100)
        finally:
            history.close()

    async def soak(self, seconds: float) -> dict[str, Any]:
        """Mixed commands and create/delete churn for `seconds`; PSS every 30 s."""
        deadline = time.monotonic() + seconds
        samples = [{"t_s": 0.0, **self.pss()}]
        started = time.monotonic()
        served = 0
        device = self.devices[0]
        while time.monotonic() < deadline:
            for topic, payload in (
                    ("get_device_status", {"device_id": device}),
                    ("get_consumption_device", {"device_id": device, "cpuPeriod": "1h",
                                                "memoryPeriod": "1h"}),
                    ("run_command", {"device_id": device, "method": "GET",
                                     "api": "/api/version"})):
                served += len(await round_trips(self.cloud, self.agent_id, topic, 64, 16,
                                                payload))
            name = f"{self.prefix}-churn"
            await self.create(name)
            await self.delete(name)
            served += 2
            if time.monotonic() - started >= 30 * len(samples):
                samples.append({"t_s": round(time.monotonic() - started, 1), **self.pss()})
        samples.append({"t_s": round(time.monotonic() - started, 1), **self.pss()})
        first, last = samples[0]["total"], samples[-1]["total"]
        return {"seconds": round(time.monotonic() - started, 1), "commands": served,
                "pss_samples": samples, "pss_parts_at_end": self.memory_parts(),
                "total_growth_percent": round(100 * (last - first) / first, 2)}


def smaps_parts(pid: int) -> dict[str, float]:
    """PSS of one process split by kind of mapping, from /proc/PID/smaps (MB)."""
    parts = {"heap": 0, "anon_other": 0, "file": 0}
    kind = "file"
    with open(f"/proc/{pid}/smaps", encoding="ascii", errors="replace") as smaps:
        for line in smaps:
            field, _, rest = line.partition(" ")
            if not field.endswith(":"):  # a mapping's header: address perms offset dev inode path
                cols = line.split()
                path = cols[5] if len(cols) > 5 else ""
                kind = ("heap" if path == "[heap]" else
                        "file" if path.startswith("/") else "anon_other")
            elif field == "Pss:":
                parts[kind] += int(rest.split()[0])
    return {k: round(v / 1024, 1) for k, v in parts.items()}


Body = Callable[["Bench", list[int], argparse.Namespace], Awaitable[dict[str, Any]]]


async def run(args: argparse.Namespace, base: Path, instance: str, tag: str,
              body: Body | None = None) -> dict[str, Any]:
    """The suite and the cloud around `body` (default: the levels of this bench)."""
    levels = sorted({int(n) for n in args.levels.split(",")})
    zctx = zmq.asyncio.Context()
    suite: Suite | None = None
    try:
        async with DevCloud(base / "cloud", port=0, admin_port=0, provision_port=0) as cloud:
            creds = await cloud.enroll(base / "mtls")
            (base / "state").mkdir()
            suite = Suite(base, ORCH_LOG_LEVEL=args.log_level, ORCH_CLOUD_URL=cloud.url,
                          ORCH_MTLS_DIR=str(creds.directory), ORCH_CA_FILE=str(creds.ca_path),
                          ORCH_INSTANCE_ID=instance, ORCH_RUNTIME_IMAGE=STANDIN_REPO,
                          ORCH_PULL_POLICY=args.pull_policy)
            suite.start()
            suite.wait_running(60, programs=(*PROGRAMS, "fatalwatch"))
            if not await cloud.wait_connected(creds.agent_id, 60):
                raise RuntimeError(f"the agent did not connect; see {suite.log}")
            bus = RpcClient(zctx, Endpoints(base / "run").rpc("executor"),
                            wire.Stamper("bench"), 60)
            checks = HealthChecks(instance)
            try:
                await wait_ready(bus, 60)
                bench = Bench(args, suite, cloud, creds.agent_id, bus, tag, f"sc-{instance}",
                              checks)
                return await (body or levels_run)(bench, levels, args)
            finally:
                checks.close()
                bus.close()
    finally:
        if suite is not None:
            suite.stop()
            if args.keep_log:
                shutil.copyfile(suite.log, args.keep_log)
        zctx.destroy(linger=0)


async def levels_run(bench: Bench, levels: list[int], args: argparse.Namespace
                     ) -> dict[str, Any]:
    out: dict[str, Any] = {"levels": {}}
    for level in levels:
        figures: dict[str, Any] = {}
        figures["grow_s"] = round(await bench.grow(level), 1)
        if level in (levels[0], levels[-1]) and args.timed:
            figures["create_to_running"] = await bench.timed_creates()
        figures.update(await bench.commands())
        figures["idle"] = await bench.idle(f"idle{level}" if level == levels[-1] else "")
        out["levels"][str(level)] = figures
    if bench.devices:
        out["consumption_48h"] = await bench.history_48h()
        out["after_48h_history_idle"] = await bench.idle()
    if args.soak_seconds > 0 and bench.devices:
        out["soak"] = await bench.soak(args.soak_seconds)
    return out


def rehome(size: int, keep_log: str = "") -> dict[str, Any]:
    """bench/rehome.py with `size` runtimes: the agent's share beside the engine's time.
    With `keep_log`, its executor's debug log is kept beside the suite's (`….rehome`)."""
    log = ["--log", f"{keep_log}.rehome"] if keep_log else []
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "rehome.py"), "--sizes",
                             str(size), "--idle", "0", *log], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except BaseException:
        proc.send_signal(signal.SIGINT)  # its own cleanup runs on KeyboardInterrupt
        proc.wait(120)
        raise
    if proc.returncode != 0:
        last = (stderr.strip().splitlines() or [""])[-1]
        return {"error": f"bench/rehome.py exited {proc.returncode}: {last[:500]}"}
    figures = json.loads(stdout)
    failed = {k: figures[k] for k in ("move_failed", "engine_floor_failed") if k in figures}
    if "agent" not in figures:  # no floor could be made: no share to give
        return {"error": "no engine floor", **failed, "moves": figures["moves"]}
    move, floor, agent = figures["moves"][-1], figures["engine_floor"], figures["agent"]
    beside = figures.get("agent_beside_mac_fixups")
    macs = ({"engine_floor_with_mac_fixups_s": beside["engine_floor_s"],
             "agent_share_beside_mac_fixups_s": beside["share_s"],
             "runs_with_mac_fixups": beside["runs"]["engine_floor"]} if beside else {})
    return {**failed, "runtimes": move["runtimes"], "engine_floor_s": agent["engine_floor_s"],
            "agent_total_s": agent["total_s"], "agent_share_s": agent["share_s"], **macs,
            "runs": agent["runs"],
            "engine_floor": floor, "change_event_s": move["change_event_s"],
            "all_reachable_after_event_s": move["reachable_after_event_s"]}


def summary(figures: dict[str, Any]) -> dict[str, Any]:
    """The target figures, pulled out of the levels."""
    levels = figures["levels"]
    top = levels[max(levels, key=int)]
    first = levels[min(levels, key=int)]
    out: dict[str, Any] = {
        "create_to_running_p50_s": {k: v["create_to_running"]["p50_s"] for k, v in
                                    (("at_0", first), ("at_top", top))
                                    if "create_to_running" in v},
        "status_p99_ms_sequential": top["status_sequential"]["p99_ms"],
        "status_p99_ms_16_in_flight": top["status_16_in_flight"]["p99_ms"],
        "status_16_in_flight_cpu_ms_per_command":
            top["status_16_in_flight"].get("cpu_ms_per_command"),
        "status_16_in_flight_health_check_overlap":
            top["status_16_in_flight"].get("health_check_overlap"),
        "idle_agent_cpu_percent_of_one_core": top["idle"]["agent_cpu_percent_of_one_core"],
        "total_pss_mb": top["idle"]["total_pss_mb"],
    }
    if "run_command_get" in top:
        out["run_command_p50_ms"] = top["run_command_get"]["p50_ms"]
        out["run_command_p99_ms"] = top["run_command_get"]["p99_ms"]
        out["run_command_health_check_overlap"] = top["run_command_get"].get(
            "health_check_overlap")
    if "consumption_48h" in figures:
        out["consumption_48h_p50_ms"] = figures["consumption_48h"]["device"]["p50_ms"]
    if "rehome" in figures and "agent_share_s" in figures["rehome"]:
        out["rehome_agent_share_s"] = figures["rehome"]["agent_share_s"]
        if "agent_share_beside_mac_fixups_s" in figures["rehome"]:
            out["rehome_agent_share_beside_mac_fixups_s"] = figures["rehome"][
                "agent_share_beside_mac_fixups_s"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="0,10,50,100")
    parser.add_argument("--commands", type=int, default=400,
                        help="status round trips per concurrency and level (half as many "
                             "run_command GETs)")
    parser.add_argument("--in-flight-commands", type=int, default=4000,
                        help="status round trips with 16 in flight, per level (4,000 take "
                             "about 3 s, ten health checks at 100 runtimes: enough that "
                             "the p99 does not depend on where the checks fell)")
    parser.add_argument("--timed", type=int, default=10, help="timed creates at 0 and top")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--health-interval", type=int, default=30,
                        help="the runtimes' health check interval (the real image's: 30 s)")
    parser.add_argument("--pull-policy", default="auto")
    parser.add_argument("--grow-batch", type=int, default=1,
                        help="runtimes created at once while growing to a level")
    parser.add_argument("--rehome", type=int, default=20, help="runtimes moved; 0 skips")
    parser.add_argument("--soak-seconds", type=float, default=0.0,
                        help="mixed commands and churn at the top level, PSS sampled")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--keep-log", default="",
                        help="copy the suite's log (every program's output) here at the end, "
                             "and keep the re-homing bench's executor log beside it")
    parser.add_argument("--profile-dir", default="",
                        help="py-spy collapsed stacks of the idle window at the top level "
                             "(needs py-spy in the environment)")
    args = parser.parse_args()
    # SIGTERM unwinds like ^C, so every `finally` below removes what was made.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    byte_code = compile_as_image()  # the image's .pyc files, so memory is the image's
    dockerenv.ensure_engine()
    dc = dockerenv.client()
    dockerenv.ensure_standin_image(dc)
    tag = bench_image(dc, args.health_interval)
    instance = dockerenv.test_instance("s")
    with short_tmpdir("oasc") as base:
        try:
            figures = asyncio.run(run(args, base, instance, tag))
        finally:
            cleanup_instance(dc, instance)
    if args.rehome > 0:
        figures["rehome"] = rehome(args.rehome, args.keep_log)
    result = {"benchmark": "scale", **context(), "engine": dc.version().get("Version"),
              "sizes": {"levels": args.levels, "commands": args.commands,
                        "in_flight_commands": args.in_flight_commands, "timed": args.timed,
                        "idle_seconds": args.idle_seconds, "log_level": args.log_level,
                        "health_interval_s": args.health_interval,
                        "pull_policy": args.pull_policy, "soak_seconds": args.soak_seconds,
                        "grow_batch": args.grow_batch},
              "byte_code": byte_code, "summary": summary(figures), "targets": TARGETS, **figures,
              "bench_seconds": round(time.monotonic() - started, 1)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
