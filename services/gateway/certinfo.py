"""The three facts the gateway needs from its client certificate: the subject CN and the
validity dates, read from the DER encoding with the standard library.

The gateway used to parse the certificate with `cryptography`, which is otherwise never
used in that process and costs about 4 MB of private memory (6 MB PSS) for as long as it
runs.  The certificate itself is checked where it matters, by OpenSSL when the
SSLContext loads it with its key; here only the fields of RFC 5280's TBSCertificate up to
the subject are walked:

    TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber INTEGER,
        signature AlgorithmIdentifier, issuer Name, validity SEQUENCE { notBefore Time,
        notAfter Time }, subject Name, ... }

Anything that does not have that shape raises `ValueError`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re

SEQUENCE, SET, OID, UTC_TIME, GENERALIZED_TIME = 0x30, 0x31, 0x06, 0x17, 0x18
CONTEXT_0 = 0xA0
CN_OID = bytes([0x55, 0x04, 0x03])  # 2.5.4.3
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)
_STRINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1",
            0x1E: "utf-16-be", 0x1C: "utf-32-be"}


def _tlv(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the element at `at`."""
    if at + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[at], data[at + 1]
    at += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or at + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[at:at + count], "big")
        at += count
    if at + length > len(data):
        raise ValueError("truncated DER")
    return tag, at, at + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        tag, vstart, vend = _tlv(data, start)
        out.append((tag, vstart, vend))
        start = vend
    return out


def _time(data: bytes, tag: int, start: int, end: int) -> dt.datetime:
    text = data[start:end].decode("ascii")
    if tag == UTC_TIME:  # RFC 5280: YY >= 50 is 19YY
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != GENERALIZED_TIME:
        raise ValueError("validity is not a time")
    if not text.endswith("Z") or len(text) != 15:
        raise ValueError(f"unsupported certificate time {text!r}")
    return dt.datetime.strptime(text[:-1], "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)


def _common_name(data: bytes, start: int, end: int) -> str | None:
    for set_tag, sstart, send in _children(data, start, end):
        if set_tag != SET:
            raise ValueError("a name is not a sequence of sets")
        for _, astart, aend in _children(data, sstart, send):
            parts = _children(data, astart, aend)
            if len(parts) == 2 and parts[0][0] == OID and \
                    data[parts[0][1]:parts[0][2]] == CN_OID:
                vtag, vstart, vend = parts[1]
                encoding = _STRINGS.get(vtag)
                if encoding is None:
                    raise ValueError("the CN is not a string")
                return data[vstart:vend].decode(encoding, "replace")
    return None


def pem_to_der(pem: bytes) -> bytes:
    """The first certificate of a PEM file, as DER; ValueError when there is none."""
    found = _PEM.search(pem)
    if found is None:
        raise ValueError("no PEM certificate")
    try:
        return base64.b64decode(b"".join(found.group(1).split()), validate=True)
    except binascii.Error:
        raise ValueError("bad base64 in the PEM certificate") from None


def read(pem: bytes) -> tuple[str | None, dt.datetime, dt.datetime]:
    """(subject CN or None, not before, not after) of the first certificate in `pem`."""
    der = pem_to_der(pem)
    tag, start, end = _tlv(der, 0)
    if tag != SEQUENCE:
        raise ValueError("not a certificate")
    tag, start, end = _tlv(der, start)  # TBSCertificate
    if tag != SEQUENCE:
        raise ValueError("not a certificate")
    fields = _children(der, start, end)
    if fields and fields[0][0] == CONTEXT_0:
        fields = fields[1:]  # the version
    if len(fields) < 5:
        raise ValueError("a certificate too short")
    validity, subject = fields[3], fields[4]
    if validity[0] != SEQUENCE or subject[0] != SEQUENCE:
        raise ValueError("not a certificate")
    times = _children(der, validity[1], validity[2])
    if len(times) != 2:
        raise ValueError("bad validity")
    not_before = _time(der, *times[0])
    not_after = _time(der, *times[1])
    return _common_name(der, subject[1], subject[2]), not_before, not_after
