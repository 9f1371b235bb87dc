"""Event time: stamping records with the time the producer says they happened.

Push protocols carry each event's time (Loki's nanosecond timestamps, OTLP's
``time_unix_nano``, Elasticsearch's ``@timestamp``, Fluent's event time). A
record's ULID is that time when it lies inside a window around now
(``EventWindow``: by default one hour back, five minutes ahead); otherwise the
record is stamped with arrival time and the event time is written at the front
of its line (RFC 3339, nanoseconds) so it is not lost.

The window bounds how far a record can land behind the store's newest data: an
old ULID still sorts into the right place (segments are sorted per batch here;
the store merges overlapping segments at query time and compaction), but a
shipper replaying last month must not scatter records over ranges retention
is about to delete, nor put records in the future. Pure: no I/O.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from oklog.record import encode_ulid, now_ms

DEFAULT_PAST = 3600.0
DEFAULT_FUTURE = 300.0


@dataclass(frozen=True)
class EventWindow:
    past: float = DEFAULT_PAST  # seconds before now an event time may be
    future: float = DEFAULT_FUTURE  # seconds after now

    def bounds_ms(self, now: int) -> tuple[int, int]:
        return now - int(self.past * 1000), now + int(self.future * 1000)


def rfc3339_ns(t_ns: int) -> str:
    """``2026-11-30T16:40:25.123456789Z``; the bare integer if out of datetime's range."""
    sec, ns = divmod(t_ns, 1_000_000_000)
    try:
        dt = datetime.fromtimestamp(sec, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return str(t_ns)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"


class Sequencer:
    """Random parts of ULIDs per millisecond, shared by every request of the
    node: within one millisecond each ULID is the previous one plus one, so
    records stamped with the same event time keep the order they arrived in,
    across requests and connections too. A fresh millisecond starts at a random
    value with its top bit clear (no overflow). Remembers the last ``size``
    milliseconds used; one forgotten and seen again starts a new random run."""

    def __init__(self, size: int = 1 << 16) -> None:
        self.size = size
        self._next: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()

    def reserve(self, ms: int, n: int = 1) -> int:
        with self._lock:
            rand = self._next.pop(ms, None)
            if rand is None:
                rand = int.from_bytes(os.urandom(10), "big") >> 1
                if len(self._next) >= self.size:
                    self._next.popitem(last=False)
            self._next[ms] = rand + n
            return rand


SEQUENCER = Sequencer()


class Stamper:
    """ULIDs for one batch: event-time or arrival milliseconds."""

    def __init__(self, window: EventWindow, now: int | None = None, seq: Sequencer = SEQUENCER) -> None:
        self.now = now_ms() if now is None else now
        self.lo, self.hi = window.bounds_ms(self.now)
        self.seq = seq
        self.event_stamped = 0  # records whose ULID is their event time
        self.outside = 0  # records with an event time outside the window

    def ulid(self, ms: int) -> bytes:
        return encode_ulid(ms, self.seq.reserve(ms))

    def place(self, t_ns: int | None, line: bytes, time_in_line: bool) -> tuple[int, bytes]:
        """(ULID milliseconds, line) of a record with event time ``t_ns``."""
        if t_ns is None:
            return self.now, line
        ms = t_ns // 1_000_000
        if self.lo <= ms <= self.hi:
            self.event_stamped += 1
            return ms, line
        self.outside += 1
        if time_in_line:
            return self.now, line
        return self.now, rfc3339_ns(t_ns).encode() + b" " + line
