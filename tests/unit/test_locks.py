"""The dependency locks: every package pinned with hashes, and every install checks them.

Without hashes, whoever controls the index (or the wheelhouse on the build host) can hand
pip a different file under the same name and version; `--require-hashes` refuses it.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCKS = {
    "requirements.txt": "requirements.in",
    "requirements-dev.txt": "requirements-dev.in",
    "install/build-requirements.txt": "install/build-requirements.in",
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def parse_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile lock; fails on anything unpinned."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash=sha256:"):
            assert current is not None, f"{path}: a hash before any requirement"
            digest = line.removeprefix("--hash=sha256:").rstrip("\\ ").strip()
            assert re.fullmatch(r"[0-9a-f]{64}", digest), f"{path}: bad hash {line!r}"
            entries[current][1].append(digest)
            continue
        match = PIN.match(line)
        assert match, f"{path}: not an exact pin: {line!r}"
        current = canonicalize_name(match.group(1))
        entries[current] = (match.group(2), [])
    return entries


def parse_input(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = PIN.match(line)
        assert match, f"{path}: not an exact pin: {line!r}"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


@pytest.mark.parametrize("lock", list(LOCKS))
def test_every_locked_package_is_pinned_with_hashes(lock: str) -> None:
    entries = parse_lock(REPO / lock)
    assert entries
    unhashed = [name for name, (_, hashes) in entries.items() if not hashes]
    assert unhashed == [], f"{lock}: no hash for {unhashed}"
    # The lock is the input resolved: every pin of the input is there at its version.
    for name, version in parse_input(REPO / LOCKS[lock]).items():
        assert entries.get(name, ("missing",))[0] == version, f"{lock}: {name}"


@pytest.mark.parametrize("lock", ["requirements.txt", "requirements-dev.txt"])
def test_locks_are_closed_under_dependencies(lock: str) -> None:
    """Every dependency of a locked package is locked too (pip would refuse it otherwise
    in hash-checking mode); checked against the metadata of the installed packages."""
    locked = parse_lock(REPO / "requirements.txt") | parse_lock(REPO / lock)
    for name in parse_lock(REPO / lock):
        dist = importlib.metadata.distribution(name)
        assert canonicalize_name(dist.metadata["Name"]) == name
        assert dist.version == locked[name][0], f"{name}: installed {dist.version}"
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            assert dep in locked, f"{lock}: {name} needs {dep}, which is not locked"
            assert req.specifier.contains(locked[dep][0], prereleases=True), (name, dep)


def test_shared_packages_agree_between_the_locks() -> None:
    runtime, dev = parse_lock(REPO / "requirements.txt"), parse_lock(REPO / "requirements-dev.txt")
    for name in runtime.keys() & dev.keys():
        assert runtime[name][0] == dev[name][0], name


def test_every_install_requires_hashes() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"pip install [^\n]*--require-hashes[^\n]*\\\n\s*-r requirements.txt "
                     r"-r requirements-dev.txt", makefile)
    assert "--no-deps -e ." in makefile  # the project itself: editable, no resolution
    wheelhouse = (REPO / "install/build-wheelhouse.sh").read_text()
    # The download, and the fallback that builds what has no wheel.
    assert re.search(r"pip download [^\n]*--require-hashes", wheelhouse)
    assert re.search(r"pip wheel [^\n]*--require-hashes", wheelhouse)
    for dockerfile in ("Dockerfile", "Dockerfile.netmon"):
        text = (REPO / dockerfile).read_text()
        installs = re.findall(r"pip install[^\n]*(?:\\\n[^\n]*)*-r /\S+", text)
        assert installs and all("--require-hashes" in i for i in installs), dockerfile
    assert "requirements.in" in (REPO / "pyproject.toml").read_text()


def test_netmon_image_takes_pyroute2_with_its_hashes() -> None:
    """The netmon image installs pyroute2 alone: the awk of Dockerfile.netmon must cut its
    whole entry (name and every hash) out of the lock."""
    text = (REPO / "Dockerfile.netmon").read_text()
    program = re.search(r"awk '([^']+)'", text)
    assert program
    cut = subprocess.run(["awk", program.group(1), str(REPO / "requirements.txt")],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    version, hashes = parse_lock(REPO / "requirements.txt")["pyroute2"]
    assert cut.splitlines()[0].startswith(f"pyroute2=={version}")
    assert re.findall(r"sha256:([0-9a-f]{64})", cut) == hashes
