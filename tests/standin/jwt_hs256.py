"""Minimal HS256 JSON Web Tokens for the runtime stand-in.

Only what the stand-in needs: issue access tokens and check them, raising
errors whose messages and HTTP statuses match what the runtime's clients see
(422 for a token that cannot be read or verified, 401 once it has expired).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from typing import Any


class TokenError(Exception):
    """A presented token is unusable; carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        raw = text.encode("ascii")
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise TokenError(422, "Invalid token padding") from exc


def _sign(secret: bytes, signing_input: bytes) -> bytes:
    return hmac.new(secret, signing_input, hashlib.sha256).digest()


def encode(
    secret: bytes,
    subject: str,
    ttl: float,
    now: float | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Issue an access token for `subject` valid for `ttl` seconds."""
    issued = int(time.time() if now is None else now)
    header = {"alg": "HS256", "typ": "JWT"}
    payload: dict[str, Any] = {
        "fresh": False,
        "iat": issued,
        "jti": str(uuid.uuid4()),
        "type": "access",
        "sub": subject,
        "nbf": issued,
        "exp": issued + int(ttl),
    }
    if extra:
        payload.update(extra)
    signing_input = (
        _b64encode(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64encode(json.dumps(payload, separators=(",", ":")).encode())
    )
    signature = _b64encode(_sign(secret, signing_input.encode("ascii")))
    return signing_input + "." + signature


def decode(secret: bytes, token: str, now: float | None = None) -> dict[str, Any]:
    """Return the claims of a valid token or raise TokenError."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError(422, "Not enough segments")
    header_b64, payload_b64, signature_b64 = parts
    try:
        header = json.loads(_b64decode(header_b64))
        payload = json.loads(_b64decode(payload_b64))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TokenError(422, "Invalid header string: " + str(exc)) from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise TokenError(422, "Invalid token structure")
    if header.get("alg") != "HS256":
        raise TokenError(422, "The specified alg value is not allowed")
    expected = _sign(secret, (header_b64 + "." + payload_b64).encode("ascii"))
    if not hmac.compare_digest(expected, _b64decode(signature_b64)):
        raise TokenError(422, "Signature verification failed")
    exp = payload.get("exp")
    if not isinstance(exp, int):
        raise TokenError(422, "Token is missing the exp claim")
    current = time.time() if now is None else now
    if current >= exp:
        raise TokenError(401, "Token has expired")
    if payload.get("type") != "access":
        raise TokenError(422, "Only non-refresh tokens are allowed")
    return payload
