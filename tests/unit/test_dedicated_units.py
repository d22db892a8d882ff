"""Dedicated NICs without moving anything: the rules (gateway contract and executor),
the record, the links scan over a made-up sysfs, the netmon line and the bridge's rows."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from common import netmon_proto
from common.dedicated_rules import FILE_NAME, dedicated_interfaces
from services.executor.errors import InvalidRequest
from services.executor.runtime.dedicated import DedicatedStore, record
from services.executor.runtime.validate import check_request
from services.gateway import contracts
from services.gateway.contracts import ContractError
from services.netbridge.service import host_interfaces_reply
from services.netmon.links import scan


def vnic(**over: Any) -> dict[str, Any]:
    base = {"name": "fieldbus", "parent_interface": "enp3s0", "network_mode": "static",
            "ip": "192.0.2.10/24", "gateway": "192.0.2.1", "dedicated_interface": "enp3s0"}
    base.update(over)
    return base


def create(*vnics: dict[str, Any]) -> dict[str, Any]:
    return {"container_name": "plc1", "vnic_configs": list(vnics)}


def both(payload: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """What the gateway and the executor make of one create."""
    gateway = contracts.validate("create_new_runtime", copy.deepcopy(payload))
    return gateway.params["vnic_configs"], check_request(copy.deepcopy(payload))


def test_a_dedicated_vnic_is_accepted_by_both_and_split_off_by_the_executor() -> None:
    gateway, req = both(create(vnic(), {"name": "lan", "parent_interface": "eth0",
                                        "network_mode": "dhcp"}))
    assert gateway[0]["dedicated_interface"] == "enp3s0"
    assert gateway[0]["subnet"] == "192.0.2.0/24" and gateway[0]["ip_address"] == "192.0.2.10"
    assert "dedicated_interface" not in gateway[1]  # only present when given
    assert [v["name"] for v in req.vnics] == ["lan"]
    assert [v["name"] for v in req.dedicated] == ["fieldbus"]
    assert req.dedicated[0]["network"] is None
    item = record(req.dedicated[0])
    assert item == {"vnic": "fieldbus", "interface": "enp3s0", "network_mode": "manual",
                    "ip_address": "192.0.2.10", "prefixlen": 24, "subnet": "192.0.2.0/24",
                    "gateway": "192.0.2.1", "host": None, "released": False}


@pytest.mark.parametrize("blank", ["", "  ", None])
def test_a_blank_dedicated_interface_means_an_ordinary_vnic(blank: Any) -> None:
    gateway, req = both(create(vnic(dedicated_interface=blank)))
    assert "dedicated_interface" not in gateway[0]
    assert req.dedicated == [] and len(req.vnics) == 1


def test_dhcp_dedicated_vnic_needs_no_address() -> None:
    _, req = both(create(vnic(network_mode="dhcp", ip=None, gateway=None)))
    assert record(req.dedicated[0])["ip_address"] is None


@pytest.mark.parametrize(("vnics", "text"), [
    ([vnic(dedicated_interface="lo")], "loopback or virtual"),
    ([vnic(dedicated_interface="docker0")], "loopback or virtual"),
    ([vnic(dedicated_interface="veth1234")], "loopback or virtual"),
    ([vnic(dedicated_interface="br-0a1b")], "loopback or virtual"),
    ([vnic(dedicated_interface="bad name")], "not a valid interface name"),
    ([vnic(dedicated_interface="x" * 16)], "not a valid interface name"),
    ([vnic(ip="192.0.2.10")], "needs its subnet"),
    ([vnic(), vnic(name="second", ip="192.0.2.11/24")], "dedicated twice"),
    ([vnic(), {"name": "m", "parent_interface": "enp3s0", "network_mode": "dhcp"}],
     "cannot also be a MACVLAN parent"),
])
def test_bad_dedicated_vnics_are_refused_by_both(vnics: list[dict[str, Any]],
                                                 text: str) -> None:
    with pytest.raises(ContractError) as gateway:
        contracts.validate("create_new_runtime", create(*copy.deepcopy(vnics)))
    assert text in str(gateway.value)
    with pytest.raises(InvalidRequest) as executor:
        check_request(create(*copy.deepcopy(vnics)))
    assert text in executor.value.text


def test_the_record_and_its_reader(tmp_path: Path) -> None:
    store = DedicatedStore(tmp_path)
    store.write(store.set("plc1", [{"interface": "enp3s0", "vnic": "fb"}]))
    assert store.owner("enp3s0") == "plc1" and store.owner("enp4s0") is None
    store.write(store.update("plc1", "enp3s0", released=True) or {})
    assert dedicated_interfaces(tmp_path) == {"enp3s0": "plc1"}
    assert json.loads((tmp_path / FILE_NAME).read_text())["plc1"][0]["released"] is True
    store.write(store.drop("plc1", "enp3s0"))
    assert dedicated_interfaces(tmp_path) == {} and store.devices() == []
    (tmp_path / FILE_NAME).write_text("{torn")
    assert dedicated_interfaces(tmp_path) == {}  # damaged: logged, nothing listed
    assert dedicated_interfaces(tmp_path / "absent") == {}


def fake_link(root: Path, name: str, *, kind: str = "1", flags: str = "0x1003",
              carrier: str = "1", extra: str | None = None) -> None:
    base = root / name
    base.mkdir()
    (base / "type").write_text(kind + "\n")
    (base / "flags").write_text(flags + "\n")
    (base / "carrier").write_text(carrier + "\n")
    (base / "address").write_text(f"02:00:00:00:00:{len(name):02x}\n")
    if extra:
        (base / extra).mkdir()


def test_links_scan_lists_up_plain_ethernet_only(tmp_path: Path) -> None:
    fake_link(tmp_path, "enp3s0")
    fake_link(tmp_path, "oat1")
    fake_link(tmp_path, "enp4s0", flags="0x1002")  # down
    fake_link(tmp_path, "enp5s0", carrier="0")  # no cable
    fake_link(tmp_path, "wlan0", extra="wireless")
    fake_link(tmp_path, "lanbr", extra="bridge")
    fake_link(tmp_path, "lo", kind="772")
    fake_link(tmp_path, "docker0")
    fake_link(tmp_path, "veth9a")
    fake_link(tmp_path, "can0", kind="280")
    assert [lk["interface"] for lk in scan(tmp_path)] == ["enp3s0", "oat1"]
    assert scan(tmp_path)[0]["mac_address"] == "02:00:00:00:00:06"
    assert scan(tmp_path / "absent") == []


def test_links_line_round_trip_and_bad_shapes() -> None:
    links = [{"interface": "enp3s0", "mac_address": "02:00:00:00:00:06"}]
    line = netmon_proto.links_line(links, "2026-01-01T00:00:00+00:00")
    assert netmon_proto.parse_line(line) == (netmon_proto.LINKS, links)
    for data in ({"links": "x"}, {"links": [{"name": "x"}]}, []):
        bad = json.dumps({"type": netmon_proto.LINKS, "data": data}).encode()
        with pytest.raises(netmon_proto.BadLine):
            netmon_proto.parse_line(bad)


def iface(name: str, ip: str) -> dict[str, Any]:
    return {"interface": name, "index": 2, "operstate": "UP", "mac_address": "02:aa",
            "ipv4_addresses": [{"address": ip, "prefixlen": 24, "subnet": "192.0.2.0/24",
                                "network_address": "192.0.2.0"}],
            "gateway": "192.0.2.1", "timestamp": "t"}


def test_host_interface_rows_gain_dedicated_only_and_dedicated_to() -> None:
    cache = {"eth0": iface("eth0", "192.0.2.5")}
    plain = host_interfaces_reply(cache, False, True)
    links = [{"interface": "eth0", "mac_address": "02:aa"},
             {"interface": "enp3s0", "mac_address": "02:bb"},
             {"interface": "veth1", "mac_address": "02:cc"}]
    reply = host_interfaces_reply(cache, False, True, links, {"enp4s0": "plc1"})
    rows = {r["name"]: r for r in reply["interfaces"]}
    assert [r["name"] for r in reply["interfaces"]] == ["enp3s0", "enp4s0", "eth0"]
    assert rows["eth0"] == plain["interfaces"][0]  # rows with IPv4 unchanged
    assert rows["enp3s0"]["dedicated_only"] is True
    assert rows["enp3s0"]["mac_address"] == "02:bb" and rows["enp3s0"]["ip_address"] is None
    assert rows["enp4s0"]["dedicated_to"] == "plc1" and "dedicated_only" not in rows["enp4s0"]
    brief = host_interfaces_reply(cache, False, False, links, {"enp3s0": "plc2"})
    rows = {r["name"]: r for r in brief["interfaces"]}
    assert rows["enp3s0"]["dedicated_to"] == "plc2" and rows["enp3s0"]["dedicated_only"]
    assert "subnet" not in rows["enp3s0"]
