"""Where the agent runs: in a container (which one) or on the host.

In a container the executor joins each runtime's `<name>_internal` network so it can reach
the runtime's internal address.  On the host it needs nothing: the host owns the gateway
address of every bridge network, internal ones included, so it reaches a runtime's
internal address directly (checked on Docker 20.10: an internal network only drops
forwarded traffic, not traffic between the host and the bridge).

Detection, first hit wins: the configured name or id; a 64-hex container id in
`/proc/self/cgroup` (cgroup v1) or in `/proc/self/mountinfo` (the engine bind-mounts
`/var/lib/docker/containers/<id>/hostname` and friends, also under cgroup v2); the
hostname, which the engine sets to the short id, confirmed through the API.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import docker.errors

_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")
_MOUNT_ID = re.compile(r"/containers/([0-9a-f]{64})/")


def id_from_cgroup(text: str) -> str | None:
    for line in text.splitlines():
        if "docker" in line or "containerd" in line:
            match = _ID.search(line)
            if match:
                return match.group(1)
    return None


def id_from_mountinfo(text: str) -> str | None:
    for line in text.splitlines():
        if "/hostname" in line or "/resolv.conf" in line or "/hosts" in line:
            match = _MOUNT_ID.search(line)
            if match:
                return match.group(1)
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def detect_own_container(api: Any, configured: str = "") -> str | None:
    """The agent's container id, or None when it runs on the host.  Blocking."""
    candidates = []
    if configured:
        candidates.append(configured)
    for found in (id_from_cgroup(_read("/proc/self/cgroup")),
                  id_from_mountinfo(_read("/proc/self/mountinfo"))):
        if found:
            candidates.append(found)
    hostname = socket.gethostname()
    for ident in candidates:
        try:
            return str(api.inspect_container(ident)["Id"])
        except docker.errors.NotFound:
            continue
    try:
        attrs = api.inspect_container(hostname)
    except (docker.errors.NotFound, docker.errors.APIError):
        return None
    # A container named like this host is not proof; the engine's short id is.
    if str(attrs.get("Id", "")).startswith(hostname) and \
            (attrs.get("Config") or {}).get("Hostname") == hostname:
        return str(attrs["Id"])
    return None
