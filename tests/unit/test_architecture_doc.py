"""docs/architecture.md names modules and folders; every one of them must exist.

A path with a slash is read from the repository root.  A bare file name (`link.py`) is
looked up in the folders named on the same line, so a table row that says where a part
lives and which modules hold it is checked as a whole.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
TOKEN = re.compile(r"`([^`\s]+)`")
FILE = re.compile(r"^[\w.-]+\.(py|sh|conf|md)$")


def named_paths(line: str) -> tuple[list[str], list[str]]:
    """The rooted paths and the bare file names a line of the doc names."""
    rooted, bare = [], []
    for token in TOKEN.findall(line):
        if any(c in token for c in "<>*") or "://" in token:
            continue  # a pattern (`svc.<name>.alive`, `net.*`) or a URL, not a path
        if "/" in token:
            rooted.append(token)
        elif FILE.match(token):
            bare.append(token)
    return rooted, bare


def missing_in(text: str) -> list[str]:
    missing = []
    for number, line in enumerate(text.splitlines(), 1):
        rooted, bare = named_paths(line)
        folders = [ROOT / p for p in rooted if p.endswith("/")]
        for path in rooted:
            if not (ROOT / path).exists():
                missing.append(f"line {number}: {path}")
        for name in bare:
            here = folders or [ROOT]
            if not any((folder / name).exists() for folder in here):
                missing.append(f"line {number}: {name} (looked in {[str(f) for f in here]})")
    return missing


def test_every_path_in_the_architecture_page_exists() -> None:
    text = DOC.read_text()
    rooted = sum(len(named_paths(line)[0]) for line in text.splitlines())
    assert rooted > 30, "the page should name the folders and modules it describes"
    assert missing_in(text) == []


def test_the_check_catches_a_missing_module() -> None:
    page = "| gateway | `services/gateway/` | `link.py`, `no_such_module.py` |\n`common/gone.py`"
    assert missing_in(page) == [
        "line 1: no_such_module.py (looked in "
        f"{[str(ROOT / 'services/gateway/')]})",
        "line 2: common/gone.py",
    ]
