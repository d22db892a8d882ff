"""What every benchmark prints beside its figures: the machine and the commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
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


def compile_as_image() -> dict[str, Any]:
    """Write the byte code the image carries before a memory figure is taken: `.pyc` and
    `.opt-2.pyc` (the programs run with PYTHONOPTIMIZE=2) for the standard library, the
    environment's packages and the project.  Without them every program start compiles
    its modules (a shell with PYTHONDONTWRITEBYTECODE, or a standard library the user
    cannot write), and the compiler's garbage shows in the figures.  Directories this
    user cannot write are left as they are, and said so."""
    import sysconfig

    places = [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
              str(ROOT / "common"), str(ROOT / "services")]
    writable = [p for p in places if os.access(p, os.W_OK)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for flags in ([], ["-OO"]):
        subprocess.run([sys.executable, *flags, "-m", "compileall", "-q", "-j0", *writable],
                       env=env, capture_output=True, timeout=600, check=False)
    return {"byte_code_compiled": writable,
            "not_writable": [p for p in places if p not in writable]}
