"""Soak: the whole agent under a steady command stream and a fault every few minutes.

`--vplcs` stand-in runtimes (health checks at the real image's 30 s interval) are created
through the development cloud, each with a vNIC on a test LAN (a veth whose peer lives in
a namespace made here, on documentation blocks nothing else uses).  Then, for
`--seconds`: reads at `--rate` per second (status, consumption, host interfaces,
run_command GETs), create/delete churn on `--churn` extra runtimes, and every
`--fault-every` seconds one fault: kill -9 of a program, `supervisorctl restart` of a
program, or the netmon sidecar killed and started again (`--docker-faults` adds a 20 s
engine outage: the engine is shared, so only when nothing else uses it).

Prints one JSON object: commands sent, acks received and lost (a command the cloud
resent until it was acked is not lost; an explicit error ack counts as acked and is
counted by kind), the PSS of every program after warm-up and at the end, the heartbeat
period and jitter (as the cloud received them), program restarts, the faults, the
machine and the commit.  Everything created is removed at the end, also on failure or
Ctrl-C.  Run from the repository root as root with the Docker engine up:

    python bench/soak.py [--seconds 3600] [--vplcs 50] [--rate 2] [--fault-every 180]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import docker.errors
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common_info import context, percentile
from testkit import dockerenv, faults
from testkit.cloudagent import CloudAgent, cloud_agent, metrics_history_readable, settled_problems
from testkit.stream import Sender, churn, read_stream, settle
from testkit.suite import PROGRAMS

log = logging.getLogger("soak")
MB = 2**20
SOAK_TAG = "soak30"
# The real image's health check (reference/openplc-runtime.md) on top of the stand-in.
SOAK_DOCKERFILE = f"""FROM {dockerenv.STANDIN_IMAGE}
HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 \\
    CMD curl -kfsS https://127.0.0.1:8443/api/version || exit 1
"""
PER_LAN = 25


def build_soak_image() -> str:
    dc = dockerenv.client()
    try:
        dockerenv.ensure_standin_image(dc)
        dc.images.build(fileobj=io.BytesIO(SOAK_DOCKERFILE.encode()), rm=True, pull=False,
                        tag=f"orchestrator/openplc-standin:{SOAK_TAG}")
    finally:
        dc.close()
    return SOAK_TAG


def remove_soak_image() -> None:
    dc = dockerenv.client()
    with contextlib.suppress(docker.errors.APIError), contextlib.closing(dc):
        dc.images.remove(f"orchestrator/openplc-standin:{SOAK_TAG}")  # refused while used


def pss(agent: CloudAgent) -> dict[str, float]:
    out = {}
    for name, pid in agent.pids().items():
        with contextlib.suppress(psutil.Error):
            out[name] = round(psutil.Process(pid).memory_full_info().pss / MB, 1)
    return out


class Watch:
    """Pids of the programs over time (restarts) and heartbeats as the cloud got them."""

    def __init__(self, agent: CloudAgent) -> None:
        self.agent = agent
        self.pids: dict[str, set[int]] = {}
        self.beats: list[tuple[int, float]] = []
        self.last_seq = 0
        self.started = time.monotonic()
        # (minute, pid, PSS MB) per program, a sample a minute: a restarted program starts
        # a new series, so growth is judged per process, not across a fault's restart.
        self.memory: dict[str, list[tuple[float, int, float]]] = {}

    def poll(self) -> None:
        for name, pid in self.agent.pids().items():
            self.pids.setdefault(name, set()).add(pid)
        minute = (time.monotonic() - self.started) / 60
        if all(not rows or minute - rows[-1][0] >= 1 for rows in self.memory.values()):
            for name, pid in self.agent.pids().items():
                with contextlib.suppress(psutil.Error):
                    mb = psutil.Process(pid).memory_full_info().pss / MB
                    self.memory.setdefault(name, []).append((round(minute, 1), pid, round(mb, 1)))
        for beat in self.agent.cloud.hub.heartbeats(self.agent.id, after_seq=self.last_seq):
            self.beats.append((beat.seq, beat.received_at))
            self.last_seq = beat.seq

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5)

    def memory_trend(self) -> dict[str, Any]:
        """Per program, the longest-lived process: its PSS after ten minutes of life and
        at its last sample, and the timeline of every sample (for a plot)."""
        out: dict[str, Any] = {}
        for name, rows in sorted(self.memory.items()):
            by_pid: dict[int, list[tuple[float, float]]] = {}
            for minute, pid, mb in rows:
                by_pid.setdefault(pid, []).append((minute, mb))
            series = max(by_pid.values(), key=lambda r: r[-1][0] - r[0][0])
            settled = [r for r in series if r[0] - series[0][0] >= 10] or series
            first, last = settled[0], settled[-1]
            out[name] = {"minutes": round(last[0] - first[0], 1), "from_mb": first[1],
                         "to_mb": last[1], "max_mb": max(mb for _, mb in settled),
                         "growth_percent": round(100 * (last[1] - first[1]) / first[1], 1),
                         "processes": len(by_pid),
                         "timeline": [[m, mb] for m, _, mb in rows]}
        return out

    def heartbeat(self, period: float) -> dict[str, Any]:
        intervals = [b[1] - a[1] for a, b in zip(self.beats, self.beats[1:], strict=False)
                     if b[0] == a[0] + 1]
        # A gap over twice the period spans a reconnection (the gateway killed): counted
        # apart, not as jitter.
        steady = [i for i in intervals if i < 2 * period]
        if len(steady) < 2:
            return {"count": len(self.beats)}
        return {"count": len(self.beats), "intervals": len(steady),
                "gaps_over_2_periods": len(intervals) - len(steady),
                "mean_s": round(statistics.fmean(steady), 4),
                "stdev_s": round(statistics.stdev(steady), 4),
                "p99_abs_dev_s": round(percentile([abs(i - period) for i in steady], 99), 4),
                "max_abs_dev_s": round(max(abs(i - period) for i in steady), 4),
                "max_gap_s": round(max(intervals), 3)}


FAULT_KINDS = ("kill9", "restart", "netmon")


async def inject(agent: CloudAgent, rng: random.Random, docker_faults: bool) -> dict[str, Any]:
    kinds = FAULT_KINDS + (("dockerd",) if docker_faults else ())
    kind = rng.choice(kinds)
    program = rng.choice(PROGRAMS) if kind in ("kill9", "restart") else None
    at = time.time()
    try:
        if kind == "kill9":
            took = await faults.kill9(agent, str(program))
        elif kind == "restart":
            took = await faults.ctl_restart(agent, str(program))
        elif kind == "netmon":
            took = await faults.netmon_bounce(agent)
        else:
            took = await faults.engine_outage(20)
        outcome = "recovered"
    except (AssertionError, RuntimeError, OSError, KeyError) as exc:
        took, outcome = 0.0, f"failed: {exc}"
    return {"kind": kind, "program": program, "at": round(at, 1), "recovery_s": round(took, 2),
            "outcome": outcome}


async def create_all(sender: Sender, agent: CloudAgent, names: list[str], tag: str,
                     parallel: int = 4) -> list[str]:
    slots = asyncio.Semaphore(parallel)

    async def one(i: int, name: str) -> str | None:
        async with slots:
            vnic = agent.vnic(i // PER_LAN, 11 + i % PER_LAN)
            ack = await sender.send("create_new_runtime", {
                "container_name": name, "vnic_configs": [vnic], "runtime_version": tag})
            if not isinstance(ack, dict) or ack.get("status") != "creating":
                log.warning("create of %s: %s", name, ack)
                return None
            state = await settle(sender, name, 180)
            return name if state.get("status") == "success" else None
    done = await asyncio.gather(*(one(i, n) for i, n in enumerate(names)))
    return [n for n in done if n]


async def soak(args: argparse.Namespace, tag: str) -> dict[str, Any]:
    # SIGTERM unwinds like Ctrl-C (asyncio.run cancels on SIGINT), so the cleanup runs.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    prefix = f"sk{os.getpid() % 10000}"
    total = args.vplcs + args.churn
    lans = (total + PER_LAN - 1) // PER_LAN
    async with cloud_agent(lans, tag=prefix, ORCH_LOG_LEVEL="WARNING") as agent:
        sender = Sender(agent.cloud, agent.id, ack_timeout=20, deadline=180)
        names = [f"{prefix}-plc{i:03d}" for i in range(args.vplcs)]
        t0 = time.monotonic()
        running = await create_all(sender, agent, names, tag)
        created_s = time.monotonic() - t0
        await asyncio.sleep(args.warmup)
        watch = Watch(agent)
        await asyncio.to_thread(watch.poll)
        pss_start = await asyncio.to_thread(pss, agent)
        stop = asyncio.Event()
        rng = random.Random(args.seed)
        extra = [(f"{prefix}-churn{i}", agent.vnic((args.vplcs + i) // PER_LAN,
                                                  11 + (args.vplcs + i) % PER_LAN))
                 for i in range(args.churn)]
        tasks = [asyncio.create_task(read_stream(sender, running, args.rate, stop, args.seed)),
                 asyncio.create_task(watch.run(stop)),
                 *(asyncio.create_task(churn(sender, n, v, stop, tag, args.churn_pause))
                   for n, v in extra)]
        injected = []
        started = time.monotonic()
        end = started + args.seconds
        next_fault = started + args.fault_every
        while (now := time.monotonic()) < end:
            if now >= next_fault:
                injected.append(await inject(agent, rng, args.docker_faults))
                next_fault = time.monotonic() + args.fault_every
            await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        stream_s = time.monotonic() - started
        await asyncio.to_thread(watch.poll)
        pss_end = await asyncio.to_thread(pss, agent)
        status = await asyncio.to_thread(agent.suite.status)
        problems = await asyncio.to_thread(settled_problems, agent)
        return {
            "vplcs": {"asked": args.vplcs, "running": len(running), "create_s": round(created_s, 1),
                      "lans": [lan.subnet for lan in agent.lans]},
            "stream": {"seconds": round(stream_s, 1), "read_rate_per_s": args.rate,
                       "churn_runtimes": args.churn, **sender.ledger.summary()},
            "churn_seen": [repr(r) if isinstance(r, BaseException) else dict(r or {})
                           for r in results[2:]],
            "task_failures": [repr(r) for r in results[:2] if isinstance(r, BaseException)],
            "pss_mb_start": pss_start, "pss_mb_end": pss_end,
            "pss_mb_delta": {k: round(pss_end[k] - v, 1) for k, v in pss_start.items()
                             if k in pss_end},
            "pss_trend": watch.memory_trend(),
            "heartbeat": watch.heartbeat(5.0),
            "program_restarts": {k: len(v) - 1 for k, v in sorted(watch.pids.items())},
            "programs_at_end": {k: v[0] for k, v in status.items()},
            "faults": injected,
            "faults_by_kind": _count(f"{f['kind']}:{f['program'] or ''}" for f in injected),
            "after_settling": {"problems": problems,
                               "metrics_history_ok": metrics_history_readable(agent.state_dir)},
        }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3600)
    parser.add_argument("--vplcs", type=int, default=50)
    parser.add_argument("--churn", type=int, default=3, help="extra runtimes created and "
                        "deleted over and over")
    parser.add_argument("--churn-pause", type=float, default=10.0,
                        help="seconds between a churn runtime's create and delete")
    parser.add_argument("--rate", type=float, default=2.0, help="reads per second")
    parser.add_argument("--fault-every", type=float, default=180)
    parser.add_argument("--warmup", type=float, default=60,
                        help="seconds after the creates before the start PSS is taken")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--docker-faults", action="store_true",
                        help="also stop the Docker engine for 20 s (it is shared!)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.vplcs + args.churn > PER_LAN * 6:
        parser.error(f"at most {PER_LAN * 6} runtimes (six test LANs)")
    started, info = time.time(), context()  # the commit that runs, not the one at the end
    dockerenv.ensure_engine()
    tag = build_soak_image()
    try:
        figures = asyncio.run(soak(args, tag))
    except asyncio.CancelledError:
        log.error("stopped by SIGTERM; everything created was removed")
        return 130
    finally:
        remove_soak_image()
    result = {"bench": "soak", **info, "started_at": round(started, 1),
              "seconds_asked": args.seconds, "fault_every_s": args.fault_every,
              "docker_faults": args.docker_faults, **figures}
    print(json.dumps(result, indent=2))
    return 0 if figures["stream"]["acks_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
