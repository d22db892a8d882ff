"""Downsampling of consumption series: shape, bounds and values (history.py)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from services.metrics.history import MAX_POINTS, History, resolution

NOW = 1_800_000_000.0  # a whole minute, for predictable minute buckets
DAY = 86400.0


def filled(tmp_path: Path, seconds: float, devices: tuple[str, ...] = ("d",)) -> History:
    """A history with a sample every 5 s over the last `seconds`: cpu = i % 7 (a pattern
    that averages to known values), memory = 100 + i."""
    h = History(tmp_path / "h.sqlite3")
    count = int(seconds // 5)
    for device in devices:
        h.add_devices((device, NOW - seconds + 5 * i, float(i % 7), 100.0 + i)
                      for i in range(1, count + 1))
    for i in range(1, count + 1):
        h.add(NOW - seconds + 5 * i, float(i % 7), 100.0 + i)
    return h


def test_resolution_ladder() -> None:
    assert resolution(NOW - 1800, NOW) == 5  # every sample for the last 30 minutes
    assert resolution(NOW - 3600, NOW) == 10
    assert resolution(NOW - 6 * 3600, NOW) == 60
    assert resolution(NOW - 2 * DAY, NOW) == 600  # 288 points for 48 h
    assert resolution(NOW - 10, NOW, max_points=1) == 10
    assert resolution(NOW - 400 * DAY, NOW) == pytest.approx(400 * DAY / MAX_POINTS)
    assert resolution(NOW, NOW) == 5


@pytest.mark.parametrize("span", [300, 1800, 3600, 6 * 3600, 2 * DAY])
def test_series_shape_and_bounds(tmp_path: Path, span: float) -> None:
    h = filled(tmp_path, 2 * DAY)
    for series in (h.device_series("d", "cpu", NOW - span, NOW),
                   h.series("memory_mb", NOW - span, NOW)):
        assert 0 < len(series) <= MAX_POINTS
        stamps = [ts for ts, _ in series]
        assert stamps == sorted(set(stamps))  # ordered, one point per bucket
        assert NOW - span <= stamps[0] and stamps[-1] <= NOW
        step = resolution(NOW - span, NOW)
        assert len(series) >= math.floor(span / step) - 1  # no bucket lost
    h.close()


def test_fine_series_are_the_samples(tmp_path: Path) -> None:
    h = filled(tmp_path, 1800)
    cpu = h.device_series("d", "cpu", NOW - 1800, NOW)
    assert [v for _, v in cpu] == [float(i % 7) for i in range(1, 361)]
    assert [ts for ts, _ in cpu] == [int(NOW - 1800 + 5 * i) for i in range(1, 361)]


def reference(samples: list[tuple[float, float]], start: float, end: float,
              step: float, max_points: int = MAX_POINTS) -> list[tuple[int, float]]:
    """The documented rule, computed naively: minute buckets counted back from the current
    minute for steps of a minute or more (a minute cut by `start` left out), else buckets
    counted back from `end`; each point the mean of its samples, at its first sample."""
    last = min(max_points, int((end - start) // step) + 1) - 1
    buckets: dict[int, list[tuple[float, float]]] = {}
    for ts, value in samples:
        if step % 60 == 0:
            minute = ts // 60 * 60
            if not (math.ceil(start / 60) * 60 <= minute <= end):
                continue
            index = int((end // 60 * 60 - minute) // step)
        else:
            if not start <= ts <= end:
                continue
            index = int((end - ts) // step)
        buckets.setdefault(min(index, last), []).append((ts, value))
    return sorted((int(min(b)[0]), statistics.fmean(v for _, v in b))
                  for b in buckets.values())


@pytest.mark.parametrize("span", [1800, 3600, 6 * 3600, 2 * DAY])
def test_points_are_bucket_means(tmp_path: Path, span: float) -> None:
    h = filled(tmp_path, 2 * DAY, devices=("d", "other"))
    end = NOW - 17  # not on a minute
    samples = [(NOW - 2 * DAY + 5 * i, 100.0 + i) for i in range(1, 34561)]
    expected = reference(samples, end - span, end, resolution(end - span, end))
    mem = h.device_series("d", "memory_mb", end - span, end)
    assert len(mem) == len(expected)
    for (ts, value), (want_ts, want) in zip(mem, expected, strict=True):
        assert ts == want_ts and value == pytest.approx(want)
    cpu = h.device_series("d", "cpu", end - span, end)
    assert all(0.0 <= v <= 6.0 for _, v in cpu)  # means stay within the samples' range
    assert h.series("cpu", end - span, end) == cpu  # the host's series the same way
    h.close()


def test_minute_sums_survive_reopen_trim_and_duplicates(tmp_path: Path) -> None:
    h = filled(tmp_path, 4 * 3600)
    before = h.device_series("d", "memory_mb", NOW - 4 * 3600, NOW, max_points=60)
    h.add_devices([("d", NOW, 999.0, 999.0)])  # the newest sample again: kept once
    assert h.device_series("d", "memory_mb", NOW - 4 * 3600, NOW, max_points=60) == before
    h.close()
    h = History(tmp_path / "h.sqlite3")
    assert h.device_series("d", "memory_mb", NOW - 4 * 3600, NOW, max_points=60) == before
    h.db.execute("DROP TABLE minutes")  # a history from before the minute sums
    h.close()
    h = History(tmp_path / "h.sqlite3")
    assert h.device_series("d", "memory_mb", NOW - 4 * 3600, NOW, max_points=60) == before
    h.retention = 3600
    assert h.trim(NOW) == 2 * (3 * 3600 // 5 - 1)  # older than NOW - 1 h: the device and host
    kept = h.device_series("d", "memory_mb", NOW - 4 * 3600, NOW, max_points=60)
    # The oldest kept bucket lost its trimmed samples; the newer ones are unchanged.
    assert kept[1:] == before[-(len(kept) - 1):] and 12 <= len(kept) <= 14
    assert h.forget_device("d") == 721  # the last hour and the sample at NOW - 1 h
    assert h.device_series("d", "cpu", NOW - 4 * 3600, NOW, max_points=60) == []
    h.close()


@pytest.mark.parametrize("span", [1800, 3600, 2 * DAY])
def test_both_series_in_one_pass_match_each_alone(tmp_path: Path, span: float) -> None:
    h = filled(tmp_path, 2 * DAY, devices=("d", "other"))
    end = NOW - 17
    period = (end - span, end)
    cpu, mem = h.device_usage("d", period, period)
    assert cpu == h.device_series("d", "cpu", *period)
    assert mem == h.device_series("d", "memory_mb", *period)
    assert len(cpu) == len(mem) > 0
    assert h.usage(period, period) == (h.series("cpu", *period),
                                       h.series("memory_mb", *period))
    # Different periods for the two: each series over its own.
    short = (end - 600, end)
    cpu, mem = h.device_usage("d", period, short, max_points=100)
    assert cpu == h.device_series("d", "cpu", *period, max_points=100)
    assert mem == h.device_series("d", "memory_mb", *short, max_points=100)
    assert mem and cpu[0][0] < short[0] <= mem[0][0]
    with pytest.raises(ValueError):
        h._series("device_samples", "device_id = ? AND ", "d", ("cpu", "rowid"), *period, 10)
    h.close()
