"""Entry point of the executor process."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from common.lean import keep_out

# `requests` (under the Docker SDK) imports charset_normalizer when it is installed, and
# that imports every codec module of the standard library (about 4 MB of private memory).
# The engine answers JSON; without a detector requests decodes undeclared text as UTF-8.
keep_out("charset_normalizer")
warnings.filterwarnings("ignore", "Unable to find acceptable character detection")

from common.service import run_service  # noqa: E402
from services.executor.service import PEERS, ExecutorService  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("executor", ExecutorService, argv, description=__doc__, peers=PEERS)


if __name__ == "__main__":
    sys.exit(main())
