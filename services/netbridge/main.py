"""Entry point of the netbridge process."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from common.lean import keep_out

# This process speaks no TLS (the engine and the netmon socket are local), so `ssl`,
# which asyncio would load anyway, stays out: about 4 MB of idle memory.
keep_out("ssl")

from common.service import run_service  # noqa: E402
from services.netbridge.service import NetbridgeService  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("netbridge", NetbridgeService, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
