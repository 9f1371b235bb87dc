"""Counting matches: totals and per-time-bucket histograms. Pure.

numpy is imported where it is used: ``oklog query -count`` only renders.

A node turns its matching records into ``ULID LF`` lines (27 bytes each, in
ULID order) with one vectorised pass over the whole buffer; the coordinator
merges the members' ULID streams, dropping the copies replicas hold (the same
ULID), and tallies what is left. A record's time is its ULID's 48-bit
millisecond prefix, decoded here for a whole buffer at once.
"""

from __future__ import annotations

import json
import time
from functools import cache
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from oklog.query.engine import Buffer

ULID_LINE = 27  # 26 ULID characters and LF
_ALPHABET = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Per value of a ``-by`` field: [count, bytes, first ULID, last ULID] (a list:
# updated in place for every record, read by position).
ByValue = list[Any]


class Bucket(TypedDict):
    """A histogram bucket as a count answer carries it."""

    time: str  # RFC 3339, UTC
    ms: int  # the bucket's start, Unix milliseconds
    count: int


@cache
def _tables() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    import numpy as np

    decode = np.zeros(256, dtype=np.int64)
    for i, c in enumerate(_ALPHABET):
        decode[c] = i
        decode[ord(chr(c).lower())] = i
    return decode, np.array([32**k for k in range(9, -1, -1)], dtype=np.int64)


MAX_BUCKETS = 100_000  # buckets filled in for display between the first and last non-empty one


def ulid_lines(records: Buffer) -> bytes:
    """``ULID LF`` for every record of a buffer of whole records (``ULID SP ...
    LF``), in the same order."""
    if not records:
        return b""
    import numpy as np

    arr = np.frombuffer(records, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    starts = np.empty(len(ends), dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    out = np.empty((len(ends), ULID_LINE), dtype=np.uint8)
    out[:, :26] = arr[starts[:, None] + np.arange(26)]
    out[:, 26] = 10
    return out.tobytes()


def ulid_ms(lines: Buffer) -> npt.NDArray[np.int64]:
    """Milliseconds of every ``ULID LF`` line of a buffer (a numpy array)."""
    import numpy as np

    n = len(lines) // ULID_LINE
    if not n:
        return np.zeros(0, dtype=np.int64)
    arr = np.frombuffer(lines, dtype=np.uint8, count=n * ULID_LINE).reshape(n, ULID_LINE)
    decode, weights = _tables()
    ms: npt.NDArray[np.int64] = decode[arr[:, :10]] @ weights
    return ms


class Tally:
    """A running count of ``ULID LF`` lines, bucketed by ``step_ms`` (0: total only)."""

    def __init__(self, step_ms: int = 0) -> None:
        if step_ms < 0:
            raise ValueError("step must be positive")
        self.step_ms = step_ms
        self.total = 0
        self.buckets: dict[int, int] = {}

    def add(self, lines: Buffer) -> None:
        if len(lines) % ULID_LINE:
            raise ValueError("not a whole number of ULID lines")
        n = len(lines) // ULID_LINE
        self.total += n
        if not n or not self.step_ms:
            return
        import numpy as np

        keys = ulid_ms(lines) // self.step_ms * self.step_ms
        uniq, counts = np.unique(keys, return_counts=True)
        for k, c in zip(uniq.tolist(), counts.tolist(), strict=True):
            self.buckets[k] = self.buckets.get(k, 0) + c

    def add_by(self, lines: bytes, values: dict[bytes, ByValue]) -> None:
        """``ULID SP SIZE SP VALUE LF`` lines (VALUE a JSON string or null),
        in ULID order: per value ``[count, bytes, first ULID, last ULID]``."""
        for line in lines.split(b"\n")[:-1]:
            size, v = line[27:].split(b" ", 1)
            ulid = line[:26]
            got = values.get(v)
            if got is None:
                values[v] = [1, int(size), ulid, ulid]
            else:
                got[0] += 1
                got[1] += int(size)
                got[3] = ulid
            self.total += 1

    def as_dict(self) -> dict[str, object]:
        """The count answer's body: total, and step_ms and buckets for a histogram."""
        out: dict[str, object] = {"total": self.total}
        if self.step_ms:
            out["step_ms"] = self.step_ms
            out["buckets"] = [
                Bucket(time=rfc3339(k, self.step_ms), ms=k, count=c) for k, c in sorted(self.buckets.items())
            ]
        return out


def rfc3339(ms: int, step_ms: int = 1) -> str:
    sec, rem = divmod(ms, 1000)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{head}.{rem:03d}Z" if step_ms % 1000 or rem else head + "Z"


def filled(buckets: list[Bucket], step_ms: int) -> list[tuple[str, int]]:
    """``(time, count)`` for every bucket from the first non-empty one to the
    last, empty ones included (as a chart shows them), at most MAX_BUCKETS."""
    if not buckets:
        return []
    have = {b["ms"]: b["count"] for b in buckets}
    first, last = buckets[0]["ms"], buckets[-1]["ms"]
    if (last - first) // step_ms >= MAX_BUCKETS:
        return [(b["time"], b["count"]) for b in buckets]
    return [(rfc3339(k, step_ms), have.get(k, 0)) for k in range(first, last + 1, step_ms)]


def render_tsv(rows: list[tuple[str, int]]) -> str:
    return "".join(f"{t}\t{c}\n" for t, c in rows)


def render_bars(rows: list[tuple[str, int]], width: int = 80) -> str:
    """One line per bucket: time, count, and a bar scaled to the largest count."""
    if not rows:
        return ""
    top = max(c for _, c in rows) or 1
    tw = max(len(t) for t, _ in rows)
    cw = max(len(str(c)) for _, c in rows)
    room = max(10, width - tw - cw - 3)
    out = []
    for t, c in rows:
        eighths = round(c * room * 8 / top)
        bar = "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]
        if c and not bar:
            bar = "▏"
        out.append(f"{t} {c:>{cw}} {bar}".rstrip() + "\n")
    return "".join(out)


def dumps(obj: dict[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"))
