"""Entry point of the metrics process."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from common.service import run_service
from services.metrics.service import MetricsService


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("metrics", MetricsService, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
