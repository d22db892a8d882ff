"""No service package imports another: what processes share lives in common/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute module a file imports (also inside functions), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            # `from services import metrics` names a package too.
            if node.module == "services":
                found.extend((node.lineno, f"services.{a.name}") for a in node.names)
    return found


def crossings() -> list[str]:
    out = []
    for path in sorted(SERVICES.rglob("*.py")):
        own = path.relative_to(SERVICES).parts[0]
        if own.endswith(".py"):
            continue  # services/__init__.py
        for line, module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "services" and len(parts) > 1 and parts[1] != own:
                out.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return out


def test_no_service_package_imports_another() -> None:
    assert crossings() == []


def test_the_check_sees_a_crossing(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from services.executor.errors import Busy\n"
                      "from services import metrics\n")
    assert sorted(m for _, m in imported_modules(sample)) == [
        "services", "services.executor.errors", "services.metrics"]


def test_every_service_package_is_checked() -> None:
    packages = {p.parent.name for p in SERVICES.glob("*/__init__.py")}
    assert {"executor", "gateway", "metrics", "netbridge", "netmon"} <= packages
