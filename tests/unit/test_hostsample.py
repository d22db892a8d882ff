"""The host sample: disk totals over a cached mount table."""

from __future__ import annotations

import psutil
import pytest

from common import hostsample
from common.hostsample import HostSampler, disk_totals, physical_mounts


def test_each_device_counts_once_and_an_unreadable_mount_is_skipped() -> None:
    root = psutil.disk_usage("/")
    one = disk_totals([("/dev/root-dev", "/"), ("/dev/root-dev", "/"),
                       ("/dev/gone", "/no/such/mount")])
    assert one.total_gb == pytest.approx(root.total / hostsample.GB)
    # What is read now is what a sampler caches.
    assert disk_totals(physical_mounts()) == disk_totals()


def test_the_mount_table_is_read_once_per_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []

    def counting() -> list[tuple[str, str]]:
        reads.append(1)
        return [("/dev/x", "/")]
    monkeypatch.setattr(hostsample, "physical_mounts", counting)
    sampler = HostSampler()
    for _ in range(5):
        assert sampler.sample().disk_total > 0
    assert len(reads) == 1
    sampler._mounts_at -= hostsample.MOUNTS_TTL
    sampler.sample()
    assert len(reads) == 2
