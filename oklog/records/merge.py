"""Merging sorted record buffers and searching them by ULID. Pure: works on
bytes-like objects holding records ``ULID SP TOPIC SP LINE LF`` in ULID order.

Used by the store (consumer merge, compaction, repair) and by queries (a
member's answers merged on the coordinator); duplicates of a ULID are dropped.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence

import oklog._fast as _fast
from oklog.records.buf import Records
from oklog.records.record import ULID_LEN

# -- time bounds ------------------------------------------------------------------


def record_start_at_or_after(buf: Records, pos: int, end: int) -> int:
    if pos <= 0:
        return 0
    i = buf.find(b"\n", pos - 1, end)
    return end if i < 0 else i + 1


def seek(buf: Records, key: bytes, lo: int = 0, hi: int | None = None) -> int:
    """Offset of the first record in buf[lo:hi] whose ULID is >= key (or hi).

    Binary search over byte offsets: each probe finds the next record start with
    one ``find``, so a lookup touches O(log n) pages of a mapped segment.
    """
    if hi is None:
        hi = len(buf)
    klen = len(key)
    while lo < hi:
        mid = (lo + hi) // 2
        s = record_start_at_or_after(buf, mid, hi)
        if s >= hi:
            # No record starts in [mid, hi): decide the record at lo.
            if buf[lo : lo + ULID_LEN] >= key[:klen]:
                return lo
            lo = record_start_at_or_after(buf, lo + 1, hi)
            continue
        if buf[s : s + ULID_LEN] < key:
            lo = record_start_at_or_after(buf, s + 1, hi)
        else:
            hi = s
    return lo


def gallop(buf: Records, key: bytes, lo: int, hi: int) -> int:
    """Like ``seek`` but fast when the answer is near ``lo``: probes at growing
    distances first, then binary-searches the last interval."""
    if lo >= hi or buf[lo : lo + ULID_LEN] >= key:
        return lo
    prev = lo  # a record start whose ULID is < key
    step = 512
    while True:
        s = record_start_at_or_after(buf, prev + step, hi)
        if s >= hi:
            return seek(buf, key, prev, hi)
        if buf[s : s + ULID_LEN] >= key:
            return seek(buf, key, prev, s)
        prev = s
        step *= 4


Consumed = Callable[[int, int], object]


def _pieces(run: Records, p: int, stop: int, i: int, max_piece: int, consumed: Consumed | None) -> Iterator[bytes | bytearray]:
    """run[p:stop] as slices of at most ``max_piece`` bytes of whole records."""
    while stop - p > max_piece:
        cut = record_start_at_or_after(run, p + max_piece, stop)
        yield run[p:cut]
        p = cut
        if consumed is not None:
            consumed(i, p)
    if stop > p:
        yield run[p:stop]
    if consumed is not None:
        consumed(i, stop)


def iter_merge(runs: Sequence[Records], max_piece: int = 4 << 20, consumed: Consumed | None = None) -> Iterator[bytes | bytearray]:
    """Merge sorted record buffers into ULID order, dropping duplicate ULIDs.

    Works a block at a time: the run with the smallest head contributes every
    record below the next run's head in one slice, found by galloping search.
    Records stamped in one batch on one connection are consecutive ULIDs, so
    blocks are long and the Python work is per block, not per record. Returns
    slices of at most ``max_piece`` bytes (each whole records) to join or write.
    ``consumed(i, offset)``, if given, is told how far run ``i`` has been read.
    """
    heap: list[tuple[bytes, int]] = []
    pos = [0] * len(runs)
    ends = [len(r) for r in runs]
    for i, r in enumerate(runs):
        if ends[i]:
            heap.append((bytes(r[:ULID_LEN]), i))
    heapq.heapify(heap)
    while heap:
        key, i = heapq.heappop(heap)
        run, p, end = runs[i], pos[i], ends[i]
        if not heap:
            yield from _pieces(run, p, end, i, max_piece, consumed)
            break
        nxt, j = heap[0]
        if nxt == key:
            # The same record heads two runs: drop the identical stretch from this one.
            stop = p + _common_records(run, p, end, runs[j], pos[j], ends[j])
            pos[i] = stop
            if stop < end:
                heapq.heappush(heap, (bytes(run[stop : stop + ULID_LEN]), i))
            continue
        stop = gallop(run, nxt, p, end)
        yield from _pieces(run, p, stop, i, max_piece, consumed)
        if stop < end and run[stop : stop + ULID_LEN] == nxt:
            stop = record_start_at_or_after(run, stop + 1, end)  # duplicate of nxt
        pos[i] = stop
        if stop < end:
            heapq.heappush(heap, (bytes(run[stop : stop + ULID_LEN]), i))


def _common_records(a: Records, p: int, a_end: int, b: Records, q: int, b_end: int) -> int:
    """Bytes of whole records that a[p:] and b[q:] share at their starts (>= 1 record)."""
    limit = min(a_end - p, b_end - q)
    good, n = 0, 4096
    while n <= limit and a[p : p + n] == b[q : q + n]:
        good, n = n, n * 2
    hi = min(n, limit)
    while good < hi:  # binary search the longest equal prefix in (good, hi]
        mid = (good + hi + 1) // 2
        if a[p : p + mid] == b[q : q + mid]:
            good = mid
        else:
            hi = mid - 1
    cut = a.rfind(b"\n", p, p + good) + 1
    if cut <= p:  # less than one whole record in common: skip the head record
        return record_start_at_or_after(a, p + 1, a_end) - p
    return cut - p


def merge_dedup(chunks: Sequence[Records]) -> bytes:
    """Merge several sorted record buffers into one, dropping duplicate ULIDs."""
    runs = [c for c in chunks if c]
    if len(runs) == 1:
        return bytes(runs[0])
    out: bytes = _fast.merge(runs, 0)
    return out  # the C loop: interleaved runs cost no Python per record
