"""Blocking engine calls for runtime containers (run in the engine pool).

A runtime container gets `SYS_NICE` (the PLC's real-time scan), the real-time ulimits
when the configuration asks for them, restart policy `no` (the agent starts it after a
host boot, once its networks are checked, and restarts it when it dies:
docs/lifecycle.md), no published ports (8443 is reached on the internal network only),
the vNICs' dns servers (`resolv.py`), and its networks before it first starts:

* engines with API >= 1.44: primary network `<name>_internal`, then each MACVLAN network
  with its static IP and its MAC set per endpoint;
* older engines (a MAC only for the primary network): the first MACVLAN vNIC is the
  primary network with the container's MAC, then `<name>_internal`, then the other
  MACVLAN networks (their MACs are set in the container's namespace, see `macfix.py`).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import docker.errors
import docker.types

from services.executor.engine import resolv
from services.executor.errors import OperationFailed

log = logging.getLogger(__name__)

PER_ENDPOINT_MAC_API = "1.44"
CAPABILITIES = ["SYS_NICE"]
# A runtime with a dedicated NIC speaks raw Ethernet on it (EtherCAT, PROFINET): packet
# sockets need NET_RAW, stated here rather than trusted to the engine's default set.  No
# NET_ADMIN: the executor brings the NIC up, promiscuous and addressed from outside.
RAW_NIC_CAPABILITIES = ["NET_RAW"]
RESTART_POLICY = {"Name": "no"}


def rt_ulimits() -> list[docker.types.Ulimit]:
    return [docker.types.Ulimit(name="rtprio", soft=99, hard=99),
            docker.types.Ulimit(name="memlock", soft=-1, hard=-1)]


def is_rlimit_refusal(exc: BaseException) -> bool:
    text = str(getattr(exc, "explanation", None) or exc).lower()
    return "rlimit" in text


@dataclass(frozen=True)
class Endpoint:
    network: str
    ip: str | None = None
    mac: str | None = None


def plan_endpoints(internal: str, vnics: list[dict[str, Any]],
                   per_endpoint_mac: bool) -> tuple[Endpoint, list[Endpoint]]:
    """(primary network, networks connected afterwards in order)."""
    macvlans = [Endpoint(v["network"], v.get("ip_address"), v.get("mac_address")) for v in vnics]
    if per_endpoint_mac or not macvlans:
        return Endpoint(internal), macvlans
    first, others = macvlans[0], macvlans[1:]
    return first, [Endpoint(internal), *others]


def container_exists(api: Any, name: str) -> dict[str, Any] | None:
    try:
        return api.inspect_container(name)  # type: ignore[no-any-return]
    except docker.errors.NotFound:
        return None


def create_and_connect(api: Any, *, name: str, image: str, container_labels: dict[str, str],
                       internal: str, vnics: list[dict[str, Any]], per_endpoint_mac: bool,
                       rt: bool, device_cgroup_rules: list[str] | None = None,
                       raw_nic: bool = False) -> str:
    primary, rest = plan_endpoints(internal, vnics, per_endpoint_mac)
    host_config = api.create_host_config(
        network_mode=primary.network,
        cap_add=CAPABILITIES + (RAW_NIC_CAPABILITIES if raw_nic else []),
        restart_policy=RESTART_POLICY,
        ulimits=rt_ulimits() if rt else None, dns=resolv.servers(vnics) or None,
        device_cgroup_rules=device_cgroup_rules or None)
    endpoint = api.create_endpoint_config(
        ipv4_address=primary.ip, mac_address=primary.mac if per_endpoint_mac else None)
    networking = api.create_networking_config({primary.network: endpoint})
    try:
        created = api.create_container(
            image, name=name, labels=container_labels, host_config=host_config,
            networking_config=networking, detach=True,
            mac_address=None if per_endpoint_mac else primary.mac)
    except docker.errors.APIError as exc:
        raise OperationFailed(f"Creating container {name} failed: "
                              f"{exc.explanation or exc}") from None
    cid = str(created["Id"])
    try:
        for ep in rest:
            try:
                api.connect_container_to_network(
                    cid, ep.network, ipv4_address=ep.ip,
                    mac_address=ep.mac if per_endpoint_mac else None)
            except docker.errors.APIError as exc:
                text = str(exc.explanation or exc)
                if ep.ip and "address" in text.lower():
                    raise OperationFailed(f"Connecting {name} to {ep.network} with IP "
                                          f"{ep.ip} failed: {text}") from None
                raise OperationFailed(f"Connecting {name} to {ep.network} failed: {text}") \
                    from None
    except BaseException:
        with contextlib.suppress(docker.errors.APIError):
            api.remove_container(cid, force=True, v=True)
        raise
    return cid


def start(api: Any, ident: str) -> None:
    api.start(ident)


def set_restart_policy(api: Any, ident: str, name: str) -> None:
    api.update_container(ident, restart_policy={"Name": name})


def stop(api: Any, ident: str, grace: float) -> None:
    api.stop(ident, timeout=int(grace))


def restart(api: Any, ident: str, grace: float) -> None:
    api.restart(ident, timeout=int(grace))


def remove(api: Any, ident: str, grace: float | None) -> bool:
    """Stop (with `grace` seconds) and remove a container and its anonymous volumes;
    False when it did not exist."""
    try:
        if grace is not None:
            with contextlib.suppress(docker.errors.APIError):
                api.stop(ident, timeout=int(grace))
        api.remove_container(ident, force=True, v=True)
        return True
    except docker.errors.NotFound:
        return False


def remove_labelled(api: Any, name: str, label: str, value: str, grace: float | None) -> str:
    """Remove the container called `name` only when it carries `label=value` (its own or
    its image's labels): "removed", "absent", or "foreign" when left alone.  Removal goes
    by the id that was checked, so a container renamed in between is never the one hit."""
    try:
        attrs = api.inspect_container(name)
    except docker.errors.NotFound:
        return "absent"
    found = (attrs.get("Config") or {}).get("Labels") or {}
    if found.get(label) != value:
        return "foreign"
    return "removed" if remove(api, str(attrs["Id"]), grace) else "absent"


def connect_agent(api: Any, agent: str, network: str) -> None:
    try:
        api.connect_container_to_network(agent, network)
    except docker.errors.APIError as exc:
        if "already exists" not in str(exc.explanation or exc):
            raise


def image_present(api: Any, ref: str) -> bool:
    try:
        api.inspect_image(ref)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.NotFound:
        return False


def pull(api: Any, repository: str, tag: str) -> None:
    """Pull and follow the progress stream; an error line becomes an exception."""
    try:
        for line in api.pull(repository, tag=tag, stream=True, decode=True):
            if isinstance(line, dict) and line.get("error"):
                raise OperationFailed(str(line["error"]))
    finally:
        with contextlib.suppress(Exception):
            api.close()
