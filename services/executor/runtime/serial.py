"""Serial passthrough: USB serial adapters given to runtimes (`serial_configs`).

A serial config names an adapter by its stable by-id link (`device_id`, an entry of the
configured by-id directory) and the path the runtime sees it at (`container_path`).

* Create: the container gets a device cgroup rule for the adapter's node
  (`c MAJ:MIN rwm` with cgroup v1, `c MAJ:* rwm` with cgroup v2, see below) when the
  adapter is plugged in; Docker's `devices` option is not used, because it resolves the
  host node at every start, so a runtime whose adapter is unplugged could not start.
* The keeper (`SerialKeeper`, once a second) puts the node in place: for every running
  runtime and every config whose adapter is present, when the runtime's process or the
  adapter's node changed since the last look, the node is allowed in the container's
  device cgroup and bind-mounted at `container_path` (`serialnode.py`); an adapter that
  went away is taken out again.  So an unplug and replug — even as a new major/minor —
  and a runtime restart are followed within about a second, without restarting anything.
* cgroup v1 (`devices.allow` of the container's cgroup) allows a new major/minor live.
  cgroup v2 has no such file (Docker installs an eBPF program at start), so there the
  rule made at create covers the whole major (`c 188:* rwm` for ttyUSB, 166 for ttyACM);
  a replug that changes the major needs a runtime restart (status `error` says so).
* Persisted in `<state>/runtime_serials.json` (atomic writes), next to the vNICs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

from common import serial_rules
from common.vnic_rules import Invalid
from services.executor.errors import InvalidRequest
from services.executor.runtime.devicefile import DeviceFile

log = logging.getLogger(__name__)

FILE_NAME = "runtime_serials.json"
POLL = 1.0
NODE_TIMEOUT = 10.0
CGROUP_ROOT = Path("/sys/fs/cgroup")
_REPO = Path(__file__).resolve().parents[3]


class SerialStore(DeviceFile):
    FILE_NAME = FILE_NAME
    FALLBACK = "starting with no stored serial configs"
    log = log

    def set(self, device: str, serials: list[dict[str, Any]]) -> dict[str, Any]:
        self._data[device] = [dict(s) for s in serials]
        return self.snapshot()

    def devices(self) -> list[str]:
        return [d for d, items in self._data.items() if items]


# --- request checks --------------------------------------------------------------------------


def check_serials(raw: Any, by_id_dir: Path) -> list[dict[str, str]]:
    """`serial_configs` of a create request, normalised; InvalidRequest on any fault."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > serial_rules.SERIAL_CONFIGS_MAX:
        raise InvalidRequest("serial_configs: must be a list of at most "
                             f"{serial_rules.SERIAL_CONFIGS_MAX} serial configs")
    checks = {"name": serial_rules.serial_name, "device_id": serial_rules.device_path,
              "container_path": serial_rules.container_path}
    out: list[dict[str, str]] = []
    for i, item in enumerate(raw):
        where = f"serial_configs[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where}: must be an object")
        config: dict[str, str] = {}
        for key, check in checks.items():
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                raise InvalidRequest(f"{where}.{key}: is required (a non-empty string)")
            try:
                config[key] = check(value, config)
            except Invalid as exc:
                raise InvalidRequest(f"{where}.{key}: {exc.reason}") from None
        if not serial_rules.in_by_id_dir(config["device_id"], str(by_id_dir)):
            raise InvalidRequest(f"{where}.device_id: {config['device_id']} is not an entry "
                                 f"of {by_id_dir}")
        out.append(config)
    try:
        serial_rules.serial_set(out, {})
    except Invalid as exc:
        raise InvalidRequest(f"serial_configs: {exc.reason}") from None
    return out


# --- host facts ------------------------------------------------------------------------------


def host_node(device_id: str) -> tuple[str, int] | None:
    """(node path, rdev) of the adapter behind a by-id link, None when it is absent."""
    try:
        target = os.path.realpath(device_id)
        st = os.stat(target)
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    return target, st.st_rdev


def cgroup_v2(root: Path = CGROUP_ROOT) -> bool:
    return (root / "cgroup.controllers").exists()


def create_rules(serials: list[dict[str, Any]]) -> list[str]:
    """Device cgroup rules for the container, from the adapters present now."""
    rules: list[str] = []
    whole_major = cgroup_v2()
    for config in serials:
        node = host_node(config["device_id"])
        if node is None:
            continue
        major, minor = os.major(node[1]), os.minor(node[1])
        rule = f"c {major}:{'*' if whole_major else minor} rwm"
        if rule not in rules:
            rules.append(rule)
    return rules


def allow(pid: int, rdev: int, root: Path = CGROUP_ROOT) -> None:
    """Allow char device `rdev` in the device cgroup (v1) of process `pid`."""
    if cgroup_v2(root):
        return  # the create rule covers the major; nothing can be added live
    relative = None
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) == 3 and "devices" in parts[1].split(","):
                relative = parts[2]
    if relative is None:
        return  # no devices controller: nothing restricts device access
    path = root / "devices" / relative.lstrip("/") / "devices.allow"
    path.write_text(f"c {os.major(rdev)}:{os.minor(rdev)} rwm\n")


async def node_op(*args: str) -> None:
    """Run `serialnode` (a process of its own: see its docstring)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.executor.runtime.serialnode", *args, cwd=_REPO,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise OSError(f"serialnode {args[0]} did not finish in {NODE_TIMEOUT:g} s") from None
    if proc.returncode != 0:
        raise OSError(err.decode(errors="replace").strip() or f"exit {proc.returncode}")
