"""Entry point of the netbridge process."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from common.service import run_service
from services.netbridge.service import NetbridgeService


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("netbridge", NetbridgeService, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
