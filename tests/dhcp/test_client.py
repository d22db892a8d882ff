"""The DHCP client's state machine against a scripted server (no sockets, no namespaces):
message contents, timers, states.  The LAN tests run the same client against dnsmasq."""

from __future__ import annotations

import time

import pytest

from services.executor.dhcp import packet
from services.executor.dhcp.client import Client, Timing
from services.executor.dhcp.lease import Lease
from tests.dhcp.fakes import SERVER, FakeEffects, reply

MAC = "02:42:c6:33:64:14"
TIMING = Timing(retransmit_initial=1.0, retransmit_max=8.0, no_offer_after=5.0,
                backoff_max=16.0, renew_min=1.0, jitter=0.0)


def bound_client(t0: float = 1000.0, lease_time: int = 100) -> tuple[Client, FakeEffects]:
    fx = FakeEffects()
    client = Client(MAC, "plc-1", fx, TIMING)
    client.start(t0, previous=None, carried=False)
    discover = fx.last
    client.handle(reply(discover, packet.OFFER, "198.51.100.120"), t0 + 0.1)
    request = fx.last
    client.handle(reply(request, packet.ACK, "198.51.100.120", lease_time), t0 + 0.2)
    assert client.reported == "bound"
    return client, fx


def test_discover_offer_request_ack_carries_the_options() -> None:
    _client, fx = bound_client()
    discover, request = fx.sent
    assert discover.kind == packet.DISCOVER and discover.dest == "255.255.255.255"
    assert discover.flags & packet.FLAG_BROADCAST
    assert discover.chaddr[:6] == packet.mac_bytes(MAC)
    assert discover.options[packet.OPT_CLIENT_ID] == b"\x01" + packet.mac_bytes(MAC)
    assert discover.options[packet.OPT_HOSTNAME] == b"plc-1"
    assert set(packet.PARAMETERS) <= set(discover.options[packet.OPT_PARAM_LIST])
    assert request.kind == packet.REQUEST and request.xid == discover.xid
    assert request.requested_ip == "198.51.100.120" and request.server_id == SERVER
    assert fx.applied[0] is None  # the engine's address goes before anything else
    lease = fx.applied[-1]
    assert lease is not None and lease.ip_address == "198.51.100.120"
    assert (lease.prefixlen, lease.gateway, lease.dns) == (
        24, SERVER, ["198.51.100.53", "198.51.100.54"])
    assert (lease.t1, lease.t2) == (50.0, 87.5)  # RFC defaults when the server sends none


def test_renew_unicast_at_t1_then_rebind_broadcast_at_t2_then_expiry() -> None:
    client, fx = bound_client(t0=1000.0, lease_time=100)
    start = client.lease.start if client.lease else 0
    assert client.deadline == pytest.approx(start + 50)
    client.tick(start + 50)
    renew = fx.last
    assert client.reported == "renewing"
    assert renew.kind == packet.REQUEST and renew.dest == SERVER
    assert renew.ciaddr == "198.51.100.120" and renew.server_id is None
    assert renew.requested_ip is None and not renew.flags & packet.FLAG_BROADCAST
    client.tick(start + 87.5)
    rebind = fx.last
    assert client.reported == "rebinding" and rebind.dest == "255.255.255.255"
    assert rebind.ciaddr == "198.51.100.120"
    client.tick(start + 99)
    assert client.lease is not None  # kept until the lease really ends
    client.tick(start + 100)
    assert client.reported == "expired" and client.lease is None
    assert fx.applied[-1] is None
    client.tick(client.deadline)
    assert fx.last.kind == packet.DISCOVER
    assert fx.last.requested_ip == "198.51.100.120"  # the old address is asked for


def test_renewal_ack_extends_the_lease() -> None:
    client, fx = bound_client(t0=1000.0, lease_time=100)
    client.tick(client.deadline)
    client.handle(reply(fx.last, packet.ACK, "198.51.100.120", 100), 1051.0)
    assert client.reported == "bound"
    assert client.lease is not None and client.lease.expires_at == pytest.approx(1150.1)


def test_nak_while_renewing_removes_the_address_and_discovers_with_backoff() -> None:
    client, fx = bound_client()
    client.tick(client.deadline)
    now = 1051.0
    client.handle(reply(fx.last, packet.NAK), now)
    assert client.reported == "expired" and fx.applied[-1] is None
    assert client.deadline > now  # not at once: a backoff
    sent = len(fx.sent)
    client.tick(client.deadline)
    assert len(fx.sent) == sent + 1 and fx.last.kind == packet.DISCOVER
    assert fx.last.requested_ip is None  # the refused address is not asked for again


def test_no_offer_after_the_bound_then_keeps_trying() -> None:
    fx = FakeEffects()
    client = Client(MAC, None, fx, TIMING)
    client.start(0.0, None, False)
    now = 0.0
    while client.reported != "no_offer":
        now = client.deadline
        assert now <= TIMING.no_offer_after
        client.tick(now)
    assert now == pytest.approx(TIMING.no_offer_after)
    discovers = [s for s in fx.sent if s.kind == packet.DISCOVER]
    assert len(discovers) >= 3  # 0, 1, 3 s (doubling)
    for _ in range(10):  # in the background, with a bounded backoff
        before, now = len(fx.sent), client.deadline
        client.tick(now)
        assert len(fx.sent) == before + 1 and fx.last.kind == packet.DISCOVER
        assert client.deadline - now <= TIMING.backoff_max
    assert client.reported == "no_offer"


def test_init_reboot_asks_for_the_previous_address_then_falls_back() -> None:
    fx = FakeEffects()
    previous = Lease("198.51.100.120", 24, SERVER, start=0.0, lease_time=100, t1=50, t2=87.5)
    client = Client(MAC, None, fx, TIMING)
    client.start(500.0, previous, carried=False)
    first = fx.last
    assert first.kind == packet.REQUEST and first.requested_ip == "198.51.100.120"
    assert first.server_id is None and first.ciaddr == "0.0.0.0"
    assert fx.applied == [None]  # nothing applied before the server confirms
    client.tick(client.deadline)
    client.tick(client.deadline)
    assert fx.last.kind == packet.DISCOVER and fx.last.requested_ip == "198.51.100.120"


def test_carried_lease_is_resumed_without_asking() -> None:
    fx = FakeEffects()
    previous = Lease("198.51.100.120", 24, SERVER, start=1000.0, lease_time=100, t1=50,
                     t2=87.5)
    client = Client(MAC, None, fx, TIMING)
    client.start(1060.0, previous, carried=True)
    assert client.reported == "bound" and fx.applied == [previous] and not fx.sent
    client.tick(1060.0)  # past T1: renew at once
    assert client.reported == "renewing" and fx.last.dest == SERVER


def test_release_sends_release_and_removes_the_address() -> None:
    client, fx = bound_client(t0=time.time())  # RELEASE only for a lease not yet ended
    client.release()
    assert fx.last.kind == packet.RELEASE and fx.last.dest == SERVER
    assert fx.last.ciaddr == "198.51.100.120" and fx.last.server_id == SERVER
    assert client.reported == "released" and fx.applied[-1] is None
    assert client.deadline == float("inf")


def test_replies_for_others_and_garbage_change_nothing() -> None:
    fx = FakeEffects()
    client = Client(MAC, None, fx, TIMING)
    client.start(0.0, None, False)
    discover = fx.last
    client.handle(reply(discover, packet.OFFER, "198.51.100.9", xid=discover.xid ^ 1), 0.1)
    client.handle(b"\x02" * 100, 0.1)
    client.handle(reply(discover, packet.OFFER, "198.51.100.9")[:250], 0.1)
    client.handle(reply(discover, packet.ACK, "198.51.100.9"), 0.1)  # ACK before any REQUEST
    assert client.state == "selecting" and len(fx.sent) == 1


def test_lease_cap_shortens_long_leases() -> None:
    fx = FakeEffects()
    client = Client(MAC, None, fx, Timing(lease_cap=20.0, jitter=0.0))
    client.start(0.0, None, False)
    client.handle(reply(fx.last, packet.OFFER, "198.51.100.9"), 0.0)
    client.handle(reply(fx.last, packet.ACK, "198.51.100.9", 120, t1=4, t2=8), 0.0)
    assert client.lease is not None
    assert (client.lease.lease_time, client.lease.t1, client.lease.t2) == (20, 4, 8)
