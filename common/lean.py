"""Keeping optional modules that a process never uses out of it.

Some libraries import optional modules eagerly when they are installed: asyncio and
http.client load `ssl` (about 4 MB of private memory, mostly libcrypto relocations), and
python-socketio loads `requests` for a synchronous client.  A process that speaks no TLS,
or uses only the asyncio client, marks them absent before anything imports them, and the
libraries take their "not installed" paths.  On a small device the idle footprint of
four long-lived processes is what this saves.

Call `keep_out()` at the very top of a process's entry module, before other imports.
A module that is already imported stays as it is.
"""

from __future__ import annotations

import sys


def keep_out(*names: str) -> None:
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]
