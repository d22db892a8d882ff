"""The bus wire format: the only module that encodes or decodes bus frames.

Every bus message is three ZeroMQ frames (a ROUTER socket adds the peer identity in
front, which the bus module strips before calling `decode`):

    frame 0  topic   UTF-8, dotted and hierarchical (`metrics.host`, `svc.metrics.alive`),
                     at most 255 bytes, so SUB prefix filters and the tap work on it
                     without decoding anything else
    frame 1  header  msgpack map:
                       "v"   int    protocol version (PROTOCOL_VERSION)
                       "id"  str    message id, unique per process run
                       "ts"  float  send time, Unix seconds
                       "src" str    sending process ("metrics", "gateway", ...)
                       "seq" int    per-source, per-topic sequence number, from 1
                       "re"  str?   on a reply: the id of the request it answers
    frame 2  body    msgpack map with string keys (the message's fields)

Sequence numbers count per topic rather than per source because subscribers filter by
topic prefix: a per-source counter would show every filtered-out message as a gap.

msgpack options are explicit on both sides: `use_bin_type=True` (str and bytes stay
distinct), `raw=False` (strings decode as str, invalid UTF-8 is an error),
`strict_map_key=True` (map keys are str or bytes), lists not tuples, and a decode buffer
cap.  Anything that does not match is a `WireError`; receivers count it and drop the
frame, they never crash on it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
MAX_TOPIC_BYTES = 255
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
HEADER_KEYS = ("v", "id", "ts", "src", "seq")


class WireError(ValueError):
    """A frame set that is not a valid bus message; `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    msg_id: str
    timestamp: float
    source: str
    seq: int
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    topic: str
    header: Header
    body: dict[str, Any]


class Stamper:
    """Makes headers for one source: message ids and per-topic sequence numbers."""

    def __init__(self, source: str) -> None:
        self.source = source
        # Ids only need to be unique per process run; a random prefix keeps them unique
        # across restarts without paying for a uuid per message.
        self._prefix = f"{source[:3]}{os.getpid():x}.{os.urandom(3).hex()}."
        self._count = 0
        self._seqs: dict[str, int] = {}

    def header(self, topic: str, reply_to: str | None = None) -> Header:
        self._count += 1
        seq = self._seqs.get(topic, 0) + 1
        self._seqs[topic] = seq
        return Header(PROTOCOL_VERSION, f"{self._prefix}{self._count:x}", time.time(),
                      self.source, seq, reply_to)


_packer_options: dict[str, Any] = {"use_bin_type": True, "datetime": False}


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, **_packer_options)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=True,
        use_list=True,
    )


def encode(topic: str, header: Header, body: dict[str, Any]) -> list[bytes]:
    """Encode one message as its three frames."""
    topic_bytes = topic.encode("utf-8")
    if not topic_bytes or len(topic_bytes) > MAX_TOPIC_BYTES:
        raise WireError("bad_topic", topic[:60])
    head: dict[str, Any] = {
        "v": header.version,
        "id": header.msg_id,
        "ts": header.timestamp,
        "src": header.source,
        "seq": header.seq,
    }
    if header.reply_to is not None:
        head["re"] = header.reply_to
    try:
        body_bytes = pack(body)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError("unencodable", str(exc)) from None
    if len(body_bytes) > MAX_MESSAGE_BYTES:
        raise WireError("oversized", f"{len(body_bytes)} bytes")
    return [topic_bytes, pack(head), body_bytes]


def decode(frames: list[bytes]) -> Envelope:
    """Decode three frames into an Envelope, or raise WireError."""
    if len(frames) != 3:
        raise WireError("frame_count", str(len(frames)))
    topic_bytes, head_bytes, body_bytes = frames
    if not topic_bytes or len(topic_bytes) > MAX_TOPIC_BYTES:
        raise WireError("bad_topic")
    if len(head_bytes) + len(body_bytes) > MAX_MESSAGE_BYTES:
        raise WireError("oversized")
    try:
        topic = bytes(topic_bytes).decode("utf-8")
        head = unpack(head_bytes)
        body = unpack(body_bytes)
    except (UnicodeDecodeError, ValueError, TypeError, msgpack.ExtraData,
            msgpack.FormatError, msgpack.StackError) as exc:
        raise WireError("undecodable", type(exc).__name__) from None
    if not isinstance(head, dict) or not isinstance(body, dict):
        raise WireError("not_a_map")
    for key in HEADER_KEYS:
        if key not in head:
            raise WireError("missing_field", key)
    if head["v"] != PROTOCOL_VERSION:
        raise WireError("wrong_version", repr(head["v"])[:20])
    msg_id, ts, src, seq, re = head["id"], head["ts"], head["src"], head["seq"], head.get("re")
    if (
        not isinstance(msg_id, str)
        or not isinstance(src, str)
        or isinstance(seq, bool)
        or not isinstance(seq, int)
        or isinstance(ts, bool)
        or not isinstance(ts, (int, float))
        or not (re is None or isinstance(re, str))
    ):
        raise WireError("bad_header")
    return Envelope(topic, Header(PROTOCOL_VERSION, msg_id, float(ts), src, seq, re), body)
