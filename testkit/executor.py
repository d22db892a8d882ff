"""Test tools for the executor: the process, its bus client, a test LAN, a fake netbridge.

Network safety: the LAN is a veth pair the test creates (`oat…` names), its peer in a
namespace the test creates, addressed from the documentation ranges; nothing else is
touched.  Docker objects are found for cleanup by the executor's instance label (every
executor started here gets a unique one) and by the test label.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import zmq.asyncio

from common import wire
from common.bus import Counters, Endpoints, RpcClient, RpcServer
from testkit import dockerenv
from testkit.helpers import ROOT, agent_env, async_wait_for, short_tmpdir

STANDIN_REPO = "orchestrator/openplc-standin"
STANDIN_TAG = "test"
# Test LANs take /26 blocks of documentation ranges.  Not 192.0.2.0/24: development
# machines may carry it on their own uplink, and the host would then answer ARP for a
# LAN address through the veth.  Not the top half of 203.0.113.0/24: dockerenv's bridges.
LAN_BLOCKS = [f"198.51.100.{64 * i}/26" for i in range(4)] + \
    [f"203.0.113.{64 * i}/26" for i in range(2)]
_counter = itertools.count()


def journal(executor: ExecutorProc, device: str) -> dict[str, Any]:
    """The device's operations journal entry, {} when there is none.  Entries are written
    atomically, so a file that does not parse is a failure, not a moment to wait out."""
    path = executor.state_dir / "operations" / f"{device}.json"
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}


def short_id() -> str:
    return uuid.uuid4().hex[:6]


# --- the executor process ------------------------------------------------------------------


class ExecutorProc:
    """`python -m services.executor` with its own state, bus and instance id."""

    def __init__(self, base: Path, **env: str) -> None:
        self.base = base
        self.instance = dockerenv.test_instance("x")
        self.run_dir = base / "run"
        self.state_dir = base / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.env = agent_env(base, **{
            "ORCH_INSTANCE_ID": self.instance,
            "ORCH_RUNTIME_IMAGE": STANDIN_REPO,
            "ORCH_BEAT_INTERVAL": "0.5",
            "ORCH_STOP_GRACE": "3",
            "ORCH_SIDECAR_CONTAINER": f"oat-sidecar-{self.instance}",
            "ORCH_LOG_LEVEL": "DEBUG",
            **env,
        })
        self.log = base / "executor.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.wrapper: list[str] = []  # a command that execs the executor (its argv after)

    def start(self, **env: str) -> ExecutorProc:
        self.env.update(env)
        with open(self.log, "ab") as out:
            # The crash tests' pause points live in a test-only launcher.
            module = ("tests.executor.paused" if self.env.get("OAT_PAUSE_AT")
                      else "services.executor")
            self.proc = subprocess.Popen([*self.wrapper, sys.executable, "-m", module],
                                         env=self.env, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT)
        return self

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def client(self, ctx: zmq.asyncio.Context, timeout: float = 10.0) -> RpcClient:
        return RpcClient(ctx, Endpoints(self.run_dir).rpc("executor"), wire.Stamper("test"),
                         timeout)


def release_pins(run_dir: Path) -> None:
    """Unmount the namespace pins an executor left (dedicated NICs); run after its
    containers are gone, so the namespaces end and a veth end held there with them."""
    pins = run_dir / "netns"
    if not pins.is_dir():
        return
    for ref in pins.iterdir():
        for _ in range(4):
            if not os.path.ismount(ref):
                break
            subprocess.run(["umount", "-l", str(ref)], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            ref.unlink()


def cleanup_instance(dc: docker.DockerClient, instance: str) -> None:
    wanted = {"label": [f"orchestrator.instance={instance}"]}
    for container in dc.containers.list(all=True, filters=wanted):
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True, v=True)
    for network in dc.networks.list(filters=wanted):
        with contextlib.suppress(docker.errors.APIError):
            network.remove()


@contextlib.contextmanager
def executor_run(**env: str) -> Iterator[tuple[docker.DockerClient, ExecutorProc]]:
    """An executor on the stand-in image outside pytest (the benches): started in a
    private directory, then stopped and its containers and networks removed."""
    dockerenv.ensure_engine()
    dc = dockerenv.client()
    dockerenv.ensure_standin_image(dc)
    with short_tmpdir("oatb") as base:
        executor = ExecutorProc(base, **env).start()
        try:
            yield dc, executor
        finally:
            executor.stop()
            cleanup_instance(dc, executor.instance)


def owned_objects(dc: docker.DockerClient, instance: str) -> tuple[list[str], list[str]]:
    wanted = {"label": [f"orchestrator.instance={instance}"]}
    containers = [c.name for c in dc.containers.list(all=True, filters=wanted)]
    networks = [n.name for n in dc.networks.list(filters=wanted)]
    return containers, networks


async def wait_ready(client: RpcClient, timeout: float = 20.0) -> None:
    async def ready() -> bool:
        # Without the engine, device_status answers the original's error body.
        try:
            body = await client.call("device_status", {"device_id": "oat-probe"}, timeout=2)
        except Exception:
            return False
        return body.get("status") == "not_found"
    await async_wait_for(ready, timeout, interval=0.2, what="executor ready")


async def wait_status(client: RpcClient, device: str, predicate: Any, timeout: float = 60.0,
                      ) -> dict[str, Any]:
    last: dict[str, Any] = {}

    async def check() -> dict[str, Any] | None:
        nonlocal last
        last = await client.call("device_status", {"device_id": device}, timeout=5)
        return last if predicate(last) else None
    try:
        result: dict[str, Any] = await async_wait_for(check, timeout, interval=0.2,
                                                      what=f"status of {device}")
        return result
    except AssertionError:
        raise AssertionError(f"status of {device} never matched; last: {last}") from None


def settled(body: dict[str, Any]) -> bool:
    return body.get("status") not in ("creating", "deleting")


def manual_vnic(lan: Lan, host: int, name: str = "eth0", **extra: object) -> dict[str, Any]:
    """A vNIC on `lan` with the static address `lan.addr(host)`."""
    vnic: dict[str, Any] = {"name": name, "parent_interface": lan.parent,
                            "network_mode": "manual", "ip_address": lan.addr(host),
                            "subnet": lan.subnet, "gateway": lan.gateway}
    vnic.update(extra)
    return vnic


async def create_runtime(client: RpcClient, name: str, vnics: list[dict[str, Any]]
                         ) -> dict[str, Any]:
    """Ask for a stand-in runtime; the `create_runtime` ack (creation goes on behind it)."""
    result: dict[str, Any] = await client.call("create_runtime", {
        "container_name": name, "vnic_configs": vnics, "runtime_version": STANDIN_TAG})
    return result


async def create_ok(client: RpcClient, name: str, vnics: list[dict[str, Any]],
                    timeout: float = 60.0) -> dict[str, Any]:
    """Create a stand-in runtime and wait until it is up; its `device_status` body."""
    ack = await create_runtime(client, name, vnics)
    assert ack["status"] == "creating", ack
    body: dict[str, Any] = await wait_status(client, name, settled, timeout)
    assert body["status"] == "success", body
    return body


# --- the test LAN ---------------------------------------------------------------------------


def macvlan_name(parent: str, subnet: str) -> str:
    """The executor's shared MACVLAN network for `parent` and `subnet` (spelled out here
    rather than imported, so the tests check the naming rule)."""
    return f"macvlan_{parent}_{subnet.replace('/', '_')}"


def sh(*args: str, timeout: float = 20) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True,
                          timeout=timeout).stdout


@dataclass
class Lan:
    """Veth pair `parent`/`parent+p`; the peer end in namespace `ns` is the LAN host."""

    parent: str
    ns: str
    subnet: str
    host_ip: str
    gateway: str
    extra: list[str] = field(default_factory=list)

    def network_name(self) -> str:
        return macvlan_name(self.parent, self.subnet)

    def addr(self, n: int) -> str:
        return str(ipaddress.IPv4Network(self.subnet)[n])

    def iface(self) -> dict[str, Any]:
        """The netmon IFACE record the host would report for the parent."""
        net = ipaddress.IPv4Network(self.subnet)
        return {"interface": self.parent, "index": 0, "operstate": "UP",
                "ipv4_addresses": [{"address": self.addr(2), "prefixlen": net.prefixlen,
                                    "subnet": self.subnet,
                                    "network_address": str(net.network_address)}],
                "gateway": self.gateway, "timestamp": "2025-01-01T00:00:00"}

    def reach_https(self, ip: str, timeout: float = 3.0) -> bool:
        """GET https://ip:8443/api/version from the LAN namespace."""
        return https_ok_from(self.ns, ip, timeout)


def engine_subnets(dc: docker.DockerClient) -> list[ipaddress.IPv4Network]:
    """The subnets of every network the engine has (any test's, any user's)."""
    used = []
    for net in dc.api.networks():
        for cfg in (net.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError, KeyError):
                used.append(ipaddress.IPv4Network(cfg["Subnet"], strict=False))
    return used


def taken_subnets(dc: docker.DockerClient) -> list[ipaddress.IPv4Network]:
    """Subnets a new test LAN must avoid: the engine's networks and every routed prefix
    on this host (another test's or a benchmark's LAN claims its block with a route)."""
    used = engine_subnets(dc)
    for route in json.loads(sh("ip", "-j", "-4", "route", "show", "table", "all")):
        dst = route.get("dst")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(dst, strict=False))
    return used


def make_lan(dc: docker.DockerClient, taken: set[str], *, tag: str | None = None,
             claim: bool = False) -> Lan:
    """A veth LAN on the first /26 documentation block nothing uses yet (`taken` holds the
    caller's own).  With `claim`, the host end gets an address too, whose route claims the
    block for a long-lived LAN (a benchmark's) so that other tests' LANs skip it."""
    used = taken_subnets(dc)
    for block in LAN_BLOCKS:
        net = ipaddress.IPv4Network(block)
        if block in taken or any(net.overlaps(u) for u in used):
            continue
        taken.add(block)
        name = tag if tag is not None else f"{os.getpid() % 10000}x{next(_counter)}"
        parent, ns = f"oat{name}", f"oatns{name}"
        lan = Lan(parent, ns, block, str(net[10]), str(net[1]))
        try:
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", parent, "type", "veth", "peer", "name", f"{parent}p")
            sh("ip", "link", "set", f"{parent}p", "netns", ns)
            if claim:
                sh("ip", "addr", "add", f"{net[2]}/{net.prefixlen}", "dev", parent)
            sh("ip", "link", "set", parent, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{lan.host_ip}/{net.prefixlen}", "dev",
               f"{parent}p")
            sh("ip", "-n", ns, "link", "set", f"{parent}p", "up")
        except subprocess.CalledProcessError:
            remove_lan(lan)
            raise
        return lan
    raise RuntimeError("no free documentation block for a test LAN")


def remove_lan(lan: Lan) -> None:
    subprocess.run(["ip", "link", "del", lan.parent], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", lan.ns], capture_output=True, check=False)


# --- a netbridge stand-in on the bus ---------------------------------------------------------


class FakeNetbridge:
    """Answers `interfaces` on the netbridge endpoint like the real process would."""

    def __init__(self, ctx: zmq.asyncio.Context, run_dir: Path) -> None:
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.server = RpcServer(ctx, Endpoints(run_dir).rpc("netbridge"),
                                wire.Stamper("netbridge"), None, Counters())
        self.items: list[dict[str, Any]] = []
        self.calls = 0
        self.server.register("interfaces", self.interfaces)

    async def interfaces(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return {"interfaces": self.items, "stale": False, "connected": True}


def https_ok(ip: str, timeout: float = 3.0) -> bool:
    """From the host (how the agent reaches a runtime's internal address)."""
    return dockerenv.standin_answers(ip, timeout)


def https_ok_from(ns: str, ip: str, timeout: float = 3.0) -> bool:
    """GET https://ip:8443/api/version from inside network namespace `ns` (how a PLC on
    the LAN reaches a runtime)."""
    code = (
        "import ssl,sys,http.client as h\n"
        "c=ssl.create_default_context();c.check_hostname=False;c.verify_mode=ssl.CERT_NONE\n"
        f"k=h.HTTPSConnection('{ip}',8443,timeout={timeout},context=c)\n"
        "k.request('GET','/api/version');sys.exit(0 if k.getresponse().status==200 else 1)\n"
    )
    result = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                            capture_output=True, timeout=timeout + 10, check=False)
    return result.returncode == 0
