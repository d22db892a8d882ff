"""The live view takes a moved network's endpoints from one inspection of the network
(re-homing) and shows them as an inspection of each container would."""

from __future__ import annotations

from typing import Any

from common import labels
from services.executor.engine.liveview import LiveView, parse_inspect

INSTANCE = "inst1"
OLD, NEW = "macvlan_eth0_198.51.100.0_27", "macvlan_eth0_198.51.100.32_27"


def inspected_container(name: str, ident: str) -> dict[str, Any]:
    return {
        "Id": ident, "Name": f"/{name}", "RestartCount": 0,
        "Config": {"Labels": {labels.MANAGED: "true", labels.INSTANCE: INSTANCE}},
        "State": {"Status": "running", "Running": True, "Pid": 4242},
        "NetworkSettings": {"Networks": {
            f"{name}_internal": {"IPAddress": "172.30.0.2", "Gateway": "172.30.0.1"},
            OLD: {"IPAddress": "198.51.100.5", "MacAddress": "02:0d:00:00:00:01",
                  "Gateway": "198.51.100.1"},
        }},
    }


def network(gateway: str | None) -> dict[str, Any]:
    config = {"Subnet": "198.51.100.32/27", **({"Gateway": gateway} if gateway else {})}
    return {"Name": NEW, "IPAM": {"Config": [config]}, "Containers": {
        "c1": {"Name": "plc1", "MacAddress": "02:42:c6:33:64:24",
               "IPv4Address": "198.51.100.36/27"},
        "someone-else": {"Name": "not-ours", "MacAddress": "02:42:c6:33:64:25",
                         "IPv4Address": "198.51.100.37/27"},
    }}


def view_with(name: str, ident: str) -> LiveView:
    live = LiveView(None, INSTANCE)  # type: ignore[arg-type]  # no engine call is made
    view = parse_inspect(inspected_container(name, ident), INSTANCE)
    assert view is not None
    live._apply(ident, view)
    return live


def test_endpoints_taken_from_the_network_as_a_container_inspection_shows_them() -> None:
    live = view_with("plc1", "c1")
    seen: list[tuple[Any, Any]] = []
    live.hooks.append(lambda old, new: seen.append((old, new)))
    assert live.take_endpoints(NEW, network("198.51.100.33"), [OLD]) == {"plc1"}
    view = live.get("plc1")
    assert view is not None and view.pid == 4242 and view.internal_ip == "172.30.0.2"
    assert view.networks == {NEW: {"ip_address": "198.51.100.36",
                                   "mac_address": "02:42:c6:33:64:24",
                                   "gateway": "198.51.100.33"}}
    assert len(seen) == 1 and seen[0][1] is view  # the hooks saw the change


def test_without_a_configured_gateway_nothing_is_taken() -> None:
    live = view_with("plc1", "c1")
    before = live.get("plc1")
    assert live.take_endpoints(NEW, network(None), [OLD]) == set()
    assert live.get("plc1") is before
