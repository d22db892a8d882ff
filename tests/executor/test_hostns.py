"""The host's network namespace as the executor finds it (`net/hostns.py`), with a real
process in a network namespace of its own, as the executor is in the agent container:
its own sysfs (mounted afresh, as a container's is) lists only its own interfaces, while
the work it runs through `HostNetns` sees the host's — netlink, sysfs, and a child
process such as `iptables` alike.  On the host, nothing is entered.

Needs root (namespaces, a veth pair); only the veth pair made here is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from services.executor.net import hostns, wifi
from testkit.dockerenv import REPO

pytestmark = [pytest.mark.netns]

PROBE = """
import json, os, subprocess, sys
from pathlib import Path
from services.executor.net import hostns, wifi
name = sys.argv[1]
host = hostns.locate()

def raises():
    raise KeyError("as raised")

try:
    host.run(raises)
    raised = None
except KeyError as exc:
    raised = str(exc)
child = lambda: subprocess.run(["ip", "link", "show", name], capture_output=True).returncode
print(json.dumps({
    "own": host.own, "found_by": host.found_by, "pid": os.getppid(),
    "exists_here": wifi.exists(name), "exists_on_host": wifi.exists(name, host),
    "sysfs_here": Path("/sys/class/net", name).exists(),
    "sysfs_of_host": (host.sysfs / name).exists(),
    "child_here": child(), "child_on_host": host.run(child), "raised": raised,
}))
"""


@pytest.fixture
def veth() -> Iterator[str]:
    name = f"oath{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"],
                   check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def test_found_from_a_namespace_of_its_own(veth: str) -> None:
    # A fresh sysfs in the child's own namespaces, as the engine mounts for a container.
    argv = ["unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount -t sysfs sysfs /sys && exec "$@"', "sh", sys.executable, "-c", PROBE, veth]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO,
                          check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["own"] is False
    assert seen["found_by"].startswith(f"process {os.getpid()} "), seen  # this test
    assert (seen["exists_here"], seen["exists_on_host"]) == (False, True)
    assert (seen["sysfs_here"], seen["sysfs_of_host"]) == (False, True)
    assert seen["child_here"] != 0 and seen["child_on_host"] == 0
    assert seen["raised"] == "'as raised'"  # the work's own error, not a wrapper


def test_on_the_host_nothing_is_entered(veth: str) -> None:
    host = hostns.locate()
    assert host.own and host.path is None and host.sysfs == hostns.SYSFS
    assert host.ns_file == f"/proc/{os.getpid()}/ns/net"
    assert wifi.exists(veth, host) and not wifi.exists(f"{veth}x", host)
