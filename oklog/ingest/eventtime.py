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

from oklog.records.record import ULID_LEN, make_headers, now_ms

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

    def stamp_group(
        self,
        topic: bytes,
        lines: list[bytes],
        times: list[int | None] | None,
        time_in_line: bool,
        limit: int,
        firsts: list[bytes] | None = None,
    ) -> tuple[list[bytes], int]:
        """Records (``ULID SP TOPIC SP LINE``, no LF) of one topic's lines, in the
        order sent, and the number of splits of lines over ``limit``. Runs of one
        millisecond are stamped at once. ``firsts`` receives each line's (first)
        ULID."""
        n = len(lines)
        if times is None:
            ms_list = [self.now] * n
        else:
            lo, hi, now = self.lo, self.hi, self.now
            ms_list = [now if t is None else t // 1_000_000 for t in times]
            outside = [i for i, ms in enumerate(ms_list) if not lo <= ms <= hi]
            inside = sum(1 for t in times if t is not None) - len(outside)
            self.event_stamped += inside
            if outside:
                self.outside += len(outside)
                lines = list(lines)
                for i in outside:
                    ms_list[i] = now
                    if not time_in_line:
                        lines[i] = rfc3339_ns(times[i]).encode() + b" " + lines[i]  # type: ignore[arg-type]
        split = 0
        if any(len(ln) > limit for ln in lines):
            pieces_ms: list[int] = []
            pieces: list[bytes] = []
            starts: list[int] = []
            for ms, ln in zip(ms_list, lines, strict=True):
                starts.append(len(pieces))
                cut = [ln[j : j + limit] for j in range(0, len(ln), limit)] or [b""]
                split += len(cut) - 1
                pieces += cut
                pieces_ms += [ms] * len(cut)
            lines, ms_list = pieces, pieces_ms
        else:
            starts = list(range(n)) if firsts is not None else []
        heads: list[bytes] = []
        i, total = 0, len(lines)
        while i < total:
            ms = ms_list[i]
            j = i + 1
            while j < total and ms_list[j] == ms:
                j += 1
            heads += make_headers(ms, self.seq.reserve(ms, j - i), j - i, topic)
            i = j
        if firsts is not None:
            firsts += [heads[k][:ULID_LEN] for k in starts]
        return [h + ln for h, ln in zip(heads, lines, strict=True)], split
