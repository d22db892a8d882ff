"""A WiFi LAN for the wireless vNIC tests: a `DhcpLan` laid out as a station's network
(router, LAN client, the station's own address on the parent), and what the tests look
at on the host (the parent's proxy entries, the LAN's neighbours, the forwarding rules).

All looks are in the host's network namespace, where the executor puts a wireless
link's host side wherever it runs (on the host, or in the agent container).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from services.executor.net import wifi
from testkit.movinglan import host
from tests.dhcp.lan import DhcpLan, sh

CLIENT = -2  # the LAN client's address: the last host of the block


def wifi_lan(lan: DhcpLan, block: str, station: bool = True) -> None:
    """The LAN side: router .1 and a client at the top of `block`; the host (the WiFi
    interface) .2, as a station's own address would be (`station=False`: the caller
    gives it)."""
    lan.renumber(block)
    sh("ip", "-n", lan.ns, "addr", "add", f"{host(block, CLIENT)}/27", "dev", lan.peer)
    if station:
        sh("ip", "addr", "add", f"{host(block, 2)}/27", "dev", lan.parent)


def parent_mac(lan: DhcpLan) -> str:
    return Path(f"/sys/class/net/{lan.parent}/address").read_text().strip().lower()


def lan_neighbour(lan: DhcpLan, ip: str) -> str | None:
    rows = json.loads(sh("ip", "-n", lan.ns, "-j", "neigh", "show", ip))
    return next((str(r["lladdr"]).lower() for r in rows if r.get("lladdr")), None)


def proxies(lan: DhcpLan) -> str:
    return sh("ip", "neigh", "show", "proxy", "dev", lan.parent)


def forward_rules(name: str) -> list[str]:
    out = subprocess.run(["iptables", "-w", "5", "-S", wifi.RULE_CHAIN], capture_output=True,
                         text=True, check=False, timeout=20).stdout
    return [line for line in out.splitlines() if f" {name} " in f"{line} "]
