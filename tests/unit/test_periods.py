"""Period syntax of consumption queries."""

from __future__ import annotations

import pytest

from services.metrics.periods import parse_period

NOW = 1_700_000_000.0
LAST_HOUR = (NOW - 3600, NOW)


@pytest.mark.parametrize(("text", "expected"), [
    ("1h", (NOW - 3600, NOW)),
    ("24h", (NOW - 86400, NOW)),
    ("30m", (NOW - 1800, NOW)),
    ("2d", (NOW - 172800, NOW)),
    ("90s", (NOW - 90, NOW)),
    ("600", (NOW - 600, NOW)),
    (" 1H ", (NOW - 3600, NOW)),
    ("1.5h", (NOW - 5400, NOW)),
    ("1699990000,1699999000", (1699990000.0, 1699999000.0)),
    ("1699990000 , 1699999000", (1699990000.0, 1699999000.0)),
])
def test_valid_periods(text: str, expected: tuple[float, float]) -> None:
    assert parse_period(text, NOW) == expected


@pytest.mark.parametrize("text", [
    "", "h", "0h", "0", "-5m", "1w", "abc", "1h30m", "1,2,3", "5,", ",5", "20,10", "10,10",
    "1e9", "nan", "inf", None, 3600, ["1h"], "\uff12h",  # a full-width digit two
])
def test_unparsable_means_last_hour(text: object) -> None:
    assert parse_period(text, NOW) == LAST_HOUR
