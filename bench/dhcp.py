"""DHCP lease keeping benchmark: prints one JSON object.

Figures: time from `attach` to every vNIC bound, for 1 and 20 vNICs at once, with
dnsmasq's ping probe (its default: one new address at a time, 3 s each) and without it;
then the CPU the keeper's process spends keeping 50 leases over `--seconds` (default 600)
with T1 = `--t1` seconds (default 30: each vNIC renews every 30 s, far more often than a
plant LAN's hours-long leases).

With the engine, the executor path (`bench/dhcp_executor.py`): a real executor creating
1 and 20 dhcp vPLCs over the bus, each timed until leased and until it answers HTTPS from
the LAN at its lease.

Real parts: dnsmasq in a LAN namespace, runtime stand-ins in namespaces of their own with
a MACVLAN on the LAN's veth (`oat…` names, 198.51.100.0/24 inside the namespaces only),
all removed at the end.  Root.  Run from the repository root:
    PYTHONPATH=. python bench/dhcp.py [--seconds 600] [--t1 30] [--only PART ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common_info import context
from services.executor.dhcp import LeaseKeeper, Timing, VnicTarget
from tests.dhcp.lan import DhcpLan, make_lan

# "lease" and "keeping" use namespaces and dnsmasq only; "executor" uses the engine.
PARTS = ("lease", "keeping", "executor")
TIMING = Timing(retransmit_initial=1.0, retransmit_max=8.0, no_offer_after=30.0)


def bound(status: dict[str, Any]) -> bool:
    return status["state"] == "bound"


def time_to_lease(count: int, ping: bool, options: list[str] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        lan = make_lan(Path(tmp), ping=ping, options=options or [])
        try:
            runtimes = [lan.runtime() for _ in range(count)]
            lan.start_server()
            keeper = LeaseKeeper(Path(tmp) / "state", TIMING).start()
            try:
                t0 = time.monotonic()
                for k, rt in enumerate(runtimes):
                    keeper.attach(VnicTarget(f"plc-{k}", "eth0", rt.mac, rt.netns))
                done = []
                for k in range(count):
                    keeper.wait(f"plc-{k}", "eth0", bound, 120)
                    done.append(time.monotonic() - t0)
                return {"vnics": count, "dnsmasq_ping": ping,
                        "first_s": round(min(done), 3), "last_s": round(max(done), 3)}
            finally:
                keeper.stop()
        finally:
            lan.close()


def keeping_cpu(count: int, seconds: float, t1: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        lan: DhcpLan = make_lan(Path(tmp), ping=False,
                                options=[f"option:T1,{t1}", f"option:T2,{int(t1 * 1.75)}"])
        try:
            runtimes = [lan.runtime() for _ in range(count)]
            lan.start_server()
            keeper = LeaseKeeper(Path(tmp) / "state", TIMING).start()
            renewals = 0

            try:
                for k, rt in enumerate(runtimes):
                    keeper.attach(VnicTarget(f"plc-{k}", "eth0", rt.mac, rt.netns))
                for k in range(count):
                    keeper.wait(f"plc-{k}", "eth0", bound, 120)
                starts = {k: keeper.status(f"plc-{k}", "eth0") for k in range(count)}
                before, wall = os.times(), time.monotonic()
                time.sleep(seconds)
                after, elapsed = os.times(), time.monotonic() - wall
                for k in range(count):
                    now = keeper.status(f"plc-{k}", "eth0") or {}
                    if now.get("lease_start") != (starts[k] or {}).get("lease_start"):
                        renewals += 1
                states = sorted({(keeper.status(f"plc-{k}", "eth0") or {}).get("state", "?")
                                 for k in range(count)})
            finally:
                keeper.stop()
            cpu = (after.user - before.user) + (after.system - before.system)
            return {"vnics": count, "seconds": round(elapsed, 1), "t1_s": t1,
                    "cpu_s": round(cpu, 3), "cpu_percent": round(100 * cpu / elapsed, 3),
                    "vnics_renewed": renewals, "states_at_end": states}
        finally:
            lan.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--t1", type=int, default=30)
    parser.add_argument("--vnics", type=int, default=50)
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="run only these parts (repeatable; default: all)")
    args = parser.parse_args()
    parts = args.only or list(PARTS)
    figures: dict[str, Any] = {}
    if "lease" in parts:
        figures["time_to_lease"] = [
            time_to_lease(1, ping=True), time_to_lease(1, ping=False),
            time_to_lease(20, ping=True), time_to_lease(20, ping=False)]
    if "executor" in parts:
        from bench.dhcp_executor import executor_path  # needs the engine

        figures["executor"] = executor_path([1, 20])
    if "keeping" in parts:
        figures["keeping"] = keeping_cpu(args.vnics, args.seconds, args.t1)
    print(json.dumps({**context(), **figures}, indent=2))


if __name__ == "__main__":
    main()
