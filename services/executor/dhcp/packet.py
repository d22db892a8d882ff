"""DHCPv4 messages (RFC 2131 / RFC 2132): building the client's messages, reading replies.

Only what a client needs: the fixed BOOTP header, the magic cookie and the options it
sends or reads.  Replies come from the LAN, so `parse` treats every byte as untrusted: a
short, truncated or malformed message raises `BadPacket` and is dropped by the caller;
option lengths are checked against the buffer, never trusted.  Option overload (52) is
not followed: servers put the options the client asked for in the options field.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

CLIENT_PORT = 68
SERVER_PORT = 67
MAGIC = b"\x63\x82\x53\x63"
BOOTREQUEST, BOOTREPLY = 1, 2
HTYPE_ETHER = 1
FLAG_BROADCAST = 0x8000
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")

# Message types (option 53).
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
TYPE_NAMES = {DISCOVER: "DISCOVER", OFFER: "OFFER", REQUEST: "REQUEST", DECLINE: "DECLINE",
              ACK: "ACK", NAK: "NAK", RELEASE: "RELEASE", INFORM: "INFORM"}

# Options.
OPT_PAD, OPT_END = 0, 255
OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_HOSTNAME, OPT_DOMAIN = 1, 3, 6, 12, 15
OPT_REQUESTED_IP, OPT_LEASE_TIME, OPT_MSG_TYPE, OPT_SERVER_ID = 50, 51, 53, 54
OPT_PARAM_LIST, OPT_MESSAGE, OPT_MAX_SIZE, OPT_T1, OPT_T2, OPT_CLIENT_ID = 55, 56, 57, 58, 59, 61
PARAMETERS = bytes([OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_DOMAIN, OPT_LEASE_TIME,
                    OPT_T1, OPT_T2])
MAX_MESSAGE = 1500
MIN_REPLY = HEADER.size + len(MAGIC)


class BadPacket(ValueError):
    """A message that is not a well-formed DHCP reply."""


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    return bytes(int(p, 16) for p in parts)


def client_id(mac: str) -> bytes:
    """Option 61 as RFC 2132 suggests for Ethernet: hardware type 1, then the MAC."""
    return bytes([HTYPE_ETHER]) + mac_bytes(mac)


def _ip(value: str | None) -> bytes:
    return ipaddress.IPv4Address(value or "0.0.0.0").packed


def _opt(code: int, value: bytes) -> bytes:
    if len(value) > 255:
        raise ValueError(f"option {code} is longer than 255 bytes")
    return bytes([code, len(value)]) + value


@dataclass(frozen=True)
class Request:
    """A message the client sends; `build()` gives its bytes."""

    msg_type: int
    xid: int
    mac: str
    secs: int = 0
    broadcast: bool = False
    ciaddr: str | None = None
    requested_ip: str | None = None
    server_id: str | None = None
    hostname: str | None = None
    parameters: bool = True

    def build(self) -> bytes:
        header = HEADER.pack(
            BOOTREQUEST, HTYPE_ETHER, 6, 0, self.xid, min(self.secs, 0xFFFF),
            FLAG_BROADCAST if self.broadcast else 0, _ip(self.ciaddr), _ip(None), _ip(None),
            _ip(None), mac_bytes(self.mac).ljust(16, b"\0"), b"", b"")
        opts = [_opt(OPT_MSG_TYPE, bytes([self.msg_type])),
                _opt(OPT_CLIENT_ID, client_id(self.mac))]
        if self.requested_ip:
            opts.append(_opt(OPT_REQUESTED_IP, _ip(self.requested_ip)))
        if self.server_id:
            opts.append(_opt(OPT_SERVER_ID, _ip(self.server_id)))
        if self.msg_type not in (RELEASE, DECLINE):
            opts.append(_opt(OPT_MAX_SIZE, struct.pack("!H", MAX_MESSAGE)))
            if self.hostname:
                opts.append(_opt(OPT_HOSTNAME, self.hostname.encode("ascii", "ignore")[:63]))
            if self.parameters:
                opts.append(_opt(OPT_PARAM_LIST, PARAMETERS))
        body = header + MAGIC + b"".join(opts) + bytes([OPT_END])
        # Some relays and old servers drop BOOTP messages shorter than 300 bytes.
        return body.ljust(300, b"\0")


@dataclass
class Reply:
    """A server's message, as read by `parse`."""

    msg_type: int
    xid: int
    yiaddr: str
    chaddr: bytes
    options: dict[int, bytes] = field(default_factory=dict)

    def _addr(self, code: int) -> str | None:
        raw = self.options.get(code)
        if raw is None or len(raw) < 4:
            return None
        return str(ipaddress.IPv4Address(raw[:4]))

    def _addrs(self, code: int) -> list[str]:
        raw = self.options.get(code) or b""
        return [str(ipaddress.IPv4Address(raw[i:i + 4])) for i in range(0, len(raw) - 3, 4)]

    def _seconds(self, code: int) -> int | None:
        raw = self.options.get(code)
        if raw is None or len(raw) != 4:
            return None
        return int(struct.unpack("!I", raw)[0])

    @property
    def server_id(self) -> str | None:
        return self._addr(OPT_SERVER_ID)

    @property
    def prefixlen(self) -> int | None:
        mask = self._addr(OPT_SUBNET_MASK)
        if mask is None:
            return None
        try:
            return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
        except ValueError:
            return None

    @property
    def routers(self) -> list[str]:
        return self._addrs(OPT_ROUTER)

    @property
    def dns(self) -> list[str]:
        return self._addrs(OPT_DNS)

    @property
    def lease_time(self) -> int | None:
        return self._seconds(OPT_LEASE_TIME)

    @property
    def t1(self) -> int | None:
        return self._seconds(OPT_T1)

    @property
    def t2(self) -> int | None:
        return self._seconds(OPT_T2)

    @property
    def message(self) -> str:
        return (self.options.get(OPT_MESSAGE) or b"").decode("utf-8", "replace")

    def for_client(self, xid: int, mac: str) -> bool:
        return self.xid == xid and self.chaddr[:6] == mac_bytes(mac)


def parse_options(data: bytes) -> dict[int, bytes]:
    options: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= len(data):
            raise BadPacket("option length missing")
        length = data[i + 1]
        value = data[i + 2:i + 2 + length]
        if len(value) != length:
            raise BadPacket(f"option {code} runs past the end of the message")
        # RFC 3396: an option that appears several times is the concatenation.
        options[code] = options.get(code, b"") + value
        i += 2 + length
    return options


def parse(data: bytes) -> Reply:
    """Read a server's reply; `BadPacket` for anything else."""
    if len(data) < MIN_REPLY:
        raise BadPacket(f"{len(data)} bytes is too short for a DHCP message")
    (op, htype, hlen, _hops, xid, _secs, _flags, _ciaddr, yiaddr, _siaddr, _giaddr,
     chaddr, _sname, _file) = HEADER.unpack_from(data)
    if op != BOOTREPLY or htype != HTYPE_ETHER or hlen != 6:
        raise BadPacket("not an Ethernet BOOTREPLY")
    if data[HEADER.size:MIN_REPLY] != MAGIC:
        raise BadPacket("no DHCP magic cookie")
    options = parse_options(data[MIN_REPLY:])
    kind = options.get(OPT_MSG_TYPE)
    if kind is None or len(kind) != 1 or kind[0] not in (OFFER, ACK, NAK):
        raise BadPacket("not an OFFER, ACK or NAK")
    return Reply(kind[0], xid, str(ipaddress.IPv4Address(yiaddr)), chaddr, options)
