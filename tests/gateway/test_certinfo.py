"""The gateway's own reading of its client certificate (CN, validity) against
`cryptography`'s, on certificates built here with every encoding that matters."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.gateway import certinfo

KEY = ec.generate_private_key(ec.SECP256R1())


def make(subject: list[x509.NameAttribute], start: dt.datetime, end: dt.datetime) -> bytes:
    name = x509.Name(subject)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
            .public_key(KEY.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .sign(KEY, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


UTC = dt.UTC
PRINTABLE = x509.name._ASN1Type.PrintableString
CASES = [
    # Plain CN, UTCTime on both sides.
    ([x509.NameAttribute(NameOID.COMMON_NAME, "07048933")],
     dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), dt.datetime(2034, 1, 2, 3, 4, 5, tzinfo=UTC)),
    # After 2049 the end is a GeneralizedTime; before 2000 a UTCTime 19YY.
    ([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "org"),
      x509.NameAttribute(NameOID.COMMON_NAME, "agent-ü")],
     dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), dt.datetime(2051, 6, 1, tzinfo=UTC)),
    # A PrintableString CN and no CN at all.
    ([x509.NameAttribute(NameOID.COMMON_NAME, "ABC 123", _type=PRINTABLE)],
     dt.datetime(2025, 5, 5, tzinfo=UTC), dt.datetime(2026, 5, 5, tzinfo=UTC)),
    ([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "no cn here")],
     dt.datetime(2025, 5, 5, tzinfo=UTC), dt.datetime(2026, 5, 5, tzinfo=UTC)),
]


@pytest.mark.parametrize("subject,start,end", CASES)
def test_same_facts_as_cryptography(subject: list[x509.NameAttribute], start: dt.datetime,
                                    end: dt.datetime) -> None:
    pem = make(subject, start, end)
    ref = x509.load_pem_x509_certificate(pem)
    cns = ref.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    expected_cn = str(cns[0].value) if cns else None
    assert certinfo.read(pem) == (expected_cn, ref.not_valid_before_utc,
                                  ref.not_valid_after_utc)
    # Text before the block (a bundle's comment) does not matter.
    assert certinfo.read(b"subject=whatever\n" + pem)[0] == expected_cn


@pytest.mark.parametrize("pem", [
    b"garbage",
    b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",  # SEQ{INT 1}
    b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",  # truncated
])
def test_anything_else_is_a_value_error(pem: bytes) -> None:
    with pytest.raises(ValueError):
        certinfo.read(pem)


def test_the_gateway_process_does_not_load_cryptography() -> None:
    code = ("import sys, services.gateway.main, services.gateway.link; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'"
            " and sys.modules[m] is not None))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
