"""The `dns` servers of a runtime's vNICs, applied to the runtime's resolver.

Two places, because the engine alone does not make them visible:

* at creation the servers go into the container's `Dns` host setting, so the engine's
  embedded resolver (127.0.0.11 on user-defined networks) forwards to them;
* after every start the runtime's `/etc/resolv.conf` is rewritten to name exactly these
  servers.  On user-defined networks the engine writes `nameserver 127.0.0.11` there and
  rebuilds the file at each start (measured on engine 20.10); a PLC asks its plant servers
  directly over its MACVLAN vNIC instead.  The live view re-applies the file
  whenever a runtime (re)starts, as it does for MACs.

Several vNICs with servers: their union, in vNIC order, without repeats (the C library
reads the first three).  No vNIC with servers: the engine's file stays as it is.  The file
is written by an exec of `sh` in the runtime (the runtime images have one), so it works
whether the agent runs on the host or in a container.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

HEADER = "# written by the orchestrator agent from the vNICs' dns servers"
# The servers arrive as positional parameters: no quoting of request data into a script.
SCRIPT = 'printf "%s\\n" "$@" > /etc/resolv.conf'


class ResolvFailed(Exception):
    pass


def servers(vnics: Iterable[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for vnic in vnics:
        for server in vnic.get("dns") or []:
            if isinstance(server, str) and server and server not in out:
                out.append(server)
    return out


def content(dns: list[str]) -> list[str]:
    """The lines of the file (no trailing newline handling: printf ends each)."""
    return [HEADER, *(f"nameserver {server}" for server in dns)]


def write(api: Any, ident: str, dns: list[str]) -> None:
    """Rewrite `/etc/resolv.conf` in the running container `ident` (blocking)."""
    exec_id = api.exec_create(ident, ["sh", "-c", SCRIPT, "sh", *content(dns)],
                              stdout=True, stderr=True)
    output = api.exec_start(exec_id)
    code = (api.exec_inspect(exec_id) or {}).get("ExitCode")
    if code != 0:
        text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
        raise ResolvFailed(f"exit code {code}: {text.strip()[:200]}")
