"""The gateway's pure pieces: backoff, JSON fallback, identity, addresses (the replay cache:
test_replay.py)."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest

from devcloud import agentcerts, pki
from services.gateway import jsoncodec
from services.gateway.link import Backoff
from services.gateway.router import ROUTES, ip_addresses
from services.gateway.tls import CredentialsError, client_context, load_identity

# --- backoff ------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_to_the_cap_with_jitter() -> None:
    top = Backoff(cap=5.0, rng=lambda: 0.0)
    assert [top.next() for _ in range(6)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    low = Backoff(cap=5.0, rng=lambda: 1.0)
    assert [round(low.next(), 3) for _ in range(4)] == [0.8, 1.6, 3.2, 4.0]
    top.reset()
    assert top.next() == 1.0
    assert Backoff(cap=0.3, rng=lambda: 0.0).next() == 0.3
    # Many failures never overflow.
    many = Backoff(cap=5.0, rng=lambda: 0.5)
    for _ in range(5000):
        delay = many.next()
    assert 4.0 <= delay <= 5.0


# --- JSON decoding fallback ------------------------------------------------------------


def test_jsoncodec_keeps_the_event_name_of_what_it_cannot_decode() -> None:
    assert jsoncodec.loads('["get_device_status",{"device_id":"x"}]') == [
        "get_device_status", {"device_id": "x"}]
    big = '["get_device_status",{"n":' + "9" * 150 + "}]"
    event, payload = jsoncodec.loads(big)
    assert event == "get_device_status"
    assert isinstance(payload, jsoncodec.Undecodable)
    deep = '["run_command",' + "[" * 100_000 + "]" * 100_000 + "]"
    event, payload = jsoncodec.loads(deep)
    assert event == "run_command" and "nested too deeply" in payload.reason
    huge = '["run_command",{"data":"' + "x" * jsoncodec.MAX_PACKET_CHARS + '"}]'
    event, payload = jsoncodec.loads(huge)
    assert event == "run_command" and "larger than" in payload.reason
    # Not an event array: the library's error stands.
    with pytest.raises(ValueError):
        jsoncodec.loads('{"sid": ' + "9" * 150 + "}")
    assert jsoncodec.dumps({"a": 1}) == json.dumps({"a": 1})


# --- identity and context -------------------------------------------------------------


def test_agent_id_is_the_certificate_cn_and_the_context_is_strict(tmp_path: Path) -> None:
    ca = pki.make_ca(tmp_path / "ca")
    agentcerts.issue_client_cert(ca, "07048933").write(tmp_path / "mtls", "client")
    identity = load_identity(tmp_path / "mtls")
    assert identity.agent_id == "07048933"
    assert identity.validity_problem() is None
    ctx = client_context(identity, tmp_path / "ca" / "ca.crt")
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    # System trust stays on next to the extra CA.
    assert len(ctx.get_ca_certs()) >= 1
    plain = client_context(identity, None)
    assert plain.verify_mode == ssl.CERT_REQUIRED and plain.check_hostname


def test_credential_problems_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError) as missing:
        load_identity(tmp_path)
    assert missing.value.path == tmp_path / "client.crt"
    assert "ORCH_MTLS_DIR" in str(missing.value)
    (tmp_path / "client.crt").write_text("garbage")
    with pytest.raises(CredentialsError, match="client key not found"):
        load_identity(tmp_path)
    (tmp_path / "client.key").write_text("garbage")
    (tmp_path / "client.key").chmod(0o600)
    with pytest.raises(CredentialsError, match="not a PEM certificate"):
        load_identity(tmp_path)
    ca = pki.make_ca(None)
    agentcerts.issue_client_cert(ca, "12345678").write(tmp_path, "client")
    identity = load_identity(tmp_path)
    with pytest.raises(CredentialsError, match="extra CA file not found"):
        client_context(identity, tmp_path / "nope.crt")


# --- routes ------------------------------------------------------------------------------


def test_route_table_follows_the_bus_document() -> None:
    table = {topic: (r.process, r.method) for topic, r in ROUTES.items()}
    assert table == {
        "create_new_runtime": ("executor", "create_runtime"),
        "delete_device": ("executor", "delete_device"),
        "start_device": ("executor", "start_device"),
        "stop_device": ("executor", "stop_device"),
        "restart_device": ("executor", "restart_device"),
        "get_device_status": ("executor", "device_status"),
        "run_command": ("executor", "run_command"),
        "get_consumption_device": ("metrics", "consumption_device"),
        "get_consumption_orchestrator": ("metrics", "consumption_orchestrator"),
        "get_host_interfaces": ("netbridge", "host_interfaces"),
        "get_serial_devices": ("netbridge", "serial_devices"),
        "delete_orchestrator": ("executor", "delete_orchestrator"),
    }
    reads = {t for t, r in ROUTES.items() if not r.mutating}
    assert reads == {"get_device_status", "get_consumption_device",
                     "get_consumption_orchestrator", "get_host_interfaces",
                     "get_serial_devices"}


def test_ip_addresses_from_interface_records() -> None:
    assert ip_addresses(None) == []
    assert ip_addresses([{"interface": "eth0"}, "junk", {"ipv4_addresses": []}]) == []
    records = [{"interface": "eth1", "ipv4_addresses": [{"address": "192.0.2.5"}, "x", {}]},
               {"interface": "eth0", "ipv4_addresses": ["198.51.100.2"]}]
    assert ip_addresses(records) == [{"interface": "eth0", "ip_address": "198.51.100.2"},
                                     {"interface": "eth1", "ip_address": "192.0.2.5"}]
