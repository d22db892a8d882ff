"""Entry point of the gateway process."""

from __future__ import annotations

import sys
from collections.abc import Sequence

# python-socketio loads `requests` for its synchronous client, which the gateway never
# uses (it runs the asyncio client over aiohttp).  Marking it absent before the import
# keeps it out of the process — about 6 MB of idle memory on a small device; engineio
# treats it as not installed.
sys.modules.setdefault("requests", None)  # type: ignore[arg-type]

from common.service import run_service  # noqa: E402
from services.gateway.service import GatewayService  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("gateway", GatewayService, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
