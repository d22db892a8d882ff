"""Namespace and netmon fixtures shared by the netmon and netbridge tests; each conftest
imports them and provides its own `state_dir` (netmon's state directory)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.netmon.nsutil import NetmonProcess, ip, unique_ns


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace; deleting it removes every interface inside."""
    name = unique_ns()
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        ip(name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


@pytest.fixture
def lan(netns: str) -> str:
    """``oat0`` (the host NIC under test) and its peer ``oat0p``, both up, inside
    the namespace; ``oat0`` has 192.0.2.10/24 and a default route via 192.0.2.1."""
    ip(netns, "link", "add", "oat0", "type", "veth", "peer", "name", "oat0p")
    ip(netns, "link", "set", "oat0p", "up")
    ip(netns, "link", "set", "oat0", "up")
    ip(netns, "addr", "add", "192.0.2.10/24", "dev", "oat0")
    ip(netns, "route", "add", "default", "via", "192.0.2.1", "dev", "oat0")
    return netns


@pytest.fixture
def netmon_factory(state_dir: Path) -> Iterator[Callable[..., NetmonProcess]]:
    started: list[NetmonProcess] = []

    def make(ns: str, debounce: float | None = 0.3, wait: bool = True) -> NetmonProcess:
        proc = NetmonProcess(ns, state_dir, debounce)
        started.append(proc)
        return proc.start(wait=wait)

    yield make
    for proc in started:
        proc.cleanup()
