"""The bus's layout rules, checked on the source: the runner creates every bus socket a
service uses, and one module reads a socket's descriptor."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOCKET_OWNERS = {"Publisher", "Subscriber", "RpcClient", "RpcServer"}


def _calls(path: Path) -> list[tuple[str, int, str]]:
    """(function, line, callee) for each call of a socket-owning bus class or of
    `.socket(...)` in `path`; function is the enclosing top-level function or class."""
    found: list[tuple[str, int, str]] = []
    for top in ast.parse(path.read_text(), str(path)).body:
        owner = getattr(top, "name", "<module>")
        for node in ast.walk(top):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else ""
            is_zmq_socket = name == "socket" and isinstance(func, ast.Attribute) and \
                not (isinstance(func.value, ast.Name) and func.value.id == "socket")
            if name in SOCKET_OWNERS or is_zmq_socket:
                found.append((owner, node.lineno, name))
    return found


def test_services_create_bus_sockets_only_in_main() -> None:
    offenders = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        if path.parts[-2] == "netmon":  # netmon speaks a unix socket, not the bus
            continue
        for owner, line, name in _calls(path):
            if owner != "main":
                offenders.append(f"{path.relative_to(ROOT)}:{line} {name}() in {owner}")
    assert offenders == [], "bus sockets are the runner's (common/service.py) to create"


def test_the_scan_sees_a_socket_created_below_main(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def helper(ctx):\n    return Subscriber(ctx, [])\n"
                      "def main():\n    return RpcClient(1, 2, 3)\n"
                      "class S:\n    def f(self, ctx):\n        ctx.socket(1)\n")
    assert _calls(sample) == [("helper", 2, "Subscriber"), ("main", 4, "RpcClient"),
                              ("S", 7, "socket")]


def test_one_module_reads_the_zeromq_descriptor() -> None:
    readers = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "common").rglob("*.py")
                     if "zmq.FD" in p.read_text() or "add_reader" in p.read_text())
    assert readers == ["common/bus/reader.py"]
