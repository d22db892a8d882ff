"""The period syntax of consumption queries (`cpuPeriod`, `memoryPeriod`).

Accepted forms, all ending "now" unless both ends are given:

* `"<start>,<end>"` — Unix seconds (integers or decimals);
* `"<N>h"`, `"<N>m"`, `"<N>d"` (and `"<N>s"`) — the last N hours, minutes, days, seconds;
* `"<N>"` — the last N seconds.

Anything else (empty, negative, zero-length, start after end, not text) means the last
hour: a consumption graph with a sane default beats an error in the cloud's dashboard.
"""

from __future__ import annotations

import math
import re

DEFAULT_SECONDS = 3600.0
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.ASCII)
_NUMBER = re.compile(r"\d+(?:\.\d+)?", re.ASCII)


def parse_period(text: object, now: float) -> tuple[float, float]:
    """Return (start, end) in Unix seconds for a period expression."""
    last_hour = (now - DEFAULT_SECONDS, now)
    if not isinstance(text, str):
        return last_hour
    spec = text.strip().lower()
    if "," in spec:
        parts = [p.strip() for p in spec.split(",")]
        if len(parts) != 2 or not all(_NUMBER.fullmatch(p) for p in parts):
            return last_hour
        start, end = float(parts[0]), float(parts[1])
        if start >= end:
            return last_hour
        return start, end
    match = _RELATIVE.fullmatch(spec)
    if match is None:
        return last_hour
    seconds = float(match.group(1)) * UNITS[match.group(2) or "s"]
    if seconds <= 0 or not math.isfinite(seconds):
        return last_hour
    return now - seconds, now
