"""The whole agent as the cloud sees it, on the real engine: supervisord and its four
programs, the netmon sidecar as a process, a development cloud on the caller's event
loop, and test LANs for the runtimes' vNICs.  Used by the fault suite and the soak.

Everything is private to one caller so it can run beside other tests: its own directory,
its own instance id (what the agent creates carries it), its own veth/namespace names
(`oat<tag>…`) and its own documentation blocks — only blocks that no engine network and
no host route uses yet, taken at once by giving the host end an address (its route then
tells every later picker the block is in use).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from common import labels as owned_labels
from devcloud.enroll import Credentials
from devcloud.server import DevCloud
from testkit import dockerenv
from testkit.executor import (
    STANDIN_REPO,
    Lan,
    cleanup_instance,
    make_lan,
    remove_lan,
)
from testkit.helpers import agent_env, short_tmpdir, start_module
from testkit.movinglan import sh
from testkit.suite import Suite

_counter = itertools.count()


def make_free_lan(dc: docker.DockerClient, tag: str) -> Lan:
    """A veth LAN on the first free /26 documentation block, claimed by a host route."""
    return make_lan(dc, set(), tag=tag, claim=True)


@dataclass
class CloudAgent:
    base: Path
    cloud: DevCloud
    creds: Credentials
    suite: Suite
    instance: str
    dc: docker.DockerClient
    lans: list[Lan] = field(default_factory=list)
    netmon: subprocess.Popen[bytes] | None = None
    netmon_debounce: float = 1.0

    @property
    def id(self) -> str:
        return self.creds.agent_id

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    def start_netmon(self) -> None:
        env = agent_env(self.base, ORCH_LOG_LEVEL="INFO")
        self.netmon = start_module("services.netmon", env, self.base / "netmon.out",
                                   "--debounce", str(self.netmon_debounce))

    def kill_netmon(self) -> None:
        if self.netmon is not None:
            self.netmon.kill()
            self.netmon.wait(10)
            self.netmon = None

    def pids(self) -> dict[str, int]:
        """Program → pid of every RUNNING program (and netmon, supervisord)."""
        found = self.suite.running_pids()
        if self.netmon is not None and self.netmon.poll() is None:
            found["netmon"] = self.netmon.pid
        return found

    def vnic(self, lan_index: int, host: int) -> dict[str, Any]:
        lan = self.lans[lan_index]
        net = ipaddress.IPv4Network(lan.subnet)
        return {"name": "eth0", "parent_interface": lan.parent, "network_mode": "manual",
                "ip_address": lan.addr(host), "subnet": str(net.netmask),
                "gateway": lan.gateway}


def suite_env(instance: str, cloud: DevCloud, creds: Credentials, **extra: str) -> dict[str, str]:
    return {"ORCH_INSTANCE_ID": instance, "ORCH_RUNTIME_IMAGE": STANDIN_REPO,
            "ORCH_PULL_POLICY": "missing", "ORCH_SIDECAR_CONTAINER": f"oat-sidecar-{instance}",
            "ORCH_STOP_GRACE": "3", "ORCH_CLOUD_URL": cloud.url,
            "ORCH_MTLS_DIR": str(creds.directory), "ORCH_CA_FILE": str(creds.ca_path),
            "ORCH_LOG_LEVEL": "INFO", **extra}


@asynccontextmanager
async def cloud_agent(lan_count: int, tag: str = "", state_size: str = "",
                      **env: str) -> AsyncIterator[CloudAgent]:
    """A running agent linked to a development cloud on this loop; everything it and this
    function created is removed afterwards, also on failure.  With `state_size` (e.g.
    "48m") the state directory is a tmpfs of that size, so a test can fill it."""
    tag = tag or f"{os.getpid() % 10000}c{next(_counter)}"
    dc = dockerenv.client()
    instance = dockerenv.test_instance("f")
    lans: list[Lan] = []
    with short_tmpdir("oatf") as base, _state_dir(base / "state", state_size):
        cloud = DevCloud(base / "cloud", port=0, admin_port=0, provision_port=0,
                         command_timeout=20)
        await cloud.start()
        agent: CloudAgent | None = None
        try:
            for i in range(lan_count):
                lans.append(make_free_lan(dc, f"{tag}n{i}"))
            creds = await cloud.enroll(base / "mtls")
            suite = Suite(base, **suite_env(instance, cloud, creds, **env))
            agent = CloudAgent(base, cloud, creds, suite, instance, dc, lans)
            agent.start_netmon()
            suite.start()
            await asyncio.to_thread(suite.wait_running, 60)
            if not await cloud.wait_connected(agent.id, 30):
                raise RuntimeError(f"agent not connected:\n{suite.output()[-3000:]}")
            yield agent
        finally:
            if agent is not None:
                await asyncio.to_thread(agent.suite.stop)
                agent.kill_netmon()
            await cloud.stop()
            await asyncio.to_thread(cleanup_instance, dc, instance)
            for lan in lans:
                remove_lan(lan)
            dc.close()


@contextlib.contextmanager
def _state_dir(path: Path, size: str) -> Iterator[None]:
    path.mkdir()
    if not size:
        yield
        return
    sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "oatstate", str(path))
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


# --- what must hold after faults ---------------------------------------------------------


def state_files_parse(state_dir: Path) -> list[str]:
    """The problems with the executor's state files: each must parse as JSON."""
    problems = []
    paths = [state_dir / "runtime_vnics.json", *sorted((state_dir / "operations").glob("*.json"))]
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            try:
                json.loads(path.read_text())
            except ValueError as exc:
                problems.append(f"{path.name}: {exc}")
    return problems


def journal_in_progress(state_dir: Path) -> list[str]:
    out = []
    for path in (state_dir / "operations").glob("*.json"):
        with contextlib.suppress(FileNotFoundError, ValueError):
            if json.loads(path.read_text()).get("state") == "in_progress":
                out.append(path.stem)
    return out


def half_created(dc: docker.DockerClient, instance: str) -> list[str]:
    """Runtimes without their internal network, internal networks without their runtime,
    runtimes attached to no MACVLAN network of ours."""
    problems = []
    runtimes = {c.labels.get(owned_labels.DEVICE): c for c in dc.containers.list(
        all=True, filters=owned_labels.filters(instance, owned_labels.KIND_RUNTIME))}
    internals = {n.attrs["Labels"].get(owned_labels.DEVICE): n for n in dc.networks.list(
        filters=owned_labels.filters(instance, owned_labels.KIND_INTERNAL))}
    macvlans = {n.name for n in dc.networks.list(
        filters=owned_labels.filters(instance, owned_labels.KIND_MACVLAN))}
    for device in sorted(set(runtimes) - set(internals), key=str):
        problems.append(f"runtime {device} without its internal network")
    for device in sorted(set(internals) - set(runtimes), key=str):
        problems.append(f"internal network of {device} without its runtime")
    for device, container in runtimes.items():
        attached = set(container.attrs["NetworkSettings"]["Networks"])
        if internals.get(device) is not None and internals[device].name not in attached:
            problems.append(f"runtime {device} not attached to its internal network")
        if not attached & macvlans:
            problems.append(f"runtime {device} on no MACVLAN network of ours")
    return problems


def settled_problems(agent: CloudAgent) -> list[str]:
    return (state_files_parse(agent.state_dir)
            + [f"journal in progress: {d}" for d in journal_in_progress(agent.state_dir)]
            + half_created(agent.dc, agent.instance))


def metrics_history_readable(state_dir: Path) -> bool:
    import sqlite3

    path = state_dir / "consumption.sqlite3"
    if not path.exists():
        return True
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return bool(db.execute("PRAGMA quick_check").fetchone()[0] == "ok")
