"""Records, ULIDs and topics. Pure: no I/O.

A record on disk and on the wire is ``ULID SP TOPIC SP LINE LF``. The ULID is 26
Crockford base32 characters (48-bit millisecond time, 80 random bits); ULID text
order is time order, so byte order of whole records is ULID order.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

ALPHABET = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_LEN = 26
DEFAULT_TOPIC = b"default"
TOPIC_RE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
MAX_TOPIC_LEN = 128
# Opens a fast or durable ingest connection that names its topic: + NAME LF.
TOPIC_PREAMBLE = b"\x01oklog-topic "

_DECODE = {c: i for i, c in enumerate(ALPHABET)}
# Crockford aliases accepted on input.
for _alias, _real in ((b"O", b"0"), (b"I", b"1"), (b"L", b"1")):
    _DECODE[_alias[0]] = _DECODE[_real[0]]
for _c in list(_DECODE):
    if 65 <= _c <= 90:
        _DECODE[_c + 32] = _DECODE[_c]

# Three base32 characters for every 15-bit value: two lookups encode 30 bits.
_TRIPLES = [
    bytes((ALPHABET[(v >> 10) & 31], ALPHABET[(v >> 5) & 31], ALPHABET[v & 31]))
    for v in range(1 << 15)
]
_LOW_BITS = 30
_LOW_MASK = (1 << _LOW_BITS) - 1


class RecordError(ValueError):
    """A record, ULID or topic that does not parse."""


def encode_int(value: int, length: int) -> bytes:
    out = bytearray(length)
    for i in range(length - 1, -1, -1):
        out[i] = ALPHABET[value & 31]
        value >>= 5
    return bytes(out)


def encode_ulid(ms: int, rand: int) -> bytes:
    return encode_int(ms, 10) + encode_int(rand, 16)


def decode_ulid(text: bytes | str) -> tuple[int, int]:
    """Return (milliseconds, random) of a ULID; raise RecordError if malformed."""
    if isinstance(text, str):
        text = text.encode("ascii", "replace")
    if len(text) != ULID_LEN:
        raise RecordError(f"ULID must be {ULID_LEN} characters, got {len(text)}")
    value = 0
    for c in text:
        d = _DECODE.get(c)
        if d is None:
            raise RecordError(f"invalid ULID character {chr(c)!r}")
        value = (value << 5) | d
    if value >> 128:
        raise RecordError("ULID overflows 128 bits")
    return value >> 80, value & ((1 << 80) - 1)


def normalize_ulid(text: bytes | str) -> bytes:
    ms, rand = decode_ulid(text)
    return encode_ulid(ms, rand)


def ulid_ms(ulid: bytes) -> int:
    return decode_ulid(ulid[:ULID_LEN])[0]


def ms_floor(ms: int) -> bytes:
    """The smallest ULID of millisecond ``ms``."""
    return encode_int(max(ms, 0), 10) + b"0" * 16


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def validate_topic(topic: bytes | str) -> bytes:
    if isinstance(topic, str):
        topic = topic.encode()
    if len(topic) > MAX_TOPIC_LEN or not TOPIC_RE.match(topic):
        raise RecordError(
            f"invalid topic {topic[:40]!r}: must match [A-Za-z0-9][A-Za-z0-9_-]* "
            f"and be at most {MAX_TOPIC_LEN} bytes"
        )
    return topic


class ULIDSource:
    """Monotonic ULIDs for one connection, stamped a batch at a time.

    The 80-bit random part is drawn once per source (top bit clear, so it
    cannot overflow) and then increments by one per record, across
    milliseconds too: ULIDs stay unique and increasing (the spec's monotonic
    mode within a millisecond), and consecutive ULIDs differ only in their
    last characters, which is what lets compressed store blocks shrink them
    to about a byte each. A new millisecond redraws only if the count would
    reach the top bit.
    """

    def __init__(self, clock: Callable[[], int] = now_ms) -> None:
        self._clock = clock
        self._ms = -1
        self._rand = 0

    def reserve(self, n: int) -> tuple[int, int]:
        """Reserve ``n`` consecutive ULIDs; return (ms, first random part)."""
        ms = self._clock()
        if ms > self._ms:
            if self._ms < 0 or self._rand + n >= 1 << 79:
                self._rand = int.from_bytes(os.urandom(10), "big") >> 1
            self._ms = ms
        first = self._rand
        self._rand += n
        return self._ms, first

    def headers(self, n: int, topic: bytes = DEFAULT_TOPIC) -> list[bytes]:
        """``n`` record headers ``ULID SP TOPIC SP`` in ascending order."""
        ms, first = self.reserve(n)
        return make_headers(ms, first, n, topic)


def make_headers(ms: int, first: int, n: int, topic: bytes) -> list[bytes]:
    tail = b" " + topic + b" "
    hi_first = first >> _LOW_BITS
    lo_first = first & _LOW_MASK
    if lo_first + n <= _LOW_MASK + 1:
        # Fast path: the high 50 bits are the same for every record of the batch.
        head = encode_int(ms, 10) + encode_int(hi_first, 10)
        t = _TRIPLES
        return [
            head + t[lo >> 15] + t[lo & 0x7FFF] + tail for lo in range(lo_first, lo_first + n)
        ]
    return [encode_ulid(ms, first + i) + tail for i in range(n)]


def stamp_lines(lines: list[bytes], headers: list[bytes]) -> bytes:
    """Join lines (without LF) with their headers into records, each ending in LF."""
    parts = [h + ln for h, ln in zip(headers, lines, strict=True)]
    parts.append(b"")
    return b"\n".join(parts)


def split_record(record: bytes) -> tuple[bytes, bytes, bytes]:
    """Split ``ULID SP TOPIC SP LINE`` (LF optional) into its three fields."""
    if record.endswith(b"\n"):
        record = record[:-1]
    if len(record) < ULID_LEN + 2 or record[ULID_LEN] != 0x20:
        raise RecordError("record too short or missing ULID separator")
    sp = record.find(b" ", ULID_LEN + 1)
    if sp < 0:
        raise RecordError("record missing topic separator")
    return record[:ULID_LEN], record[ULID_LEN + 1 : sp], record[sp + 1 :]
