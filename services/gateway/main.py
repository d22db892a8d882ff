"""Entry point of the gateway process."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from common.lean import keep_out

# python-socketio's synchronous client (and its `requests`) is never used here: the
# gateway runs the asyncio client over aiohttp.  About 6 MB of idle memory.
keep_out("requests")

from common.service import run_service  # noqa: E402
from services.gateway.service import PEERS, GatewayService  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("gateway", GatewayService, argv, description=__doc__, peers=PEERS)


if __name__ == "__main__":
    sys.exit(main())
