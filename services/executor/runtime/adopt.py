"""Taking over a device that ran the original agent.

The original leaves in the state directory `runtime_vnics.json` (`{"<name>": [vnic, ...]}`)
and `data/clients.json` (`{"<name>": {"ip": "<internal ip>", "name": "<name>"}}`); its
runtime containers carry no labels, and labels cannot be added to an existing container.
At every start (and reconnection to the engine) the executor adopts exactly the
containers those files name that carry no ownership labels (neither ours nor another
agent's), and are neither the agent itself nor the sidecar:

* ownership is recorded first, by container id and name, in `<state>/adopted.json`
  (`common/adopted.py`, atomic), which metrics reads too;
* the vNIC configs are kept, normalised where they pass today's rules, with the MACVLAN
  network each one is on (`macvlan_<parent>_<subnet>`) and its MAC (from the container's
  endpoint when the config has none), and written back to `runtime_vnics.json` in the
  documented shape;
* from then on the live view, status, start/stop/restart, delete (which also removes
  `<name>_internal` and forgets the vNICs), run_command (the internal IP on
  `<name>_internal`), re-homing and self-destruct treat them as ours.

A name whose container does not exist is skipped with a log line; a container not named
in those files is never touched.  Idempotent: an adopted container is not looked at again,
and a deleted one leaves the set.  The original's `data/clients.json` is left as it is.
"""

from __future__ import annotations

import logging
from typing import Any

import docker.errors

from common import adopted, labels
from common.atomicfile import read_json
from services.executor.context import Context
from services.executor.engine import containers
from services.executor.errors import InvalidRequest
from services.executor.net import names
from services.executor.runtime.validate import normalise_vnic

log = logging.getLogger(__name__)

CLIENTS_FILE = ("data", "clients.json")


def original_names(ctx: Context) -> list[str]:
    """The runtimes the original's files name (ours are filtered out later by labels)."""
    found = set(ctx.vnics.devices())
    try:
        clients = read_json(ctx.config.state_dir.joinpath(*CLIENTS_FILE))
    except (OSError, ValueError) as exc:
        log.warning("cannot read the original's clients.json: %s", exc)
        clients = None
    if isinstance(clients, dict):
        found |= {name for name in clients if isinstance(name, str)}
    return sorted(found)


def load(ctx: Context) -> None:
    """The adopted set as recorded, into the live view (before its first sync)."""
    ctx.view.adopted = adopted.read(ctx.config.state_dir)
    if ctx.view.adopted:
        log.info("runtimes adopted from the original agent: %s",
                 ", ".join(sorted(ctx.view.adopted.values())))


async def adopt_original(ctx: Context, protected: set[str]) -> list[str]:
    """Adopt what the original's files name; returns the names newly adopted."""
    known = dict(ctx.view.adopted)
    taken = set(known.values())
    newly: list[tuple[str, dict[str, Any]]] = []
    for name in original_names(ctx):
        if name in taken or name in protected:
            continue
        attrs = await ctx.docker.call(containers.container_exists, name)
        if attrs is None:
            log.info("the original agent's files name %s, but no such container exists; "
                     "skipped", name)
            continue
        found = (attrs.get("Config") or {}).get("Labels") or {}
        if labels.owned(found, ctx.instance):
            continue  # created by this agent
        if found.get(labels.MANAGED):
            log.warning("container %s carries another agent's labels; not adopted", name)
            continue
        if str(attrs.get("Name", "")).lstrip("/") != name:
            continue  # the name matched an id prefix, not a container name
        known[str(attrs["Id"])] = name
        newly.append((name, attrs))
    if ctx.agent_container:  # the agent reaches runtimes on their `<name>_internal`
        for name in sorted(set(known.values())):
            try:
                await ctx.docker.call(containers.connect_agent, ctx.agent_container,
                                      names.internal_network(name))
            except docker.errors.APIError as exc:
                log.warning("cannot join %s: %s", names.internal_network(name),
                            exc.explanation or exc)
    if not newly:
        return []
    await ctx.io_call(adopted.write, ctx.config.state_dir, known)
    ctx.view.adopted = known  # replaced whole: the watcher thread reads it
    for name, attrs in newly:
        await ctx.save_vnics(name, adopted_vnics(name, ctx.vnics.get(name), attrs))
        log.warning("adopted runtime %s (%s) from the original agent", name,
                    str(attrs["Id"])[:12])
    return [name for name, _ in newly]


def adopted_vnics(name: str, stored: list[dict[str, Any]],
                  attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The original's vNIC configs with today's normalised keys where they pass the
    rules, the network each is on and its MAC."""
    endpoints = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    out = []
    for i, raw in enumerate(stored):
        try:
            vnic = normalise_vnic(raw, i)
        except InvalidRequest as exc:
            log.warning("vNIC %d of adopted runtime %s kept as the original wrote it: %s",
                        i, name, exc.text)
            vnic = dict(raw)
        network = _network_of(vnic, endpoints)
        if network is not None:
            vnic["network"] = network
            if not vnic.get("mac_address"):
                vnic["mac_address"] = endpoints[network].get("MacAddress") or None
        out.append(vnic)
    return out


def _network_of(vnic: dict[str, Any], endpoints: dict[str, Any]) -> str | None:
    parent = vnic.get("parent_interface")
    if not isinstance(parent, str):
        return None
    subnet = vnic.get("parent_subnet") or vnic.get("subnet")
    if isinstance(subnet, str) and "/" in subnet:
        exact = names.macvlan_network(parent, subnet)
        if exact in endpoints:
            return exact
    prefix = f"macvlan_{parent}_"
    matches = sorted(n for n in endpoints if n.startswith(prefix))
    return matches[0] if matches else None


async def forget(ctx: Context, container_id: str) -> None:
    """A removed adopted runtime leaves the set."""
    if container_id not in ctx.view.adopted:
        return
    known = {k: v for k, v in ctx.view.adopted.items() if k != container_id}
    await ctx.io_call(adopted.write, ctx.config.state_dir, known)
    ctx.view.adopted = known
