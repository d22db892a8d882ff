"""Hypothesis strategies for cloud command payloads, driven by the contract table.

* ``valid_payload(topic)`` — payloads every contract must accept: the README's and the
  current cloud's spellings, aliases, optional fields present or not, documentation
  subnets only.
* ``mutated_payload(topic)`` — a valid payload with one to three schema-aware mutations:
  a field dropped, a field's type swapped, garbage injected (huge, deep, control
  characters, out-of-range numbers), a vNIC or a nested object broken, or the payload
  replaced by something that is not an object at all.

Both are shared with the end-to-end fuzz test, which sends the same payloads through a
real cloud link.
"""

from __future__ import annotations

import base64
import ipaddress
import string
from typing import Any

from hypothesis import strategies as st

from services.gateway.contracts import CONTRACTS, VNIC
from services.gateway.schema import Kind

DOC_NETS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
TEST_PARENTS = ("oat0", "oat1", "oat2", "oat3")

container_names = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,53}", fullmatch=True)
correlation_ids = st.one_of(
    st.integers(min_value=0, max_value=2**53),
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
)
requested_ats = st.datetimes().map(lambda d: d.isoformat()) | st.datetimes().map(
    lambda d: d.replace(microsecond=0).isoformat() + "Z"
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _maybe(draw: st.DrawFn, payload: dict[str, Any], key: str, strategy: st.SearchStrategy) -> None:
    if draw(st.booleans()):
        payload[key] = draw(strategy)


@st.composite
def common_fields(draw: st.DrawFn, topic: str) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    _maybe(draw, payload, "correlation_id", correlation_ids)
    _maybe(draw, payload, "action", st.just(topic))
    _maybe(draw, payload, "requested_at", requested_ats)
    return payload


@st.composite
def vnic_list(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One to four vNICs that never share a name, MAC, IP or MACVLAN network."""
    placements = draw(
        st.lists(
            st.tuples(st.sampled_from(TEST_PARENTS), st.sampled_from(DOC_NETS)),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    parents = [parent for parent, _ in placements]
    vnics = []
    for i, (parent, net_text) in enumerate(placements):
        # A parent carrying two vNICs needs their subnets spelled out, or both would land
        # on the one network the agent detects for it.
        shared_parent = parents.count(parent) > 1
        vnics.append(draw(_vnic(i, parent, ipaddress.IPv4Network(net_text), shared_parent)))
    return vnics


@st.composite
def _vnic(
    draw: st.DrawFn, i: int, parent: str, net: ipaddress.IPv4Network, must_name_net: bool
) -> dict[str, Any]:
    ip = str(net.network_address + 10 + i)
    gw = str(net.network_address + 1)
    mac = (
        "02:" + ":".join(f"{b:02x}" for b in draw(st.binary(min_size=4, max_size=4))) + f":{i:02x}"
    )
    style = draw(st.sampled_from(["readme_dhcp", "readme_manual", "cloud_static", "cloud_dhcp"]))
    vnic: dict[str, Any] = {"name": f"vnic{i}", "parent_interface": parent}
    if style == "readme_dhcp":
        vnic["network_mode"] = draw(st.sampled_from(["dhcp", "DHCP"]))
        if must_name_net or draw(st.booleans()):
            vnic["parent_subnet"] = str(net)
            _maybe(draw, vnic, "parent_gateway", st.just(gw))
        _maybe(
            draw, vnic, "mac_address", st.sampled_from([mac, mac.upper(), mac.replace(":", "-")])
        )
    elif style == "readme_manual":
        vnic["network_mode"] = "manual"
        vnic["ip_address"] = ip
        vnic["subnet"] = draw(st.sampled_from(["255.255.255.0", str(net)]))
        vnic["gateway"] = gw
        if must_name_net or draw(st.booleans()):
            vnic["parent_subnet"] = str(net)
            vnic["parent_gateway"] = gw
        _maybe(draw, vnic, "mac_address", st.just(mac))
    elif style == "cloud_static":
        vnic["network_mode"] = draw(st.sampled_from(["static", "manual"]))
        vnic["ip"] = ip
        vnic["subnet"] = str(net)
        vnic["gateway"] = gw
        _maybe(draw, vnic, "mac", st.just(mac))
    else:
        vnic["network_mode"] = "dhcp"
        if must_name_net or draw(st.booleans()):
            vnic["subnet"] = str(net)
            vnic["gateway"] = gw
        _maybe(draw, vnic, "mac", st.just(mac))
    _maybe(
        draw, vnic, "dns", st.lists(st.sampled_from(["192.0.2.53", "198.51.100.53"]), max_size=2)
    )
    return vnic


_header_names = st.text(
    alphabet=string.ascii_letters + string.digits + "-", min_size=1, max_size=20
)
_header_values = st.text(
    alphabet=string.printable.replace("\r", "")
    .replace("\n", "")
    .replace("\x0b", "")
    .replace("\x0c", ""),
    max_size=40,
)
_api_paths = st.sampled_from(
    ["/api/ping", "api/status", "/api/start-plc", "/api/runtime-logs?level=info&n=20", "/"]
)


@st.composite
def _files(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in draw(
        st.lists(st.sampled_from(["file", "program", "extra"]), unique=True, max_size=2)
    ):
        entry = {
            "filename": draw(st.sampled_from(["program.zip", "main.st", "a b.txt"])),
            "content_base64": base64.b64encode(draw(st.binary(max_size=64))).decode(),
        }
        _maybe(draw, entry, "content_type", st.sampled_from(["application/zip", "text/plain"]))
        out[name] = entry
    return out


@st.composite
def _topic_fields(draw: st.DrawFn, topic: str) -> dict[str, Any]:
    p: dict[str, Any] = {}
    if topic == "create_new_runtime":
        p["container_name"] = draw(container_names)
        p["vnic_configs"] = draw(vnic_list())
        _maybe(draw, p, "runtime_version", st.sampled_from(["latest", "v4.0.1", "4.0", ""]))
    elif topic in ("delete_orchestrator", "get_serial_devices"):
        pass
    elif topic == "get_host_interfaces":
        _maybe(draw, p, "include_virtual", st.booleans())
        _maybe(draw, p, "detailed", st.booleans())
    elif topic == "get_consumption_orchestrator":
        p["cpuPeriod"] = draw(st.sampled_from(["1h", "30m", "2d", "3600", "1760000000,1760003600"]))
        p["memoryPeriod"] = draw(st.sampled_from(["1h", "garbage", ""]))
    else:
        p["device_id"] = draw(container_names)
        if topic == "get_device_status" and draw(st.booleans()):
            p["device_id"] = "__orchestrator__"
        if topic == "get_consumption_device":
            p["cpuPeriod"] = draw(st.sampled_from(["1h", "7d"]))
            p["memoryPeriod"] = draw(st.sampled_from(["1h", "15m"]))
        if topic == "run_command":
            p["method"] = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "get", "PATCH"]))
            p["api"] = draw(_api_paths)
            _maybe(draw, p, "port", st.integers(min_value=1, max_value=65535))
            _maybe(draw, p, "headers", st.dictionaries(_header_names, _header_values, max_size=4))
            _maybe(
                draw, p, "params", st.dictionaries(st.text(max_size=10), json_scalars, max_size=4)
            )
            _maybe(draw, p, "data", json_values)
            _maybe(draw, p, "files", _files())
    return p


@st.composite
def valid_payload(draw: st.DrawFn, topic: str) -> dict[str, Any]:
    payload = draw(common_fields(topic))
    payload.update(draw(_topic_fields(topic)))
    return payload


# --- mutations ----------------------------------------------------------------------

_HUGE_TEXT = "x" * 200_000
_GARBAGE = [
    "",
    " ",
    "../../etc/passwd",
    "http://203.0.113.9/api",
    "//198.51.100.1/x",
    "a\x00b",
    "line\r\nInjected: 1",
    "é" * 300,
    _HUGE_TEXT,
    2**70,
    -(2**70),
    float("nan"),
    float("inf"),
    -0.0,
    True,
    False,
    None,
    [],
    {},
    [None] * 100_000,
    {"k": "v"},
    "255.255.255.255",
    "ff:ff:ff:ff:ff:ff",
    "0.0.0.0/0",
]


def _deep(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


garbage_values = st.one_of(
    st.sampled_from(_GARBAGE),
    json_values,
    st.builds(_deep, st.integers(min_value=30, max_value=5_000)),
)

_WRONG_FOR: dict[Kind, list[Any]] = {
    Kind.NUMBER: ["12", True, None, [], {}],
    Kind.STRING: [1, 1.5, True, [], {}],
    Kind.NONEMPTY_STRING: ["", "   ", 0, False, []],
    Kind.BOOLEAN: [0, 1, "true", [], None],
    Kind.LIST: ["a", 3, {}, True],
    Kind.DATETIME: ["yesterday", 1760000000, "", "2025-13-40T99:00:00"],
    Kind.OBJECT: ["a", 3, [], True],
    Kind.ANY: [float("nan"), _deep(100), 2**70],
}


def _field_kinds(topic: str) -> dict[str, Kind]:
    return {f.name: f.kind for f in CONTRACTS[topic].fields}


_VNIC_KINDS = {f.name: f.kind for f in VNIC.fields}


@st.composite
def _mutate(draw: st.DrawFn, topic: str, payload: dict[str, Any]) -> Any:
    kinds = _field_kinds(topic)
    op = draw(st.sampled_from(["drop", "swap", "garbage", "extra", "nested", "replace"]))
    if op == "replace":
        return draw(garbage_values.filter(lambda v: not isinstance(v, dict)))
    out = dict(payload)
    if op == "drop" and out:
        del out[draw(st.sampled_from(sorted(out)))]
    elif op == "swap":
        name = draw(st.sampled_from(sorted(kinds)))
        out[name] = draw(st.sampled_from(_WRONG_FOR[kinds[name]]))
    elif op == "garbage":
        out[draw(st.sampled_from(sorted(kinds)))] = draw(garbage_values)
    elif op == "extra":
        out[draw(st.text(min_size=1, max_size=12))] = draw(garbage_values)
    elif op == "nested":
        out = draw(_mutate_nested(out))
    return out


@st.composite
def _mutate_nested(draw: st.DrawFn, payload: dict[str, Any]) -> dict[str, Any]:
    vnics = payload.get("vnic_configs")
    if isinstance(vnics, list) and vnics and all(isinstance(x, dict) for x in vnics):
        vnics = [dict(x) for x in vnics]
        i = draw(st.integers(min_value=0, max_value=len(vnics) - 1))
        name = draw(st.sampled_from(sorted({*_VNIC_KINDS, "ip", "mac"})))
        how = draw(st.sampled_from(["drop", "swap", "garbage", "duplicate"]))
        if how == "drop":
            vnics[i].pop(name, None)
        elif how == "swap":
            vnics[i][name] = draw(st.sampled_from(_WRONG_FOR[_VNIC_KINDS.get(name, Kind.STRING)]))
        elif how == "garbage":
            vnics[i][name] = draw(garbage_values)
        else:
            vnics.append(dict(vnics[i]))
        return {**payload, "vnic_configs": vnics}
    for key in ("headers", "params", "files"):
        if isinstance(payload.get(key), dict):
            inner = dict(payload[key])
            inner[draw(st.text(max_size=300))] = draw(garbage_values)
            return {**payload, key: inner}
    return payload


@st.composite
def mutated_payload(draw: st.DrawFn, topic: str) -> Any:
    payload: Any = draw(valid_payload(topic))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if not isinstance(payload, dict):
            break
        payload = draw(_mutate(topic, payload))
    return payload
