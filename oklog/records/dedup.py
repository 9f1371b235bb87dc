"""Dropping copies of a record by its ULID (pure: no clock, no I/O).

A record is ``ULID SP TOPIC SP LINE LF``; two records with the same ULID are
copies of one (replicas, a member followed twice, a catch-up query overlapping
what a live stream already printed).

* :func:`drop_seen` keeps the records whose ULID is not in a set, and adds them to it.
* :class:`DedupWindow` remembers the ULIDs of the last ``window`` seconds (bounded
  in count) and drops copies of them from each batch; the caller gives the time.
"""

from __future__ import annotations

import collections
import re

LINE_ULID = re.compile(rb"^[0-9A-Z]{26}(?= )", re.M)  # the ULID of every record in a buffer
DEDUP_MAX = 1 << 16  # ULIDs a window remembers by default (bounds its memory)


def drop_seen(data: bytes, seen: set[bytes]) -> tuple[bytes, set[bytes]]:
    """The records of ``data`` (whole records) whose ULID is not in ``seen``, the
    first copy of each, and the ULIDs kept; ``seen`` gains those ULIDs."""
    fresh: set[bytes] = set()
    out = []
    for rec in data.split(b"\n")[:-1]:
        u = rec[:26]
        if u in seen:
            continue
        seen.add(u)
        fresh.add(u)
        out.append(rec)
    if not out:
        return b"", fresh
    out.append(b"")
    return b"\n".join(out), fresh


class DedupWindow:
    """ULIDs seen within the last ``window`` seconds, at most ``limit`` of them
    (beyond that the oldest are forgotten early). A batch is checked with set
    operations; only a batch holding a copy is split record by record. A window
    of 0 or less keeps everything."""

    def __init__(self, window: float, limit: int = DEDUP_MAX) -> None:
        self.window = window
        self.limit = limit
        self._batches: collections.deque[tuple[float, set[bytes]]] = collections.deque()
        self._count = 0

    def __len__(self) -> int:
        """ULIDs remembered now."""
        return self._count

    def filter(self, data: bytes, now: float) -> bytes:
        """``data`` (whole records) without the copies of records seen within the
        window before ``now`` (seconds, any monotonic clock) or earlier in ``data``."""
        if self.window <= 0:
            return data
        self._expire(now)
        ulids = LINE_ULID.findall(data)
        batch = set(ulids)
        if len(batch) == len(ulids) and all(seen.isdisjoint(batch) for _, seen in self._batches):
            self._remember(now, batch)
            return data
        out, fresh = drop_seen(data, set().union(*(s for _, s in self._batches)))
        self._remember(now, fresh)
        return out

    def _expire(self, now: float) -> None:
        while self._batches and (
            now - self._batches[0][0] > self.window or self._count > self.limit
        ):
            self._count -= len(self._batches.popleft()[1])

    def _remember(self, now: float, batch: set[bytes]) -> None:
        if batch:
            self._batches.append((now, batch))
            self._count += len(batch)
