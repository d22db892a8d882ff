"""Entry point of the gateway process."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from common.service import run_service
from services.gateway.service import GatewayService


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("gateway", GatewayService, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
