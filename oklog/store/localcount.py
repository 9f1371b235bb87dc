"""Counting a query's matches in this node's own store without sending them
anywhere: totals and time buckets straight out of the scan (``_fast.count``).

Used by ``/store/hits`` when this node's store is the only member answering:
every record then comes from one store, whose scan already keeps a record
held by two of its segments once (overlapping segments are merged by ULID in
the same unit, as for a query), so counting what the scan keeps is exactly
what merging ULID streams would count. With more than one member answering,
copies of a record may sit on two nodes and only their ULIDs tell them apart:
those queries keep the ULID streams (oklog.query.hits).

A query matching every record (``-hist`` of a range) takes each whole block
of the range from the block's index entry, which holds its record count: no
block is read but the two at the ends of the range (and those spanning a
bucket boundary). Such a count is the count written: a block damaged at rest
since is counted as written, not reported (the scrubber finds it; a query
reading it reports it).
A plain substring query (any ``-q`` terms, ``-v`` terms, ``-i``) is counted
by the C kernel over each decompressed block, with no copy of the matches;
anything else (a regex, ``-where``, a topic filter over mixed segments, a
merged group of overlapping segments) is scanned into records as a query is,
and those records are counted by the same kernel.
"""

from __future__ import annotations

import collections
import time

import trio

import oklog._fast as _fast
from oklog.query.count import Tally
from oklog.query.engine import Buffer, I64Array, Matcher, ScanMatcher
from oklog.query.format import MODE_RAW
from oklog.query.plan import Plan, Unit, _blocks, _pieces, _release, narrowed, run_unit_pieces
from oklog.records import segfile
from oklog.records.record import ULID_LEN
from oklog.records.segfile import Block
from oklog.store.log import Segment

MAX_PIECE_BUCKETS = 1 << 20  # a piece spanning more buckets is tallied from its ULIDs
COUNT_UNIT_BYTES = 32 << 20  # records' bytes a counting unit joins (see coarse)
SLICE_S = 0.05  # seconds a counting worker keeps its token (see count_plan)
_ALPHABET = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
Kernel = tuple[list[bytes], list[bytes], bool]  # _fast.count's terms, -v terms, icase
MATCHED: Kernel = ([], [], False)  # records already matched: count them all


def _ms(head: bytes) -> int:
    """The time of a ULID's first 10 characters, as the C kernel reads it (other bytes: 0)."""
    ms = 0
    for c in head[:10].ljust(10, b"0"):
        ms = (ms << 5) | _VALUE.get(c, 0)
    return ms


def kernel_terms(matcher: ScanMatcher) -> Kernel | None:
    """``(terms, nots, icase)`` when the matcher is plain substrings the kernel
    decides by itself, else None."""
    from oklog.query.terms import TermsMatcher

    must: list[ScanMatcher]
    nots: list[ScanMatcher]
    if isinstance(matcher, TermsMatcher):
        if matcher.where is not None:
            return None
        must, nots = [matcher.first, *matcher.must], list(matcher.must_not)
    else:
        must, nots = [matcher], []
    folds: set[bool] = set()
    terms: list[bytes] = []
    excl: list[bytes] = []
    for i, m in enumerate([*must, *nots]):
        if not isinstance(m, Matcher):
            return None
        if m.plain_needle() == (True, None):  # every record, no topic filter
            if i >= len(must):
                return None  # never built (-v of nothing); not decided here
            continue
        sub = m.substring()
        if sub is None:
            return None
        folds.add(sub[1])
        (terms if i < len(must) else excl).append(sub[0])
    if len(folds) > 1 or len(terms) > 64 or len(excl) > 64:
        return None
    return terms, excl, bool(folds and folds.pop())


class _Counts:
    """One unit's count: a total and sparse buckets (ms → count)."""

    def __init__(self, step_ms: int) -> None:
        self.step = step_ms
        self.total = 0
        self.buckets: dict[int, int] = {}

    def whole(self, first: bytes, last: bytes, records: int) -> bool:
        """Count ``records`` records from ULID first to last (all matching) if
        they fall in one bucket; False if they do not."""
        if self.step:
            key = _ms(first) // self.step * self.step
            if _ms(last) // self.step * self.step != key:
                return False
            if records:
                self.buckets[key] = self.buckets.get(key, 0) + records
        self.total += records
        return True

    def records(self, buf: Buffer, start: int, end: int, kernel: Kernel) -> None:
        """Count the matching records of buf[start:end] (``kernel``: the
        matcher's terms, or MATCHED for records already matched)."""
        terms, nots, icase = kernel
        if end <= start:
            return
        if not self.step:
            self.total += _fast.count(buf, start, end, terms, nots, icase, 0, 0, None)[0]
            return
        import numpy as np

        step = self.step
        last = max(start, buf.rfind(b"\n", start, end - 1) + 1)
        origin = _ms(_head(buf, start, end)) // step * step
        nb = (_ms(_head(buf, last, end)) - origin) // step + 1
        if last == start:  # one record: one bucket, whatever its ULID holds
            matched = _fast.count(buf, start, end, terms, nots, icase, 0, 0, None)[0]
            if matched:
                self.total += matched
                self.buckets[origin] = self.buckets.get(origin, 0) + matched
            return
        if 0 < nb <= MAX_PIECE_BUCKETS:
            counts = np.zeros(nb, dtype=np.int64)
            matched, outside = _fast.count(buf, start, end, terms, nots, icase, step, origin, counts)
            if not outside:
                self.add(matched, origin, counts)
                return
        # records out of ULID order (never written by oklog) or a span of too
        # many buckets: each half on its own, down to single records at worst
        mid = buf.find(b"\n", (start + end) // 2, end) + 1
        if mid <= start or mid >= end:
            mid = last
        self.records(buf, start, mid, kernel)
        self.records(buf, mid, end, kernel)


    def add(self, matched: int, origin: int, counts: I64Array | None) -> None:
        """Add ``matched`` matches, bucketed in ``counts`` (bucket k starting
        at origin + k * step), to this count."""
        import numpy as np

        self.total += matched
        if counts is None:
            return
        for k in np.flatnonzero(counts).tolist():
            key = origin + k * self.step
            self.buckets[key] = self.buckets.get(key, 0) + int(counts[k])


def _head(buf: Buffer, pos: int, end: int) -> bytes:
    """The ULID time characters of the record at pos, as the kernel reads
    them: up to its LF, the rest reading as 0."""
    return bytes(buf[pos : min(pos + 10, end)]).split(b"\n", 1)[0]


def count_unit(plan: Plan, matcher: ScanMatcher, unit: Unit, step_ms: int) -> _Counts:
    """Count one unit's matches (in a worker thread)."""
    out = _Counts(step_ms)
    matcher = narrowed(matcher, unit)
    kernel = kernel_terms(matcher)
    merged = len(unit.parts) + len(unit.blocks) != 1  # overlapping segments: merged, copies dropped
    in_c = kernel is None and unit.blocks and isinstance(matcher, Matcher) and matcher.c_verifier() is not None
    if merged or in_c:  # (a regex the C scan decides: its matches, decided off the GIL, are counted)
        for piece in run_unit_pieces(plan, matcher, unit, None):
            out.records(piece, 0, len(piece), MATCHED)
        return out
    if unit.keys is not None and unit.blocks and kernel is not None:
        seg, blocks = unit.blocks[0]
        if not kernel[0] and not kernel[1]:
            blocks = _unread(out, unit, blocks)
        if _zcount(plan, unit, seg, blocks, kernel, out):
            return out
        ranges = _blocks(plan, unit, seg, blocks)
    elif unit.keys is not None:
        (ranges,) = list(_pieces(plan, unit))
    else:
        seg, lo, hi = unit.parts[0]
        ranges = iter([(plan.bufs[seg.name], lo, hi)])
    for buf, s, e in ranges:
        if kernel is not None:
            out.records(buf, s, e, kernel)
        else:
            got = matcher.scan_format(buf, s, e, MODE_RAW)
            out.records(got, 0, len(got), MATCHED)
        if unit.keys is None:
            _release(buf, s, e)
    return out


def _unread(out: _Counts, unit: Unit, blocks: list[Block]) -> list[Block]:
    """When every record counts: whole blocks inside the unit's keys (and one
    bucket) are counted from their index entry, without reading them; the
    blocks left to read."""
    assert unit.keys is not None
    klo, khi = unit.keys
    return [
        blk
        for blk in blocks
        if not (blk.first >= klo and blk.last < khi[:ULID_LEN] and out.whole(blk.first, blk.last, blk.records))
    ]


def _zcount(plan: Plan, unit: Unit, seg: Segment, blocks: list[Block], kernel: Kernel, out: _Counts) -> bool:
    """Count the matches of a compressed part's blocks in one call of the C
    helper, which decompresses them one at a time into one buffer and cuts
    them to the unit's keys, off the GIL, copying nothing out. False (nothing
    counted) without libzstd, or when a match falls outside the buckets its
    blocks' first and last ULIDs span (records out of ULID order, never
    written by oklog): the caller then counts block by block."""
    assert unit.keys is not None
    if not blocks:
        return True
    if not _fast.zscan_available():
        return False
    terms, nots, icase = kernel
    step, origin, counts = out.step, 0, None
    if step:
        import numpy as np

        origin = _ms(blocks[0].first) // step * step
        nb = (_ms(blocks[-1].last) - origin) // step + 1
        if not 0 < nb <= MAX_PIECE_BUCKETS:
            return False
        counts = np.zeros(nb, dtype=np.int64)
    buf = plan.bufs[seg.name]
    klo, khi = unit.keys
    frames = segfile.frame_table(blocks)
    matched, outside, bad = _fast.zcount(buf, frames, terms, nots, icase, klo, khi, step, origin, counts)
    _release(buf, blocks[0].offset, blocks[-1].offset + blocks[-1].clen)
    if outside:
        return False
    if bad:
        plan.found_damaged(seg, len(bad))
    out.add(matched, origin, counts)
    return True


def coarse(units: list[Unit], limit: int = COUNT_UNIT_BYTES) -> list[Unit]:
    """Consecutive units of one compressed segment joined, up to ``limit``
    bytes of records: counting holds one block at a time, so a larger unit
    costs no memory, and fewer units are fewer thread hand-offs. A block two
    units both read (it spans their key) is read once."""
    out: list[Unit] = []
    for u in units:
        prev = out[-1] if out else None
        if (
            prev is None
            or u.parts
            or prev.parts
            or len(u.blocks) != 1
            or len(prev.blocks) != 1
            or prev.keys is None
            or u.keys is None
            or prev.keys[1] != u.keys[0]
            or prev.blocks[0][0] is not u.blocks[0][0]
            or prev.size + u.size > limit
        ):
            out.append(u)
            continue
        seg, mine = prev.blocks[0]
        seen = {b.offset for b in mine}
        joined = mine + [b for b in u.blocks[0][1] if b.offset not in seen]
        out[-1] = Unit([], [(seg, joined)], (prev.keys[0], u.keys[1]))
    return out


async def count_plan(plan: Plan, matcher: ScanMatcher, tally: Tally, limiter: trio.CapacityLimiter) -> None:
    """Add the plan's matches to ``tally``. One worker per limiter token takes
    units from a shared queue and counts them for a time slice (SLICE_S) in
    one thread hand-off, then gives its token back (other queries get their
    turn; a cancelled query stops within a slice), rather than one hand-off
    through the event loop per unit."""
    units = await trio.to_thread.run_sync(lambda: coarse(plan.units, COUNT_UNIT_BYTES), limiter=limiter)  # seeks touch pages
    todo = collections.deque(units)  # popleft is atomic: the workers share it without a lock
    results: list[_Counts] = []

    def count_slice() -> list[_Counts]:
        out: list[_Counts] = []
        end = time.monotonic() + SLICE_S
        while not out or time.monotonic() < end:
            try:
                unit = todo.popleft()
            except IndexError:
                break
            out.append(count_unit(plan, matcher, unit, tally.step_ms))
        return out

    async def worker() -> None:
        while todo:
            results.extend(await trio.to_thread.run_sync(count_slice, limiter=limiter))

    async with trio.open_nursery() as nursery:
        for _ in range(min(len(units), max(1, int(limiter.total_tokens)))):
            nursery.start_soon(worker)
    for r in results:
        tally.total += r.total
        for key, c in r.buckets.items():
            tally.buckets[key] = tally.buckets.get(key, 0) + c
