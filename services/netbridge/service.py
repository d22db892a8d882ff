"""The netbridge service object: the netmon client on the bus.

Concurrency: asyncio only.  The netmon client runs as one task of the service; the
request handlers read its cache from the same loop, so no locking is needed.

Request methods (params → result):

* `host_interfaces` `{include_virtual?, detailed?}` → the `get_host_interfaces` reply body:
  `{"status": "success", "interfaces": [...], "stale": bool}` sorted by name (the
  original's virtual names left out unless `include_virtual`; `detailed`, true unless
  given false, keeps `subnet` and `gateway` and adds netmon's details), or the original's
  error text when the cache is empty.  A host with only virtual interfaces answers
  success with an empty list.  A NIC given to a runtime carries `dedicated_to` (its row
  comes from the executor's record, `common.dedicated_rules`, when the NIC is inside the
  runtime and so not on the host); an up ethernet link without IPv4 (netmon's
  `ethernet_links`) gets a row with `dedicated_only: true`.
  Stale data is served: a lost monitor connection does not make the host's NICs vanish,
  and the executor needs a subnet to re-home onto.  `"stale": true` says so, with
  `"stale_since"` (ISO time) once the cache was fresh at least once.
* `serial_devices` `{}` → the `get_serial_devices` reply body:
  `{"status": "success", "devices": [...], "count": n}`, the USB serial adapters netmon
  last reported (path, device_id and the USB facts it found), sorted by `device_id`.
* `interfaces` `{}` → `{"interfaces": [IFACE...], "stale": bool, "connected": bool}`,
  the cache as netmon described it without virtual interfaces, sorted by name.

Events: `net.discovery` on every discovery (each (re)connection to netmon), `net.change`
for every change netmon announces — both without virtual interfaces
(`common.netmon_proto.iface_is_virtual`), so the executor's network-change logic never
sees a container engine's bridges and veths.

Counters in the liveness beat: the client's under `netmon_*` (dropped lines by reason,
connects, disconnects, events, callback errors) plus `netmon_reconnects`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from datetime import UTC, datetime
from typing import Any

from common.dedicated_rules import dedicated_interfaces
from common.messages import NetChange, NetDiscovery
from common.netmon_proto import SOCKET_NAME, iface_is_virtual, is_listed_virtual
from common.service import Runtime
from services.netbridge.netmon_client import Interface, NetmonClient, host_interfaces

log = logging.getLogger(__name__)

# How often the loop looks for a lost netmon to log it (answers look themselves); the
# client's counters are copied right before each liveness beat (`before_beat`), so the
# process does not wake for them.
STATE_CHECK = 2.0
# Extra keys a `detailed` host_interfaces row carries, taken from the netmon IFACE.
DETAILED_KEYS = ("index", "operstate", "timestamp")

# The original's text (PROTOCOL "Compatibility details").
NOT_REPORTED = ("Network interface cache is empty. The netmon sidecar may not be running "
                "or has not yet discovered interfaces.")


def _utc_now() -> str:
    return datetime.now(UTC).isoformat()


def _flag(params: dict[str, Any], name: str, default: bool = False) -> bool:
    # The gateway validates types; a non-boolean that slips through counts as the default.
    value = params.get(name)
    return value if isinstance(value, bool) else default


def _physical(interfaces: Any) -> list[Interface]:
    return [i for i in interfaces if not iface_is_virtual(i)]


def _bare_row(name: str, mac: Any) -> dict[str, Any]:
    """A row for a NIC without IPv4, in the shape of the cache's rows."""
    return {"name": name, "ip_address": None, "ipv4_addresses": [], "mac_address": mac,
            "subnet": None, "gateway": None}


def _extra_rows(rows: list[dict[str, Any]], links: list[dict[str, Any]],
                dedicated: dict[str, str], include_virtual: bool) -> list[dict[str, Any]]:
    """`rows` plus the NICs the cache does not hold: up ethernet links without IPv4
    (`dedicated_only`) and NICs inside a runtime (`dedicated_to`); sorted by name."""
    by_name = {row["name"]: row for row in rows}
    for link in links:
        name = str(link["interface"])
        if name not in by_name and (include_virtual or not is_listed_virtual(name)):
            by_name[name] = {**_bare_row(name, link.get("mac_address")),
                             "dedicated_only": True}
    for name, runtime in dedicated.items():
        by_name.setdefault(name, _bare_row(name, None))["dedicated_to"] = runtime
    return [by_name[n] for n in sorted(by_name)]


def host_interfaces_reply(cache: dict[str, Interface], include_virtual: bool,
                          detailed: bool, links: list[dict[str, Any]] | None = None,
                          dedicated: dict[str, str] | None = None) -> dict[str, Any]:
    """The `get_host_interfaces` body for a cache (the original's shapes and text)."""
    if not cache:
        return {"status": "error", "error": NOT_REPORTED}
    rows = _extra_rows(host_interfaces(cache, include_virtual), links or [],
                       dedicated or {}, include_virtual)
    for row in rows:
        iface = cache.get(row["name"], {})
        if detailed:
            row["addresses"] = copy.deepcopy(iface.get("ipv4_addresses") or [])
            for key in DETAILED_KEYS:
                row[key] = iface.get(key)
        else:
            del row["subnet"], row["gateway"]
    return {"status": "success", "interfaces": rows}


class NetbridgeService:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.socket_path = runtime.config.state_dir / SOCKET_NAME
        self.client = NetmonClient(
            self.socket_path,
            on_discovery=self._on_discovery,
            on_change=self._on_change,
            backoff_max=runtime.config.reconnect_max,
        )
        self.stale_since: str | None = None
        self._was_fresh = False
        self._down_logged = False
        runtime.rpc.register("host_interfaces", self.host_interfaces)
        runtime.rpc.register("interfaces", self.interfaces)
        runtime.rpc.register("serial_devices", self.serial_devices)
        runtime.before_beat.append(self._sync_counters)

    # --- the service loop ---------------------------------------------------------------

    async def run(self) -> None:
        client_task = asyncio.create_task(self.client.run(), name="netmon-client")
        # One task for the stop flag for the whole loop (not one per wait).
        stop_task = asyncio.create_task(self.rt.stop.wait(), name="netbridge-stop")
        try:
            while not self.rt.stop.is_set():
                if client_task.done():
                    # The client loops forever by design; its end is a bug worth a restart.
                    client_task.result()
                    raise RuntimeError("netmon client stopped")
                self._track_state()
                await asyncio.wait((client_task, stop_task), timeout=STATE_CHECK,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (client_task, stop_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._sync_counters()

    def _sync_counters(self) -> None:
        counters = self.rt.counters
        for name, value in self.client.counters.items():
            counters[f"netmon_{name}"] = value
        counters["netmon_reconnects"] = max(0, self.client.counters["connects"] - 1)

    def _track_state(self) -> None:
        """Log the first loss of a fresh cache once; the client logs socket events."""
        if self.client.stale and self._was_fresh and not self._down_logged:
            self._down_logged = True
            self.stale_since = self.stale_since or _utc_now()
            log.warning("net.state stale: serving %d cached interface(s) until netmon is back",
                        len(self.client.interfaces))

    # --- netmon callbacks ---------------------------------------------------------------

    def _on_discovery(self, interfaces: list[Interface]) -> None:
        self._was_fresh = True
        self._down_logged = False
        self.stale_since = None
        interfaces = _physical(interfaces)
        names = sorted(i["interface"] for i in interfaces)
        log.info("net.state fresh: %d interface(s) from netmon: %s",
                 len(names), ", ".join(names) or "none")
        self.rt.publisher.publish(NetDiscovery(self._sorted(interfaces), _utc_now()))
        self.rt.counters["net_discovery_published"] += 1

    def _on_change(self, iface: Interface) -> None:
        if iface_is_virtual(iface):
            log.debug("virtual interface %s changed (cached, not published)",
                      iface.get("interface"))
            return
        log.info("interface %s changed: active=%s addresses=%s gateway=%s",
                 iface.get("interface"), iface.get("active", True),
                 [a.get("address") for a in iface.get("ipv4_addresses") or []],
                 iface.get("gateway"))
        self.rt.publisher.publish(NetChange(copy.deepcopy(iface)))
        self.rt.counters["net_change_published"] += 1

    # --- request handlers ---------------------------------------------------------------

    async def host_interfaces(self, params: dict[str, Any]) -> dict[str, Any]:
        include_virtual = _flag(params, "include_virtual")
        detailed = _flag(params, "detailed", default=True)
        cache = self.client.interfaces
        # The loop notes a lost netmon only every STATE_CHECK s; an answer in between
        # must not say stale without saying since when.
        self._track_state()
        stale = self.client.stale
        freshness: dict[str, Any] = {"stale": stale}
        if stale and self.stale_since is not None:
            freshness["stale_since"] = self.stale_since
        if not cache:
            log.info("host_interfaces: the cache is empty (netmon socket %s)",
                     self.socket_path)
        dedicated = await asyncio.to_thread(dedicated_interfaces, self.rt.config.state_dir)
        reply = host_interfaces_reply(cache, include_virtual, detailed,
                                      self.client.ethernet_links, dedicated)
        return {**reply, **freshness}

    async def interfaces(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"interfaces": self._sorted(_physical(self.client.interfaces.values())),
                "stale": self.client.stale,
                "connected": self.client.connected.is_set()}

    async def serial_devices(self, params: dict[str, Any]) -> dict[str, Any]:
        devices = sorted((copy.deepcopy(d) for d in self.client.serial_devices),
                         key=lambda d: str(d.get("device_id")))
        return {"status": "success", "devices": devices, "count": len(devices)}

    @staticmethod
    def _sorted(interfaces: Any) -> list[Interface]:
        # Copies: the bus encodes later and the client may replace entries meanwhile.
        return [copy.deepcopy(i) for i in sorted(interfaces, key=lambda i: i["interface"])]

    def close(self) -> None:
        pass
