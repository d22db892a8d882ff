"""Entry point of the executor process."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from common.service import run_service
from services.executor.service import PEERS, ExecutorService


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("executor", ExecutorService, argv, description=__doc__, peers=PEERS)


if __name__ == "__main__":
    sys.exit(main())
