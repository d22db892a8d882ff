"""common/procfs.py against psutil, which it replaces in the gateway and the executor, and
against a namespace with secondary addresses."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from common import procfs
from testkit.helpers import ROOT

MB = 1024 * 1024


def test_memory_matches_psutil() -> None:
    used, total = procfs.memory_used_total()
    mem = psutil.virtual_memory()
    assert total == mem.total
    assert abs(used - mem.used) < 64 * MB  # two reads a moment apart


def test_memory_without_available_falls_back_to_psutil(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "meminfo").write_text("MemTotal:       1000 kB\nMemFree:         10 kB\n")
    monkeypatch.setattr(procfs, "PROC", tmp_path)
    used, total = procfs.memory_used_total()
    mem = psutil.virtual_memory()  # psutil's own reading, not the file's
    assert total == mem.total and abs(used - mem.used) < 64 * MB


def test_start_time_and_command_line_match_psutil() -> None:
    for pid in (os.getpid(), os.getppid()):
        proc = psutil.Process(pid)
        assert procfs.process_started_at(pid) == pytest.approx(proc.create_time(), abs=0.02)
        assert procfs.process_command_line(pid) == proc.cmdline()


def test_start_time_of_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    odd = tmp_path / "a (b) c"
    odd.symlink_to("/bin/sleep")
    child = subprocess.Popen([str(odd), "5"])
    try:
        assert procfs.process_started_at(child.pid) == pytest.approx(
            psutil.Process(child.pid).create_time(), abs=0.02)
    finally:
        child.kill()
        child.wait()


def test_local_addresses_match_psutil() -> None:
    expected = {ipaddress.IPv4Address(a.address) for addrs in psutil.net_if_addrs().values()
                for a in addrs if a.family.name == "AF_INET"}
    assert procfs.local_ipv4_addresses() == expected


TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 198.51.100.0/24 2 0 2
        |-- 198.51.100.0
           /24 link UNICAST
        |-- 198.51.100.7
           /32 host LOCAL
           /32 link BROADCAST
"""


def test_local_addresses_read_only_host_local_leaves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "fib_trie").write_text(TRIE)
    monkeypatch.setattr(procfs, "PROC", tmp_path)
    assert procfs.local_ipv4_addresses() == {ipaddress.IPv4Address("127.0.0.1"),
                                            ipaddress.IPv4Address("198.51.100.7")}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_secondary_addresses_in_a_namespace_of_our_own() -> None:
    ns = f"oatpf{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["link", "add", "oatpf0", "type", "veth", "peer", "name", "oatpf1"],
                    ["addr", "add", "198.51.100.9/24", "dev", "oatpf0"],
                    ["addr", "add", "198.51.100.10/24", "dev", "oatpf0"],
                    ["addr", "add", "203.0.113.5/26", "dev", "oatpf0"],
                    ["link", "set", "oatpf1", "up"], ["link", "set", "oatpf0", "up"],
                    ["link", "set", "lo", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        code = ("import json; from common import procfs; "
                "print(json.dumps(sorted(map(str, procfs.local_ipv4_addresses()))))")
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                             check=True, capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
        assert json.loads(out) == ["127.0.0.1", "198.51.100.10", "198.51.100.9",
                                   "203.0.113.5"]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
