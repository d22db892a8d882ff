"""A scripted DHCP server side for the client's unit tests: reads the client's messages
and builds replies, with the codec's own structures (the LAN tests use dnsmasq)."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from services.executor.dhcp import packet
from services.executor.dhcp.lease import Lease

SERVER = "198.51.100.1"


@dataclass
class Sent:
    kind: int
    xid: int
    flags: int
    ciaddr: str
    chaddr: bytes
    options: dict[int, bytes]
    dest: str

    @property
    def requested_ip(self) -> str | None:
        raw = self.options.get(packet.OPT_REQUESTED_IP)
        return str(ipaddress.IPv4Address(raw)) if raw else None

    @property
    def server_id(self) -> str | None:
        raw = self.options.get(packet.OPT_SERVER_ID)
        return str(ipaddress.IPv4Address(raw)) if raw else None


def read(data: bytes, dest: str) -> Sent:
    fields = packet.HEADER.unpack_from(data)
    assert fields[0] == packet.BOOTREQUEST
    assert data[packet.HEADER.size:packet.MIN_REPLY] == packet.MAGIC
    options = packet.parse_options(data[packet.MIN_REPLY:])
    return Sent(options[packet.OPT_MSG_TYPE][0], fields[4], fields[6],
                str(ipaddress.IPv4Address(fields[7])), fields[11], options, dest)


def reply(to: Sent, kind: int, yiaddr: str = "0.0.0.0", lease_time: int | None = 120,
          t1: int | None = None, t2: int | None = None, server: str = SERVER,
          xid: int | None = None) -> bytes:
    header = packet.HEADER.pack(
        packet.BOOTREPLY, 1, 6, 0, to.xid if xid is None else xid, 0, to.flags,
        b"\0" * 4, ipaddress.IPv4Address(yiaddr).packed, b"\0" * 4, b"\0" * 4,
        to.chaddr, b"", b"")
    opts = bytes([packet.OPT_MSG_TYPE, 1, kind])
    opts += bytes([packet.OPT_SERVER_ID, 4]) + ipaddress.IPv4Address(server).packed
    if kind != packet.NAK:
        opts += bytes([packet.OPT_SUBNET_MASK, 4]) + bytes([255, 255, 255, 0])
        opts += bytes([packet.OPT_ROUTER, 4]) + ipaddress.IPv4Address(SERVER).packed
        opts += bytes([packet.OPT_DNS, 8]) + ipaddress.IPv4Address("198.51.100.53").packed \
            + ipaddress.IPv4Address("198.51.100.54").packed
        for code, value in ((packet.OPT_LEASE_TIME, lease_time), (packet.OPT_T1, t1),
                            (packet.OPT_T2, t2)):
            if value is not None:
                opts += bytes([code, 4]) + struct.pack("!I", value)
    return header + packet.MAGIC + opts + bytes([packet.OPT_END])


@dataclass
class FakeEffects:
    sent: list[Sent] = field(default_factory=list)
    applied: list[Lease | None] = field(default_factory=list)
    changes: int = 0

    def send(self, data: bytes, dest: str) -> None:
        self.sent.append(read(data, dest))

    def apply(self, lease: Lease | None) -> None:
        self.applied.append(lease)

    def changed(self) -> None:
        self.changes += 1

    @property
    def last(self) -> Sent:
        return self.sent[-1]
