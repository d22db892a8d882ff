"""The DHCP client of one vNIC: the RFC 2131 state machine, without threads or sockets.

The keeper's loop feeds it replies (`handle`) and wakes it at `deadline` (`tick`); the
client answers through its `Effects`: send a message, put a lease (or nothing) on the
interface, record a change.  That keeps every timer of every vNIC in one loop, and lets
the machine be tested with a fake LAN.

States (RFC 2131 figure 5) and what `reported` shows:

    REBOOTING   INIT-REBOOT: REQUEST for the previous address, broadcast  -> "requesting"
    SELECTING   DISCOVER sent, waiting for an OFFER                        -> "requesting",
                                   "no_offer" after `no_offer_after`, "expired" after a loss
    REQUESTING  REQUEST for the offered address, broadcast                 -> as SELECTING
    BOUND       lease applied; at T1 ->                                    -> "bound"
    RENEWING    REQUEST unicast to the server; at T2 ->                    -> "renewing"
    REBINDING   REQUEST broadcast to any server; at expiry -> SELECTING    -> "rebinding"
    RELEASED    RELEASE sent, nothing applied, no timer                    -> "released"

Until the server confirms a lease, the interface carries no IPv4 address at all: an
address the LAN's server did not lease is never put on the wire (the engine's IPAM address
is removed when the keeper takes the vNIC).  A NAK or an expiry removes the address and
starts a fresh DISCOVER after a backoff that doubles up to `backoff_max`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Protocol

from services.executor.dhcp import packet
from services.executor.dhcp.lease import Lease

log = logging.getLogger(__name__)

BROADCAST = "255.255.255.255"
REBOOTING, SELECTING, REQUESTING = "rebooting", "selecting", "requesting"
BOUND, RENEWING, REBINDING, RELEASED = "bound", "renewing", "rebinding", "released"
ACQUIRING = (REBOOTING, SELECTING, REQUESTING)


@dataclass(frozen=True)
class Timing:
    """Timers of the client; the defaults follow RFC 2131 where it gives figures."""

    retransmit_initial: float = 4.0  # first wait for a reply; doubles per retransmission
    retransmit_max: float = 64.0
    request_tries: int = 4  # REQUESTs for an offer before starting over
    reboot_tries: int = 2  # INIT-REBOOT REQUESTs before falling back to DISCOVER
    no_offer_after: float = 30.0  # acquiring this long without a lease: "no_offer"
    backoff_max: float = 300.0  # cap of the wait before a new DISCOVER after a NAK or loss
    renew_min: float = 60.0  # least wait between RENEWING/REBINDING retransmissions
    jitter: float = 0.1  # each wait is randomised by +-10 % so vNICs do not move in step
    lease_cap: float | None = None  # give longer leases up after this long (T1, T2 kept
    # when earlier): a local policy, and how tests see expiry with a server whose
    # shortest lease is two minutes


class Effects(Protocol):
    def send(self, data: bytes, dest: str) -> None: ...

    def apply(self, lease: Lease | None) -> None: ...

    def changed(self) -> None: ...


class Client:
    def __init__(self, mac: str, hostname: str | None, effects: Effects,
                 timing: Timing, name: str = "") -> None:
        self.mac = mac
        self.hostname = hostname
        self.effects = effects
        self.timing = timing
        self.name = name or mac
        self.state = SELECTING
        self.lease: Lease | None = None
        self.lost = False  # a lease was lost (NAK, expiry): report "expired" until bound
        self.no_offer = False
        self.previous_ip: str | None = None
        self.xid = 0
        self.tries = 0
        self.naks = 0
        self.sent_at = 0.0
        self.acquire_started = 0.0
        self.retransmit_at = math.inf
        self.offer: packet.Reply | None = None

    # --- what the keeper reads ---------------------------------------------------------

    @property
    def deadline(self) -> float:
        if self.state in ACQUIRING and not self.no_offer and not self.lost:
            return min(self.retransmit_at, self.acquire_started + self.timing.no_offer_after)
        return self.retransmit_at

    @property
    def reported(self) -> str:
        if self.state == RELEASED:
            return "released"
        if self.lease is not None:
            return self.state
        if self.lost:
            return "expired"
        return "no_offer" if self.no_offer else "requesting"

    # --- entry points --------------------------------------------------------------------

    def start(self, now: float, previous: Lease | None, carried: bool) -> None:
        """Begin: resume a lease the interface still carries (an executor restart), ask
        for the previous address (INIT-REBOOT), or discover afresh."""
        self.acquire_started = now
        if previous is not None and carried and not previous.expired(now):
            self.lease = previous
            self.state = BOUND
            self.effects.apply(previous)  # also strips anything else from the interface
            self.retransmit_at = now  # the tick moves on to RENEWING etc. when due
            return
        self.effects.apply(None)
        if previous is not None:
            self.previous_ip = previous.ip_address
            self._reboot(now)
        else:
            self._discover(now)

    def release(self) -> None:
        if self.lease is not None and not self.lease.expired():
            self._send(packet.RELEASE, now=time.time(), dest=self.lease.server,
                       ciaddr=self.lease.ip_address, server_id=self.lease.server,
                       parameters=False)
        self.effects.apply(None)
        self.lease = None
        self.state = RELEASED
        self.retransmit_at = math.inf
        self.effects.changed()

    def tick(self, now: float) -> None:
        if self.state in ACQUIRING and not self.no_offer and not self.lost \
                and now >= self.acquire_started + self.timing.no_offer_after:
            self.no_offer = True
            log.warning("%s: no DHCP offer in %g s; still trying", self.name,
                        self.timing.no_offer_after)
            self.effects.changed()
        if now < self.retransmit_at:
            return
        if self.lease is not None and self.lease.expired(now):
            self._expire(now)
        elif self.state == SELECTING:
            self._discover(now, retry=True)
        elif self.state == REQUESTING:
            self._request_offer(now, retry=True)
        elif self.state == REBOOTING:
            self._reboot(now, retry=True)
        elif self.state in (BOUND, RENEWING, REBINDING):
            self._extend(now)

    def handle(self, data: bytes, now: float) -> None:
        try:
            reply = packet.parse(data)
        except packet.BadPacket as exc:
            log.debug("%s: dropped a message: %s", self.name, exc)
            return
        if not reply.for_client(self.xid, self.mac) or self.state == RELEASED:
            return
        if reply.msg_type == packet.OFFER and self.state == SELECTING:
            if reply.server_id and reply.yiaddr != "0.0.0.0":
                self.offer = reply
                self.state = REQUESTING
                self.tries = 0
                self._request_offer(now)
        elif reply.msg_type == packet.ACK and self.state in (
                REBOOTING, REQUESTING, RENEWING, REBINDING):
            self._bind(reply, now)
        elif reply.msg_type == packet.NAK and self.state in (
                REBOOTING, REQUESTING, RENEWING, REBINDING):
            log.warning("%s: NAK from %s (%s)", self.name, reply.server_id, reply.message)
            self._lose(now, nak=True)

    # --- the machine ---------------------------------------------------------------------

    def _wait(self, base: float) -> float:
        return base * (1 + random.uniform(-self.timing.jitter, self.timing.jitter))

    def _backoff(self) -> float:
        wait = self.timing.retransmit_initial * (2 ** min(self.tries, 16))
        return self._wait(min(wait, self.timing.retransmit_max))

    def _send(self, kind: int, now: float, dest: str = BROADCAST, **fields: object) -> None:
        secs = int(now - self.acquire_started) if self.state in ACQUIRING else 0
        message = packet.Request(kind, self.xid, self.mac, secs=max(secs, 0),
                                 hostname=self.hostname, **fields)  # type: ignore[arg-type]
        self.sent_at = now
        try:
            self.effects.send(message.build(), dest)
        except OSError as exc:  # no route, interface gone: the retransmission retries
            log.info("%s: sending %s failed: %s", self.name, packet.TYPE_NAMES[kind], exc)

    def _discover(self, now: float, retry: bool = False) -> None:
        # Retransmissions keep the transaction id: a slow server (dnsmasq probes an
        # address with a ping before offering it) answers an earlier copy.
        if not retry:
            self.state, self.tries = SELECTING, 0
        else:
            self.tries += 1
        if not retry or not self.xid:
            self.xid = random.getrandbits(32) or 1
        self._send(packet.DISCOVER, now, broadcast=True, requested_ip=self.previous_ip)
        wait = self._backoff()
        if self.no_offer or self.lost:
            wait = max(wait, self._wait(min(self.timing.backoff_max,
                                            self.timing.retransmit_initial * 2 ** self.naks)))
        self.retransmit_at = now + wait

    def _request_offer(self, now: float, retry: bool = False) -> None:
        assert self.offer is not None
        if retry:
            self.tries += 1
            if self.tries >= self.timing.request_tries:
                self._discover(now)
                return
        self._send(packet.REQUEST, now, broadcast=True, requested_ip=self.offer.yiaddr,
                   server_id=self.offer.server_id)
        self.retransmit_at = now + self._backoff()

    def _reboot(self, now: float, retry: bool = False) -> None:
        if retry:
            self.tries += 1
            if self.tries >= self.timing.reboot_tries:
                self._discover(now)  # asks for the previous address too
                return
        else:
            self.state, self.tries = REBOOTING, 0
            self.xid = random.getrandbits(32)
        self._send(packet.REQUEST, now, broadcast=True, requested_ip=self.previous_ip)
        self.retransmit_at = now + self._backoff()

    def _extend(self, now: float) -> None:
        lease = self.lease
        assert lease is not None
        if now >= lease.rebind_at:
            if self.state != REBINDING:
                self.state, self.xid = REBINDING, random.getrandbits(32)
                self.effects.changed()
            dest, until = BROADCAST, lease.expires_at
        else:
            if self.state != RENEWING:
                self.state, self.xid = RENEWING, random.getrandbits(32)
                self.effects.changed()
            dest, until = lease.server, lease.rebind_at
        self._send(packet.REQUEST, now, dest=dest, ciaddr=lease.ip_address,
                   broadcast=False)
        # RFC 2131 4.4.5: wait half the time left, but not less than renew_min.
        self.retransmit_at = min(until, now + max((until - now) / 2, self.timing.renew_min))

    def _bind(self, reply: packet.Reply, now: float) -> None:
        if reply.lease_time is None or reply.yiaddr == "0.0.0.0" or not reply.server_id:
            log.warning("%s: ACK without address, server or lease time ignored", self.name)
            return
        total = float(reply.lease_time)
        t1 = float(reply.t1 if reply.t1 is not None else total * 0.5)
        t2 = float(reply.t2 if reply.t2 is not None else total * 0.875)
        if not 0 < t1 < t2 < total:
            t1, t2 = total * 0.5, total * 0.875
        cap = self.timing.lease_cap
        if cap is not None and total > cap:
            # The lease is given up locally at `cap`; the server's T1/T2 are kept when
            # they fall before it.
            total = cap
            t1, t2 = min(t1, cap * 0.5), min(t2, cap * 0.875)
        prefixlen = reply.prefixlen
        if prefixlen is None:
            log.warning("%s: no subnet mask in the ACK; using /24", self.name)
            prefixlen = 24
        routers = reply.routers
        domain = (reply.options.get(packet.OPT_DOMAIN) or b"").decode("ascii", "ignore")
        lease = Lease(ip_address=reply.yiaddr, prefixlen=prefixlen, server=reply.server_id,
                      start=self.sent_at, lease_time=int(total), t1=t1, t2=t2,
                      gateway=routers[0] if routers else None, dns=reply.dns,
                      domain=domain.strip("\0") or None)
        first = self.lease is None or self.lease.ip_address != lease.ip_address
        self.lease, self.state, self.previous_ip = lease, BOUND, lease.ip_address
        self.lost = self.no_offer = False
        self.naks = 0
        self.retransmit_at = lease.renew_at
        self.effects.apply(lease)
        self.effects.changed()
        if first:
            log.info("%s: leased %s/%d from %s for %d s", self.name, lease.ip_address,
                     lease.prefixlen, lease.server, lease.lease_time)

    def _expire(self, now: float) -> None:
        assert self.lease is not None
        log.warning("%s: lease of %s expired; address removed", self.name,
                    self.lease.ip_address)
        self._lose(now, nak=False)

    def _lose(self, now: float, nak: bool) -> None:
        had = self.lease is not None
        self.lease = None
        self.effects.apply(None)
        if had:
            self.lost = True
        if nak:
            self.naks += 1
            self.previous_ip = None  # the server refused it; do not ask again
        self.acquire_started = now
        self.state = SELECTING
        self.tries = 0
        self.effects.changed()
        # A fresh DISCOVER after a backoff that grows with consecutive NAKs.
        wait = min(self.timing.backoff_max, self.timing.retransmit_initial * 2 ** self.naks)
        self.retransmit_at = now + (self._wait(wait) if nak else 0.0)
        self.xid = 0
