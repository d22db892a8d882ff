"""What every benchmark prints beside its figures: the machine and the commit."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent


def context(**machine: Any) -> dict[str, Any]:
    """The machine and the commit; ``machine`` adds facts a bench cares about (engine...)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        commit = ""
    return {
        "machine": {"cpus": os.cpu_count(), "arch": platform.machine(),
                    "kernel": platform.release(), "python": platform.python_version(),
                    **machine},
        "commit": commit or None,
    }


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def memory_gb() -> float:
    return round(psutil.virtual_memory().total / 2**30, 1)
