"""Pure parts of device sampling: cgroup file layouts, readings, limits, device history."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.metrics.cgroups import CgroupGone, locate, proc_cgroup_paths
from services.metrics.containers import effective_nano_cpus, format_cpu, format_memory
from services.metrics.history import History
from services.metrics.readings import Reading, cpu_percent, from_stats

CID = "ab" * 32


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_tree(root: Path, rel: str, usec: int = 1500, current: int = 50 * 2**20,
            inactive: int = 10 * 2**20) -> Path:
    d = root / rel
    write(d / "cpu.stat", f"usage_usec {usec}\nuser_usec 1000\nsystem_usec 500\n")
    write(d / "memory.current", f"{current}\n")
    write(d / "memory.stat", f"anon 1\ninactive_file {inactive}\nactive_file 3\n")
    return d


def test_v2_systemd_scope_and_cgroupfs_layouts(tmp_path: Path) -> None:
    v2_tree(tmp_path / "a", f"system.slice/docker-{CID}.scope")
    v2_tree(tmp_path / "b", f"docker/{CID}")
    for root in (tmp_path / "a", tmp_path / "b"):
        files = locate(root, CID)
        assert files is not None and files.version == 2
        reading = files.read(now=7.0)
        assert reading == Reading(at=7.0, cpu_ns=1_500_000, memory_bytes=40 * 2**20)


def test_v1_split_controllers(tmp_path: Path) -> None:
    write(tmp_path / "cpu,cpuacct" / "docker" / CID / "cpuacct.usage", "123456789\n")
    mem = tmp_path / "memory" / "docker" / CID
    write(mem / "memory.usage_in_bytes", "3000\n")
    write(mem / "memory.stat", "cache 5\ninactive_file 900\ntotal_inactive_file 1000\n")
    files = locate(tmp_path, CID)
    assert files is not None and files.version == 1
    assert files.read(1.0) == Reading(1.0, 123456789, 2000)
    # The cgroup goes away when the container stops: a typed error, not a crash.
    (mem / "memory.usage_in_bytes").unlink()
    with pytest.raises(CgroupGone):
        files.read(2.0)


def test_custom_parent_and_proc_paths(tmp_path: Path) -> None:
    v2_tree(tmp_path / "cg", f"plc.slice/{CID}")
    assert locate(tmp_path / "cg", CID, parent="/plc.slice") is not None
    proc = tmp_path / "proc"
    write(proc / "42" / "cgroup", f"0::/nested/runner/{CID}\n")
    v2_tree(tmp_path / "cg2", f"nested/runner/{CID}")
    assert proc_cgroup_paths(42, proc) == {"": f"nested/runner/{CID}"}
    assert locate(tmp_path / "cg2", CID, pid=42, proc=proc) is not None
    # A PID seen through another namespace may be an unrelated process: its cgroup path
    # does not name the container, so it is not taken.
    write(proc / "43" / "cgroup", "0::/user.slice/session-1.scope\n")
    v2_tree(tmp_path / "cg3", "user.slice/session-1.scope")
    assert locate(tmp_path / "cg3", CID, pid=43, proc=proc) is None


def test_invisible_cgroup(tmp_path: Path) -> None:
    assert locate(tmp_path, CID) is None
    assert proc_cgroup_paths(999999, tmp_path) == {}


def test_cpu_percent_is_of_one_cpu() -> None:
    a = Reading(10.0, 1_000_000_000, 0)
    assert cpu_percent(a, Reading(15.0, 6_000_000_000, 0)) == pytest.approx(100.0)
    assert cpu_percent(a, Reading(12.0, 5_000_000_000, 0)) == pytest.approx(200.0)
    assert cpu_percent(a, a) is None  # the same reading twice
    assert cpu_percent(a, Reading(11.0, 10, 0)) is None  # restarted: counter went back


def test_reading_from_engine_stats() -> None:
    body = {"cpu_stats": {"cpu_usage": {"total_usage": 5000}},
            "memory_stats": {"usage": 8000, "stats": {"total_inactive_file": 3000}}}
    assert from_stats(body, 3.0) == Reading(3.0, 5000, 5000)
    v2 = {"cpu_stats": {"cpu_usage": {"total_usage": 5}},
          "memory_stats": {"usage": 80, "stats": {"inactive_file": 30}}}
    assert from_stats(v2, 1.0) == Reading(1.0, 5, 50)
    # A stopped container: empty counters.
    assert from_stats({"cpu_stats": {"cpu_usage": {"total_usage": 0}},
                       "memory_stats": {}}, 1.0) is None
    assert from_stats({}, 1.0) is None


def test_limits() -> None:
    assert effective_nano_cpus({"NanoCpus": 1_500_000_000}) == 1_500_000_000
    assert effective_nano_cpus({"CpuQuota": 50_000, "CpuPeriod": 100_000}) == 500_000_000
    assert effective_nano_cpus({"CpuQuota": 25_000}) == 250_000_000  # default period
    assert effective_nano_cpus({"CpuQuota": -1, "NanoCpus": 0}) == 0
    assert [format_cpu(n) for n in (0, 10**9, 5 * 10**8, 25 * 10**7, 2 * 10**9)] == \
        ["unlimited", "1.0 vCPU", "0.5 vCPU", "0.25 vCPU", "2.0 vCPU"]
    assert [format_memory(b) for b in (0, 512 * 2**20, 64 * 2**20, 2**30)] == \
        ["unlimited", "512 MB", "64 MB", "1024 MB"]
    assert format_cpu(None) == format_memory(None) == "unknown"


def test_device_history(tmp_path: Path) -> None:
    h = History(tmp_path / "h.sqlite3", retention=100)
    h.add_devices([("a", 10.0, 1.0, 20.0), ("a", 15.0, 3.0, 22.0), ("b", 12.0, 5.0, 9.0)])
    h.set_limits("a", 64 * 2**20, 0, 10.0)
    h.set_limits("a", 128 * 2**20, 10**9, 11.0)
    h.set_limits("c", 0, 0, 11.0)  # seen, no sample yet
    assert h.known_devices() == {"a", "b", "c"}
    assert h.limits("a") == (128 * 2**20, 10**9) and h.limits("z") is None
    assert h.device_series("a", "cpu", 0, 100, 10) == [(10, 1.0), (15, 3.0)]
    assert h.device_series("a", "memory_mb", 0, 100, 1) == [(10, 21.0)]
    assert h.has_device("c") and not h.has_device("z")
    assert h.forget_device("a") == 2
    assert not h.has_device("a") and h.limits("a") is None
    assert h.trim(now=113.0) == 1  # b's sample is older than the retention
    assert h.known_devices() == {"c"}
    with pytest.raises(ValueError):
        h.device_series("c", "ts; DROP TABLE samples", 0, 1, 1)
    h.close()


def test_adopted_containers_count_by_id_without_labels() -> None:
    from services.metrics import containers as mc
    attrs = {"Id": "abc123", "Name": "/plc-old", "Config": {"Labels": {}},
             "State": {"Running": True, "Pid": 42}, "HostConfig": {}}
    assert mc.parse_inspect(attrs, "inst") is None
    facts = mc.parse_inspect(attrs, "inst", {"abc123": "plc-old"})
    assert facts is not None and facts.device == "plc-old" and facts.running
    assert mc.parse_inspect(attrs, "inst", {"other": "plc-x"}) is None


def test_open_reader_matches_path_reads_and_reopens(tmp_path: Path) -> None:
    from services.metrics.cgroups import CgroupReader
    v2_tree(tmp_path, f"docker/{CID}", usec=1500)
    files = locate(tmp_path, CID)
    assert files is not None
    reader = CgroupReader(files)
    assert reader.read(1.0) == files.read(1.0) == Reading(1.0, 1_500_000, 40 * 2**20)
    # Re-read from the open files: a new value is seen without reopening them.
    (tmp_path / "docker" / CID / "cpu.stat").write_text("user_usec 1\nusage_usec 2500\n")
    assert reader.read(2.0) == Reading(2.0, 2_500_000, 40 * 2**20)
    # A descriptor that fails (kernfs answers ENODEV once the cgroup is removed) is
    # replaced by opening the path again: a restarted container's new cgroup.
    assert reader._fds is not None
    os.close(reader._fds[0])
    assert reader.read(3.0).cpu_ns == 2_500_000
    # Gone for good: the reopen fails too, a typed error, and nothing stays open.
    os.close(reader._fds[2])
    (tmp_path / "docker" / CID / "memory.stat").unlink()
    with pytest.raises(CgroupGone):
        reader.read(4.0)
    assert reader._fds is None


def test_open_reader_v1_and_absent_keys(tmp_path: Path) -> None:
    from services.metrics.cgroups import CgroupReader
    write(tmp_path / "cpuacct" / "docker" / CID / "cpuacct.usage", "77\n")
    mem = tmp_path / "memory" / "docker" / CID
    write(mem / "memory.usage_in_bytes", "3000\n")
    # `inactive_file` must not be taken for `total_inactive_file`, and a long file is read
    # past the first buffer.
    write(mem / "memory.stat", "inactive_file 900\n" + "x 1\n" * 6000 +
          "total_inactive_file 1000")
    files = locate(tmp_path, CID)
    assert files is not None and files.version == 1
    reader = CgroupReader(files)
    assert reader.read(1.0) == Reading(1.0, 77, 2000)
    write(mem / "memory.stat", "cache 5\n")
    assert reader.read(2.0) == Reading(2.0, 77, 3000)
    reader.close()
