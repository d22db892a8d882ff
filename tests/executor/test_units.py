"""Pure parts of the executor: names, MACs, subnet allocation, validation, parsing, state
files (including a writer killed mid-write)."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import docker.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import labels
from common.atomicfile import atomic_write_json, read_json, remove_stale_temps
from services.executor.engine import selfinfo
from services.executor.engine.liveview import parse_inspect, parse_time
from services.executor.errors import InvalidRequest, OperationFailed
from services.executor.net import ipam, names, networks
from services.executor.runtime.journal import Journal, Operation
from services.executor.runtime.validate import check_conflicts, check_request
from services.executor.runtime.vnic_store import VnicStore
from testkit.helpers import ROOT, wait_for


def vnic(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"name": "eth0", "parent_interface": "oat0",
                               "network_mode": "manual", "ip_address": "198.51.100.20",
                               "subnet": "198.51.100.0/24", "gateway": "198.51.100.1"}
    base.update(kw)
    return base


def request(*vnics: dict[str, object], name: str = "plc-1") -> dict[str, object]:
    return {"container_name": name, "vnic_configs": list(vnics), "runtime_version": "latest"}


# --- names and MACs --------------------------------------------------------------------------


def test_network_names() -> None:
    assert names.macvlan_network("eth0", "192.168.1.0/24") == "macvlan_eth0_192.168.1.0_24"
    assert names.internal_network("plc-1") == "plc-1_internal"
    assert names.is_internal_network("plc-1_internal")


@given(st.sets(st.text(alphabet="0123456789abcdef", min_size=2, max_size=2), max_size=3))
def test_generated_macs_are_local_unicast_and_fresh(prefixes: set[str]) -> None:
    taken = {f"{p}:00:00:00:00:00" for p in prefixes}
    mac = names.generate_mac(taken)
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01
    assert mac not in taken and names.normalise_mac(mac) == mac


@pytest.mark.parametrize("text,expected", [
    ("02-AA-bb-cc-dd-ee", "02:aa:bb:cc:dd:ee"), ("01:00:5e:00:00:01", None),
    ("ff:ff:ff:ff:ff:ff", None), ("00:00:00:00:00:00", None), ("02:aa:bb", None)])
def test_normalise_mac(text: str, expected: str | None) -> None:
    assert names.normalise_mac(text) == expected


# --- subnet allocation -------------------------------------------------------------------------


def test_pick_subnet_skips_overlaps_and_fills_fifty() -> None:
    used = ["172.30.0.0/28", "172.30.0.32/27", "10.0.0.0/8", "fe80::/64", "garbage"]
    assert ipam.pick_subnet("172.30.0.0/16", 28, used) == "172.30.0.16/28"
    taken: list[str] = []
    for _ in range(50):
        taken.append(ipam.pick_subnet("172.30.0.0/16", 28, taken))
    assert len(set(taken)) == 50
    nets = [ipaddress.IPv4Network(t) for t in taken]
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
    with pytest.raises(OperationFailed):
        ipam.pick_subnet("172.30.0.0/27", 28, ["172.30.0.0/27"])


def test_pick_subnet_matches_the_block_by_block_search() -> None:
    """The one-pass allocator picks what checking every block in turn would pick."""
    rng = random.Random(13)
    pool = ipaddress.IPv4Network("172.30.0.0/20")
    for _ in range(200):
        used = [str(ipaddress.IPv4Network((int(pool.network_address) + rng.randrange(4096),
                                           rng.choice((24, 26, 28, 29, 30, 32))),
                                          strict=False)) for _ in range(rng.randrange(12))]
        if rng.random() < 0.2:
            used.append("172.16.0.0/12")  # covers the whole pool
        taken = [ipaddress.IPv4Network(u) for u in used]
        expected = next((str(b) for b in pool.subnets(new_prefix=28)
                         if not any(b.overlaps(t) for t in taken)), None)
        if expected is None:
            with pytest.raises(OperationFailed):
                ipam.pick_subnet(str(pool), 28, used)
        else:
            assert ipam.pick_subnet(str(pool), 28, used) == expected


# --- validation ----------------------------------------------------------------------------------


def test_request_normalises_aliases_and_masks() -> None:
    req = check_request(request(vnic(ip_address=None, ip="198.51.100.30",
                                     subnet="255.255.255.0", network_mode="static",
                                     mac="02-AA-00-00-00-01")))
    v = req.vnics[0]
    assert v["network_mode"] == "manual" and v["ip_address"] == "198.51.100.30"
    assert v["subnet"] == v["parent_subnet"] == "198.51.100.0/24"
    assert v["parent_gateway"] == "198.51.100.1" and v["mac_address"] == "02:aa:00:00:00:01"
    assert v["network"] == "macvlan_oat0_198.51.100.0_24"
    assert req.tag == "latest"


@pytest.mark.parametrize("params,fragment", [
    (request(vnic(), name="bad name"), "not a valid container name"),
    (request(vnic(), name="__orchestrator__"), "not a valid container name"),
    (request(vnic(ip_address="203.0.113.5")), "is outside"),
    (request(vnic(ip_address="198.51.100.255")), "network or broadcast"),
    (request(vnic(gateway="203.0.113.1")), "is outside"),
    (request(vnic(parent_interface="way-too-long-name0")), "not a valid interface"),
    (request(vnic(network_mode="bridge")), "network_mode"),
    (request(vnic(network_mode="manual", ip_address=None)), "needs an ip_address"),
    (request(vnic(mac_address="01:00:5e:00:00:01")), "multicast or broadcast"),
    (request(vnic(), vnic(name="eth0", parent_interface="oat1")), "duplicate vNIC name"),
    (request(vnic(mac_address="02:00:00:00:00:01"),
             vnic(name="b", parent_interface="oat1", ip_address="198.51.100.21",
                  mac_address="02:00:00:00:00:01")), "duplicate MAC"),
    (request(vnic(), vnic(name="b", ip_address="198.51.100.21")), "second vNIC"),
    ({**request(vnic()), "runtime_version": "bad tag!"}, "image tag"),
])
def test_invalid_requests(params: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_request(params)
    assert fragment in info.value.text and info.value.text.startswith("Validation error: ")


def test_conflicts_with_other_runtimes() -> None:
    req = check_request(request(vnic(mac_address="02:00:00:00:00:09")))
    with pytest.raises(InvalidRequest, match="already used by runtime other"):
        check_conflicts(req, {"02:00:00:00:00:09": "other"}, {})
    with pytest.raises(InvalidRequest, match="already used by runtime other"):
        check_conflicts(req, {}, {("macvlan_oat0_198.51.100.0_24", "198.51.100.20"): "other"})
    check_conflicts(req, {"02:00:00:00:00:09": "plc-1"}, {})  # its own MAC is fine


# --- labels, self detection, engine parsing -----------------------------------------------------


def test_ownership_needs_both_labels() -> None:
    mine = labels.runtime("i1", "plc", ["eth0"], "op")
    assert labels.owned(mine, "i1")
    assert not labels.owned(mine, "i2")
    assert not labels.owned({"orchestrator.instance": "i1"}, "i1")
    assert not labels.owned(None, "i1")


def test_container_id_from_proc_files() -> None:
    cid = "a" * 64
    assert selfinfo.id_from_cgroup(f"12:memory:/docker/{cid}\n0::/\n") == cid
    assert selfinfo.id_from_cgroup("0::/\n4:memory:/process_api/83bc\n") is None
    line = (f"612 600 8:1 /var/lib/docker/containers/{cid}/hostname /etc/hostname rw - ext4 "
            "/dev/sda1 rw")
    assert selfinfo.id_from_mountinfo(line) == cid
    assert selfinfo.id_from_mountinfo("22 1 8:1 / / rw - ext4 /dev/sda1 rw") is None


def test_parse_inspect() -> None:
    attrs = {
        "Id": "c1", "Name": "/plc", "RestartCount": 2,
        "Config": {"Labels": labels.runtime("i1", "plc", ["eth0"], "op")},
        "State": {"Status": "running", "Running": True, "Pid": 42, "ExitCode": 0,
                  "StartedAt": "2025-01-01T00:00:00.123456789Z",
                  "Health": {"Status": "healthy"}},
        "NetworkSettings": {"Networks": {
            "plc_internal": {"IPAddress": "172.30.0.2"},
            "macvlan_oat0_198.51.100.0_24": {"IPAddress": "198.51.100.20",
                                             "MacAddress": "02:aa:00:00:00:01",
                                             "Gateway": "198.51.100.1"}}},
    }
    view = parse_inspect(attrs, "i1")
    assert view is not None and view.name == "plc" and view.internal_ip == "172.30.0.2"
    assert set(view.networks) == {"macvlan_oat0_198.51.100.0_24"}
    assert view.health == "healthy" and view.restart_count == 2
    assert view.started_at == pytest.approx(1735689600.123456)
    assert parse_inspect(attrs, "other") is None
    assert parse_time("0001-01-01T00:00:00Z") is None


# --- state files -----------------------------------------------------------------------------


def test_journal_and_vnic_store_round_trip(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.load()
    op = Operation("plc", "create", step="pulling_image", request={"vnics": []})
    journal.write("plc", journal.put(op))
    (tmp_path / "operations" / "junk.json").write_text("{not json")
    again = Journal(tmp_path)
    again.load()
    loaded = again.get("plc")
    assert loaded is not None and loaded.step == "pulling_image" and loaded.in_progress
    assert again.get("junk") is None
    store = VnicStore(tmp_path)
    store.load()
    store.write(store.set("plc", [{"name": "eth0", "mac_address": "02:00:00:00:00:01",
                                   "network": "n", "ip_address": "198.51.100.2"}]))
    other = VnicStore(tmp_path)
    other.load()
    assert other.stored_mac("plc", "eth0") == "02:00:00:00:00:01"
    assert other.ips() == {("n", "198.51.100.2"): "plc"}



def test_journal_writes_many_entries_in_one_job(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.load()
    ops = [Operation(f"plc{i}", "rehome", step="connecting") for i in range(3)]
    for op in ops:
        op.succeed("moved")
    journal.write_many([(op.device_id, journal.put(op)) for op in ops])
    journal.write_many([])  # nothing to write: no error
    again = Journal(tmp_path)
    again.load()
    assert sorted((o.device_id, o.state) for o in again.all()) == [
        ("plc0", "success"), ("plc1", "success"), ("plc2", "success")]
    assert [p.name for p in (tmp_path / "operations").iterdir() if p.name.startswith(".")] == []


WRITER = """
import sys
from pathlib import Path
from common.atomicfile import atomic_write_json
path = Path(sys.argv[1])
i = 0
while True:
    i += 1
    atomic_write_json(path, {"n": i, "pad": "x" * 20000})
"""


def test_atomic_write_survives_kill_9_mid_write(tmp_path: Path) -> None:
    for round_ in range(5):
        target = tmp_path / f"state{round_}.json"
        atomic_write_json(target, {"n": 0, "pad": ""})
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        # Kill it once it is well into its write loop.
        wait_for(lambda t=target: (read_json(t) or {}).get("n", 0) >= 20, 20, interval=0.005,
                 what="the writer looping")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        data = read_json(target)
        assert isinstance(data, dict) and isinstance(data["n"], int)
        assert json.loads(target.read_text()) == data
        assert data["n"] >= 20
    leftovers = [p for p in tmp_path.iterdir() if not p.name.startswith("state")]
    assert all(p.name.endswith(".tmp") for p in leftovers)
    for round_ in range(5):
        remove_stale_temps(tmp_path / f"state{round_}.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"state{i}.json" for i in range(5)]


class ChurningEngine:
    """An engine whose allocator still holds `held` blocks that no listed network has
    (just released under churn): creating a network on one is refused as overlapping."""

    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.listed: list[dict] = []
        self.tried: list[str] = []

    def networks(self) -> list[dict]:
        return list(self.listed)

    def create_network(self, name: str, ipam: dict, **_: object) -> dict:
        subnet = ipam["Config"][0]["Subnet"]
        self.tried.append(subnet)
        if subnet in self.held:
            raise docker.errors.APIError("conflict", explanation="Pool overlaps with other "
                                         "one on this address space")
        self.listed.append({"Name": name, "Id": f"id-{name}",
                            "IPAM": {"Config": [{"Subnet": subnet}]}})
        return {"Id": f"id-{name}"}


def test_internal_network_moves_past_blocks_the_engine_refuses() -> None:
    engine = ChurningEngine({"198.51.100.0/28", "198.51.100.16/28", "198.51.100.32/28"})
    ref = networks.create_internal(engine, "plc1_internal", "198.51.100.0/24", 28, "inst",
                                   {"orchestrator.instance": "inst"})
    assert ref.created and ref.name == "plc1_internal"
    assert engine.tried == ["198.51.100.0/28", "198.51.100.16/28", "198.51.100.32/28",
                            "198.51.100.48/28"]


def test_internal_network_gives_up_after_bounded_attempts() -> None:
    engine = ChurningEngine({f"198.51.100.{16 * i}/28" for i in range(16)})
    with pytest.raises(OperationFailed, match="no free subnet after 8 attempts"):
        networks.create_internal(engine, "plc1_internal", "198.51.100.0/24", 28, "inst", {})
    assert len(engine.tried) == 8 and len(set(engine.tried)) == 8
