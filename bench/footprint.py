"""Idle footprint of the whole suite under supervisord: PSS/USS and CPU over a window.

Starts the suite (supervisord, the four programs and the FATAL listener) in a private
directory, lets it settle until every program is RUNNING, then measures for `--seconds`.
Prints one JSON object.  Without a cloud link the gateway idles in its reconnect loop,
which is the idle state a disconnected agent is in anyway.

  python bench/footprint.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench.common_info import compile_as_image, context
from testkit.helpers import short_tmpdir
from testkit.suite import PROGRAMS, Suite

MB = 1024 * 1024


def processes(suite: Suite) -> dict[str, psutil.Process]:
    return {name: psutil.Process(pid) for name, pid in suite.running_pids().items()}


def cpu_seconds(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, proc in procs.items():
        times = proc.cpu_times()
        out[name] = times.user + times.system
    return out


def measure(seconds: float) -> dict[str, Any]:
    with short_tmpdir("oaf") as base:
        (base / "state").mkdir()
        suite = Suite(base, ORCH_LOG_LEVEL="INFO", ORCH_CLOUD_URL="https://127.0.0.1:9")
        suite.start()
        try:
            suite.wait_running(programs=(*PROGRAMS, "fatalwatch"))
            time.sleep(5)  # past start-up: imports, first samples, first reconnect attempts
            procs = processes(suite)
            before = cpu_seconds(procs)
            started = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - started
            after = cpu_seconds(procs)
            per: dict[str, Any] = {}
            for name, proc in procs.items():
                mem = proc.memory_full_info()
                per[name] = {
                    "pss_mb": round(mem.pss / MB, 1), "uss_mb": round(mem.uss / MB, 1),
                    "rss_mb": round(mem.rss / MB, 1),
                    "cpu_percent_of_one_core": round(
                        100 * (after[name] - before[name]) / elapsed, 3),
                }
        finally:
            suite.stop()
    total = {
        "pss_mb": round(sum(p["pss_mb"] for p in per.values()), 1),
        "uss_mb": round(sum(p["uss_mb"] for p in per.values()), 1),
        "cpu_percent_of_one_core": round(sum(p["cpu_percent_of_one_core"]
                                             for p in per.values()), 3),
    }
    return {"window_seconds": round(elapsed, 1), "processes": per, "total": total,
            "targets": {"pss_mb": 110, "cpu_percent_of_one_core": 1.0}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    byte_code = compile_as_image()
    print(json.dumps({"benchmark": "footprint", **context(), "byte_code": byte_code,
                      **measure(args.seconds)},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
