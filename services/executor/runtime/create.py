"""`create_runtime` — a runtime container and its networks, in the background.

The request is checked at once (`validate.py`, the name on the engine); the ack says
`creating`; the steps then run in a task, each recorded in the operations journal so
`device_status` shows it and a restarted executor can finish or roll back:

1. `validating_config` — detect subnets and gateways from the network monitor's cache,
   settle every MAC (given, stored from an earlier create of this device, or generated
   once: locally administered, unicast);
2. `pulling_image` — pull `<runtime_image>:<tag>` (bounded), or use the local image
   (`pull_policy`: by default a pinned tag already present is not pulled again); meanwhile
   `<name>_internal` is made on our own subnet pool (two independent engine calls);
3. `creating_networks` — each MACVLAN network (get or create);
4. `creating_container` — create and connect the container, start it, set any MAC the
   engine could not, write the vNICs' dns servers into its resolver file (`resolv.py`),
   join the agent's own container to `<name>_internal`, record the internal IP, persist
   the vNICs.

Any failure rolls back what belongs to this device (container, internal network) and
removes MACVLAN networks left without users; the journal keeps the error for
`device_status`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any

import docker.errors

from common import labels
from services.executor.context import QUICK, Context
from services.executor.dhcp import wiring as dhcp_wiring
from services.executor.engine import containers
from services.executor.errors import (
    Conflict,
    DetectionUnavailable,
    DockerUnavailable,
    ExecutorError,
    InvalidRequest,
    OperationFailed,
    error_text,
)
from services.executor.net import names
from services.executor.net.netinfo import detected_network, parent_address
from services.executor.runtime import dedicated, live, serial, unleased, wifilinks
from services.executor.runtime.journal import Operation
from services.executor.runtime.validate import (
    CreateRequest,
    check_conflicts,
    check_parents_local,
    check_request,
)

log = logging.getLogger(__name__)

# Tags that name whatever build was pushed last; every other tag is taken as pinned.
MOVING_TAGS = frozenset({"latest"})

STEPS = ("validating_config", "pulling_image", "creating_networks", "creating_container")


class Timings:
    """Milliseconds per step of one create, logged with its outcome: where a slow create
    spent its time (the engine's calls against the agent's own bookkeeping)."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.parts: list[str] = []

    def mark(self, what: str) -> None:
        now = time.perf_counter()
        self.parts.append(f"{what} {1000 * (now - self.last):.0f}")
        self.last = now

    def __str__(self) -> str:
        total = 1000 * (time.perf_counter() - self.started)
        return f"{total:.0f} ms ({', '.join(self.parts)})"


def macs_in_use(ctx: Context, device: str) -> dict[str, str]:
    used = ctx.vnics.macs(exclude=device)
    for view in ctx.view.all():
        if view.name == device:
            continue
        for net in view.networks.values():
            if net.get("mac_address"):
                used.setdefault(str(net["mac_address"]), view.name)
    return used


def ips_in_use(ctx: Context, device: str) -> dict[tuple[str, str], str]:
    used = ctx.vnics.ips(exclude=device)
    for view in ctx.view.all():
        if view.name == device:
            continue
        for net_name, net in view.networks.items():
            if net.get("ip_address"):
                used.setdefault((net_name, str(net["ip_address"])), view.name)
    return used


async def start_create(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Check, claim the device, ack; the work continues in `run_create`."""
    req = check_request(params, ctx.config.serial_by_id_dir)
    device = req.device
    if ctx.destroying:
        raise Conflict("Self-destruct in progress: no runtime can be created")

    took = Timings()

    async def prepare() -> Operation:
        ctx.require_docker()
        check_conflicts(req, macs_in_use(ctx, device), ips_in_use(ctx, device))
        dedicated.check_parents(ctx, req)  # before: a dedicated NIC is not on the host
        if ctx.on_host:
            check_parents_local(req)
        if await ctx.docker.call(containers.container_exists, device, budget=QUICK):
            raise Conflict(f"Container {device} already exists")
        await dedicated.claim(ctx, req)
        remember_macs(ctx, req)
        op = Operation(device, "create", step=STEPS[0],
                       message=f"Container {device} is being created",
                       request={"runtime_version": req.tag, "vnics": req.vnics,
                                "serials": req.serials, "dedicated": req.dedicated})
        await ctx.save_op(op)
        took.mark("accept")
        return op

    await ctx.ops.launch(device, "create", prepare, lambda op: run_create(ctx, op, req, took),
                         name=f"create-{device}")
    return {"status": "creating", "container_id": device,
            "message": f"Container creation started for {device}",
            "serial_configs_count": len(req.serials)}


def remember_macs(ctx: Context, req: CreateRequest) -> None:
    """Fill MACs that were not given: stored for this device and vNIC, or carried by the
    device's previous (failed) create, so a MAC once generated never changes."""
    previous = ctx.journal.get(req.device)
    earlier = {}
    if previous is not None:
        for vnic in previous.request.get("vnics") or []:
            if isinstance(vnic, dict) and vnic.get("mac_address"):
                earlier[vnic.get("name")] = vnic["mac_address"]
    for vnic in req.vnics:
        if not vnic["mac_address"]:
            vnic["mac_address"] = (ctx.vnics.stored_mac(req.device, vnic["name"])
                                   or earlier.get(vnic["name"]))


async def run_create(ctx: Context, op: Operation, req: CreateRequest,
                     took: Timings | None = None) -> None:
    device = req.device
    vnics = req.vnics
    took = took or Timings()
    try:
        # Steps are written without waiting (`note_op`); the entry is on disk before the
        # container is made (its vNICs, settled MACs, networks) and at the end.
        vnics = await resolve_vnics(ctx, op, req)
        took.mark("validate")
        op.set_step("pulling_image")
        ctx.note_op(op)
        async with ctx.networks.locks.hold(v["network"] for v in vnics):
            # The image is looked at (or pulled) while the internal network is made: two
            # independent engine calls; a failure of either rolls both back.
            image = await image_and_internal(ctx, op, req.tag)
            op.request["image"] = image
            took.mark("image+internal")
            op.set_step("creating_networks")
            ctx.note_op(op)
            for vnic in vnics:
                if wifilinks.is_wifi(vnic):
                    continue  # a veth pair after the start, no engine network
                ref = await ctx.networks.ensure_macvlan(device, vnic, op.op_id)
                vnic["network"] = ref.name
            took.mark("macvlan")
            op.request["vnics"] = vnics
            op.progress["networks_done"] = True
            await ctx.save_op(op)
            took.mark("journal")
            op.set_step("creating_container")
            ctx.note_op(op)
            # dhcp vNICs are connected with their lease as a fixed address (the stored
            # vNICs keep no address: the lease may change).
            engine_vnics = await dhcp_wiring.lease_first(ctx, device, vnics)
            took.mark("lease")
            cid = await create_container(ctx, op, device, image, engine_vnics)
            took.mark("container")
            op.progress["container_id"] = cid
            ctx.note_op(op)
            await start_runtime(ctx, device, image, engine_vnics, op)
            took.mark("start")
        await complete(ctx, op, vnics, took)
        unleased.follow_all(ctx, device)
        op.succeed(f"Container {device} created")
        await ctx.save_op(op)
        took.mark("journal")
        log.info("runtime %s created in %s", device, took)
    except asyncio.CancelledError:
        raise  # shutting down: the journal keeps the step; reconcile decides at restart
    except Exception as exc:
        await fail_and_roll_back(ctx, op, exc, [v.get("network") for v in vnics])


async def image_and_internal(ctx: Context, op: Operation, tag: str) -> str:
    image = asyncio.ensure_future(ensure_image(ctx, tag))
    try:
        await ctx.networks.ensure_internal(op.device_id, op.op_id)
        return await image
    finally:
        if not image.done():
            image.cancel()
        elif not image.cancelled():
            image.exception()  # retrieved: the network's own error is the one raised


async def fail_and_roll_back(ctx: Context, op: Operation, exc: BaseException,
                             networks: list[str | None]) -> None:
    text = error_text(exc)
    if not isinstance(exc, ExecutorError):
        log.exception("create of %s failed unexpectedly", op.device_id)
    else:
        log.warning("create of %s failed at %s: %s", op.device_id, op.step, text)
    op.fail(text)
    op.progress["rollback_pending"] = True
    await ctx.save_op(op)
    try:
        await roll_back(ctx, op.device_id, [n for n in networks if n],
                        op.request.get("vnics") or [])
    except (DockerUnavailable, docker.errors.APIError) as err:
        log.warning("rollback of %s incomplete (%s); retried when the engine is back",
                    op.device_id, error_text(err))
        return
    op.progress.pop("rollback_pending", None)
    await ctx.save_op(op)


async def roll_back(ctx: Context, device: str, networks: list[str],
                    vnics: list[dict[str, Any]] | None = None) -> None:
    """Remove what a create of `device` made; idempotent."""
    view = await ctx.view.refresh(device)
    # Also without a container: a vNIC may be leasing through a link of our own.
    await dhcp_wiring.before_remove(ctx, device)
    if view is not None:  # ours by labels; a foreign container of that name is skipped
        await ctx.docker.call(containers.remove, view.id, None)
        ctx.view.forget(device)
    await ctx.networks.remove_internal(device)
    await ctx.networks.collect_macvlans(only=networks)
    live.forget(ctx, device)
    await ctx.save_serials(device, [])
    await dedicated.release(ctx, device)
    if ctx.wifi is not None:
        await ctx.wifi.forget(device, vnics or [])


# --- step 1 ----------------------------------------------------------------------------------


async def resolve_vnics(ctx: Context, op: Operation, req: CreateRequest) -> list[dict[str, Any]]:
    vnics = [dict(v) for v in req.vnics]
    undetected = [v for v in vnics if v["parent_subnet"] is None]
    table = None
    if undetected or not ctx.on_host:
        table = await ctx.ifaces.interfaces()
    for i, vnic in enumerate(vnics):
        parent = vnic["parent_interface"]
        if vnic["parent_subnet"] is None:
            if table is None:
                raise DetectionUnavailable(
                    f"Cannot detect the subnet of {parent} for vNIC {vnic['name']}: "
                    f"{ctx.ifaces.last_error}")
            iface = table.get(parent)
            if iface is None:
                raise OperationFailed(f"Parent interface {parent} is not among the host's "
                                      "interfaces reported by the network monitor")
            subnet, gateway = detected_network(iface)
            if subnet is None:
                raise OperationFailed(f"Interface {parent} has no IPv4 subnet to detect")
            vnic["parent_subnet"] = subnet
            host_address = parent_address(iface, subnet)
            if host_address:
                vnic["parent_address"] = host_address
            net = ipaddress.IPv4Network(subnet)
            if vnic["parent_gateway"] is None and gateway and \
                    ipaddress.IPv4Address(gateway) in net:
                vnic["parent_gateway"] = gateway
            if vnic["ip_address"] and not names.host_in_subnet(vnic["ip_address"], subnet):
                raise InvalidRequest(f"vnic_configs[{i}].ip_address: {vnic['ip_address']} is "
                                     f"outside the detected subnet {subnet} of {parent}")
            vnic["network"] = names.macvlan_network(parent, subnet)
    if ctx.wifi is not None:
        ctx.wifi.mark(vnics)
    seen: set[str] = set()
    for vnic in vnics:
        if vnic["network"] in seen:
            raise InvalidRequest(f"two vNICs on the MACVLAN network {vnic['network']}")
        seen.add(vnic["network"])
    taken = set(macs_in_use(ctx, req.device)) | {v["mac_address"] for v in vnics if
                                                  v["mac_address"]}
    for vnic in vnics:
        if not vnic["mac_address"]:
            vnic["mac_address"] = names.generate_mac(taken)
            taken.add(vnic["mac_address"])
    check_conflicts(CreateRequest(req.device, req.tag, vnics, req.serials, req.dedicated),
                    macs_in_use(ctx, req.device), ips_in_use(ctx, req.device))
    op.request["vnics"] = vnics
    ctx.note_op(op)
    return vnics


# --- step 2 ----------------------------------------------------------------------------------


async def ensure_image(ctx: Context, tag: str) -> str:
    repository = ctx.config.runtime_image
    ref = f"{repository}:{tag}"
    policy = ctx.config.pull_policy
    present = await ctx.docker.call(containers.image_present, ref)
    if policy == "auto":
        # A pinned tag names one build: once it is here, asking the registry again only
        # costs time (seconds per create when the registry is slow or unreachable).  A
        # moving tag (`latest`) is still checked, so it means the newest build.
        policy = "always" if tag in MOVING_TAGS else "missing"
    if policy == "never" or (policy == "missing" and present):
        if not present:
            raise OperationFailed(f"Image {ref} is not available locally and pulling is "
                                  "disabled (pull_policy=never)")
        return ref
    timeout = ctx.config.pull_timeout
    try:
        client = ctx.docker.new_client(timeout)
        await asyncio.wait_for(ctx.docker.run(containers.pull, client, repository, tag),
                               timeout + 5)
        log.info("pulled %s", ref)
        return ref
    except DockerUnavailable:
        raise
    except (TimeoutError, OperationFailed, docker.errors.DockerException, OSError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else error_text(exc)
        if present:
            log.warning("pull of %s failed (%s); using the local image", ref, reason)
            return ref
        raise OperationFailed(f"Image {ref} could not be pulled ({reason}) and is not "
                              "available locally") from None


# --- step 4 ----------------------------------------------------------------------------------


def use_rt(ctx: Context) -> bool:
    mode = ctx.config.runtime_rt_limits
    return mode == "require" or (mode == "auto" and not ctx.rt_refused)


async def create_container(ctx: Context, op: Operation, device: str, image: str,
                           vnics: list[dict[str, Any]], rt: bool | None = None) -> str:
    container_labels = labels.runtime(ctx.instance, device, [v["name"] for v in vnics],
                                      op.op_id)
    return await ctx.docker.call(
        containers.create_and_connect, name=device, image=image,
        container_labels=container_labels, internal=names.internal_network(device),
        # A dhcp vNIC without a lease yet is connected once leased (unleased.py).
        vnics=[v for v in vnics
               if not wifilinks.is_wifi(v) and not v.get(dhcp_wiring.UNCONNECTED)],
        per_endpoint_mac=ctx.docker.supports(containers.PER_ENDPOINT_MAC_API),
        rt=use_rt(ctx) if rt is None else rt,
        device_cgroup_rules=serial.create_rules(op.request.get("serials") or []),
        raw_nic=bool(op.request.get("dedicated")))


async def start_runtime(ctx: Context, device: str, image: str, vnics: list[dict[str, Any]],
                        op: Operation) -> None:
    """Start the container; when the host refuses the real-time ulimits and the
    configuration allows it, re-create it without them (logged)."""
    cid = op.progress["container_id"]
    try:
        await ctx.docker.call(containers.start, cid)
        return
    except docker.errors.APIError as exc:
        if not containers.is_rlimit_refusal(exc):
            raise OperationFailed(f"Starting container {device} failed: "
                                  f"{exc.explanation or exc}") from None
        if ctx.config.runtime_rt_limits == "require":
            raise OperationFailed(
                "The host refuses real-time limits for containers (rtprio/memlock ulimits: "
                f"{exc.explanation or exc}); set ORCH_RUNTIME_RT_LIMITS=auto or off") from None
        log.warning("the host refuses real-time ulimits (%s); runtimes run without them "
                    "(SYS_NICE kept)", exc.explanation or exc)
        ctx.rt_refused = True
    await ctx.docker.call(containers.remove, cid, None)
    cid = await create_container(ctx, op, device, image, vnics, rt=False)
    op.progress["container_id"] = cid
    op.progress["rt_limits"] = False
    await ctx.save_op(op)
    try:
        await ctx.docker.call(containers.start, cid)
    except docker.errors.APIError as exc:
        raise OperationFailed(f"Starting container {device} failed: "
                              f"{exc.explanation or exc}") from None


async def complete(ctx: Context, op: Operation, vnics: list[dict[str, Any]],
                   took: Timings | None = None) -> None:
    """After the start: MACs, the agent's own link, the internal IP, the vNIC file."""
    took = took or Timings()
    device = op.device_id
    internal = names.internal_network(device)
    if ctx.agent_container:
        await ctx.docker.call(containers.connect_agent, ctx.agent_container, internal)
        took.mark("agent link")
    view = await ctx.view.refresh(device)
    if view is None:
        raise OperationFailed(f"Container {device} disappeared while it was being created")
    took.mark("inspect")
    if not view.internal_ip:
        raise OperationFailed(f"Container {device} has no address on {internal}")
    op.progress["internal_ip"] = view.internal_ip
    await ctx.save_vnics(device, vnics)
    await ctx.save_serials(device, op.request.get("serials") or [])
    took.mark("stores")
    await live.after_start(ctx, device)  # dns, MACs, DHCP: from the vNICs just stored
    took.mark("live")
    await dedicated.attach(ctx, device)
