"""Running a query over this node's store segments.

Planning is cheap and needs no scan: select segments by name, then binary-search
the ULIDs inside each to find the byte range of the time window. Execution splits
the work into units (a byte range of one segment, or a group of overlapping
segments that must be merged and deduplicated), scans them in worker threads in
parallel (hyperscan releases the GIL while it scans), and emits results in ULID
order as each unit finishes.

Compressed segments (oklog.records.segfile) are planned by their index: blocks
outside the time window, and blocks whose trigram bloom rules out the query's
literal (a substring, or a regex's required literal), are never read. A unit is
then a run of blocks cut at ULID keys; a worker decompresses each block (zstd
releases the GIL) and runs the same C scan over it.
"""

from __future__ import annotations

import collections
import logging
import mmap
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import trio
import zstandard

import oklog._fast as _fast
from oklog.fs import close_map
from oklog.net.http import ClientGone
from oklog.query.engine import Buffer, Matcher, Query, ScanMatcher, required_literal
from oklog.query.format import MODE_RAW, NATIVE_MODES, Formatter, apply_chunked
from oklog.query.params import QueryParams
from oklog.records import segfile
from oklog.records.merge import merge_dedup, record_start_at_or_after, seek
from oklog.records.record import ULID_LEN
from oklog.records.segfile import Block
from oklog.store.log import Segment, StoreLog, group_overlapping

log = logging.getLogger("oklog.query.plan")

UNIT_BYTES = 8 << 20  # a work unit scans at most this much of one segment
IN_FLIGHT = 4  # units scanned ahead of the one being sent
IN_FLIGHT_BYTES = 36 << 20  # and their records' bytes at most (two units always: one per core)
GROUP_BYTES = 4 << 20  # candidate records a regex verifies per call
MEMO_BYTES = 32 << 20  # scan outputs of blocks several units share, kept at most

Part = tuple[Segment, int, int]  # a byte range [start, end) of a plain segment
Pieces = Iterator[tuple[Buffer, int, int]]  # ranges of buffers to scan, in order
Emit = Callable[[bytes], Awaitable[None]]  # sends a piece of the answer


@dataclass
class Unit:
    parts: list[Part]  # byte ranges of plain segments
    blocks: list[tuple[Segment, list[Block]]] = field(default_factory=list)  # of compressed ones
    # ULID bounds [lo, hi) of a unit cut by keys (one with compressed parts):
    # plain ranges and blocks are cut to them when scanned. None: parts are exact.
    keys: tuple[bytes, bytes] | None = None

    @property
    def size(self) -> int:
        """Records' bytes the unit reads (whole blocks, which keys may cut further)."""
        return sum(hi - lo for _, lo, hi in self.parts) + sum(b.rawlen for _, blks in self.blocks for b in blks)


@dataclass
class Group:
    """Segments overlapping in time: plain ones as byte ranges, compressed ones
    as the blocks selected from their index."""

    parts: list[Part] = field(default_factory=list)
    blocks: list[tuple[Segment, list[Block]]] = field(default_factory=list)


class Unserved(ClientGone):
    """Raised after a scan that skipped damaged blocks: the response is left
    unfinished (as for a client gone), so the transfer is cut short and no
    client takes the answer for a whole one."""


@dataclass
class Plan:
    """What a query will scan. It holds a mapping of every segment it selected,
    so compaction may rename or remove the files meanwhile without the query
    losing or misreading records; ``close`` releases them."""

    lo: bytes = b""
    hi_excl: bytes = b"~"
    segments: int = 0
    bytes: int = 0  # records' bytes (uncompressed) in the selected ranges and blocks
    bufs: dict[str, Buffer] = field(default_factory=dict)  # by segment name
    # Byte ranges by group of overlapping segments; cut into units only when
    # the plan runs, so statistics (HEAD, -stats) touch no data pages.
    groups: list[Group] = field(default_factory=list)
    store: StoreLog | None = None
    blocks_skipped: int = 0  # blocks in the time window ruled out by their bloom
    damaged: int = 0  # blocks that failed to decompress (their segment is re-checked)
    unreadable: int = 0  # segments of the range not served: changed at rest, torn, bad index, quarantined
    quarantined: list[str] = field(default_factory=list)  # files in quarantine/ overlapping the range
    vanished: int = 0  # listed segments gone when opened (compacted away: their outputs were not listed)
    memo: _Memo | None = None  # blocks several units read (set with the units)
    _units: list[Unit] | None = None

    def unserved(self) -> str | None:
        """Why this node's answer lacks records of the range, or None. Known
        before streaming for segments (``unreadable``), after it for blocks."""
        damage: list[str] = []
        bad = self.unreadable - len(self.quarantined) - self.vanished  # (a returned plan counts vanished in unreadable)
        if bad > 0:
            damage.append(f"{bad} damaged segment(s) not served")
        if self.damaged:
            damage.append(f"{self.damaged} damaged block(s) skipped")
        parts = ["; ".join(damage) + " (the scrubber is checking them)"] if damage else []
        if self.vanished:
            parts.append(f"{self.vanished} segment(s) compacted away while the query was planned, again and again")
        if self.quarantined:
            names = ", ".join(self.quarantined[:3]) + (", ..." if len(self.quarantined) > 3 else "")
            parts.append(
                f"{len(self.quarantined)} quarantined segment(s) overlap the range, their records are"
                f" missing here until restored (oklog repair, then remove them from quarantine/): {names}"
            )
        return "; ".join(parts) if parts else None

    def check_served(self) -> None:
        """After the scan: blocks found damaged while reading raise Unserved,
        which cuts the transfer short (the status line has already gone)."""
        if self.damaged:
            log.warning("query: %s; the answer is cut short", self.unserved())
            raise Unserved(self.unserved())

    def found_damaged(self, seg: Segment, blocks: int) -> None:
        """Blocks of ``seg`` that failed to decompress while scanned."""
        self.damaged += blocks
        if self.store is not None:
            self.store.suspect(seg)  # the scrubber salvages the good blocks

    @property
    def units(self) -> list[Unit]:
        if self._units is None:
            self._units = []
            for g in self.groups:
                if g.blocks:
                    self._units.extend(_split_keyed(self.bufs, g, self.lo, self.hi_excl))
                elif len(g.parts) == 1:
                    seg, lo, hi = g.parts[0]
                    self._units.extend(_split(self.bufs[seg.name], seg, lo, hi))
                else:
                    self._units.extend(_split_group(self.bufs, g.parts))
            refs = collections.Counter((seg.name, b.offset) for u in self._units for seg, bs in u.blocks for b in bs)
            shared = {k: n for k, n in refs.items() if n > 1}
            self.memo = _Memo(shared) if shared else None
        return self._units

    def close(self) -> None:
        for buf in self.bufs.values():
            close_map(buf)
        self.bufs.clear()


BlockKey = tuple[str, int]  # a compressed block: its segment's name and its offset


class _Memo:
    """Scan outputs of blocks that several units read. Segments overlapping in
    time (one per topic, say) have blocks that straddle each other's cuts, so
    a block may fall in many units; each unit used to decompress and scan it
    again for its own keys (ten topics: every block ten times). Now the first
    unit to need such a block scans it whole, the others cut their keys from
    that output, and it is dropped when the last of them has. Bounded by
    MEMO_BYTES: beyond it a unit scans the block itself, as before."""

    def __init__(self, refs: dict[BlockKey, int]) -> None:
        self.refs = refs  # units still to read each shared block
        self.out: dict[BlockKey, tuple[object, list[bytes]]] = {}  # (variant, raw output)
        self.size = 0
        self.lock = threading.Lock()
        self.busy: dict[BlockKey, threading.Lock] = {}

    def take(self, key: BlockKey, variant: object, scan: Callable[[], list[bytes]]) -> list[bytes]:
        """The block's whole output for ``variant`` (the scan's needle and
        verifier), from the memo or ``scan``; counts one unit's read."""
        with self.lock:
            busy = self.busy.setdefault(key, threading.Lock())
        with busy:  # a unit beside this one waits for the same block's scan
            with self.lock:
                kept = self.out.get(key)
            if kept is not None and kept[0] == variant:
                out = kept[1]
            else:
                out = scan()
                n = sum(len(p) for p in out)
                with self.lock:
                    if kept is None and self.size + n <= MEMO_BYTES:
                        self.out[key] = (variant, out)
                        self.size += n
        with self.lock:
            self.refs[key] -= 1
            if self.refs[key] <= 0:
                if (gone := self.out.pop(key, None)) is not None:
                    self.size -= sum(len(p) for p in gone[1])
                self.busy.pop(key, None)
        return out


def _bounds(buf: Buffer, seg: Segment, params: QueryParams) -> tuple[int, int]:
    n = len(buf)
    lo = 0 if seg.first >= params.lo.decode() else seek(buf, params.lo, 0, n)
    hi = n if seg.last < params.hi_excl.decode("latin-1") else seek(buf, params.hi_excl, lo, n)
    return (lo, hi) if hi > lo else (lo, lo)


def _split(buf: Buffer, seg: Segment, lo: int, hi: int) -> list[Unit]:
    return [Unit([(seg, s, e)]) for s, e in _strides(buf, lo, hi)]


def _strides(buf: Buffer, lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """buf[lo:hi] as consecutive record-aligned ranges of about UNIT_BYTES."""
    s = lo
    while s < hi:
        e = record_start_at_or_after(buf, min(s + UNIT_BYTES, hi), hi)
        yield s, e
        s = e


def query_literal(q: Query) -> bytes | None:
    """A literal every matching line holds (for the blooms), or None."""
    if not q.q or q.icase:  # blooms hold the bytes as they are, not folded
        return None
    return required_literal(q.q) if q.regex else q.q


PLAN_AGAIN = 5  # plannings of a query while compaction keeps removing listed segments


def plan_query(store: StoreLog, params: QueryParams) -> Plan:
    """Segments and bytes the query would scan, and the units to scan them in.
    A listed segment gone when opened was compacted away after the listing,
    and its records are in outputs the listing may lack (they are written
    before the inputs go): the query is planned again from a new listing. If
    that keeps happening, the last plan counts them as unserved (never a
    silently shorter answer)."""
    for _ in range(PLAN_AGAIN - 1):
        plan = _plan_once(store, params)
        if not plan.vanished:
            return plan
        plan.close()
    plan = _plan_once(store, params)
    plan.unreadable += plan.vanished
    return plan


def _plan_once(store: StoreLog, params: QueryParams) -> Plan:
    plan = Plan(lo=params.lo, hi_excl=params.hi_excl, store=store)
    literal = query_literal(params.query)
    try:
        segs = store.overlapping(params.lo, params.hi_excl)
        if params.topic:  # other topics' segments are not even opened
            want = params.topic.decode("latin-1")
            segs = [s for s in segs if not s.topic or s.topic == want]
        plan.quarantined = store.quarantined_overlapping(params.lo, params.hi_excl, (params.topic or b"").decode("latin-1"))
        plan.unreadable += len(plan.quarantined)
        for group in group_overlapping(segs):
            g = Group()
            for seg in group:
                _add_segment(plan, store, g, seg, params, literal)
            if g.parts or g.blocks:
                plan.groups.append(g)
    except BaseException:
        plan.close()
        raise
    return plan


def _add_segment(
    plan: Plan, store: StoreLog, g: Group, seg: Segment, params: QueryParams, literal: bytes | None
) -> None:
    """Map ``seg`` and add what the query scans of it to ``g``; a segment that
    cannot be trusted is left out and counted (``plan.unreadable``)."""
    if store.modified(seg):
        plan.unreadable += 1
        return  # changed on disk: not trusted; quarantined by the scrubber
    try:
        buf: Buffer = store.fs.open_map(store.path(seg))
    except FileNotFoundError:
        plan.vanished += 1  # removed by compaction since the listing: its outputs may not be listed
        return
    try:
        _check_and_add(plan, store, g, seg, buf, params, literal)
    finally:
        _drop_touched(buf)


def _drop_touched(buf: Buffer) -> None:
    """Unmap the pages planning touched (the format check, the last LF, the
    time window's search): the kernel maps a whole large folio (up to 2 MiB)
    for one byte read, so a query over a store of many plain segments held
    that much per segment, as resident memory, for as long as it ran (a HEAD
    request that never scans too). The pages stay in the page cache; the scan
    maps what it reads."""
    if isinstance(buf, mmap.mmap) and not buf.closed:
        try:
            buf.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


def _check_and_add(
    plan: Plan, store: StoreLog, g: Group, seg: Segment, buf: Buffer, params: QueryParams, literal: bytes | None
) -> None:
    n = len(buf)
    if n != seg.size or not n:
        _reject(plan, store, seg, buf)
    elif segfile.is_compressed(buf[:4]):
        _add_blocks(plan, store, g, seg, buf, params, literal)
    elif buf[n - 1] != 0x0A:
        # Changed under us (truncated, torn): never serve it; the
        # scrubber quarantines it and salvages the good records.
        _reject(plan, store, seg, buf)
    else:
        lo, hi = _bounds(buf, seg, params)
        if hi <= lo:
            close_map(buf)
            return
        plan.bufs[seg.name] = buf
        g.parts.append((seg, lo, hi))
        plan.segments += 1
        plan.bytes += hi - lo


def _add_blocks(
    plan: Plan, store: StoreLog, g: Group, seg: Segment, buf: Buffer, params: QueryParams, literal: bytes | None
) -> None:
    """A compressed segment's blocks in the time window whose bloom allows
    the literal, from its index."""
    try:
        idx = store.index(seg, buf)
    except segfile.FormatError:
        idx = None
    if idx is None:
        _reject(plan, store, seg, buf)
        return
    lo_key, hi_key = params.lo[:ULID_LEN], params.hi_excl
    in_time = [b for b in idx.blocks if b.last >= lo_key and b.first < hi_key]
    chosen = [b for b in in_time if b.may_contain(literal)]
    plan.blocks_skipped += len(in_time) - len(chosen)
    if not chosen:
        close_map(buf)
        return
    plan.bufs[seg.name] = buf
    g.blocks.append((seg, chosen))
    plan.segments += 1
    plan.bytes += sum(b.rawlen for b in chosen)


def _reject(plan: Plan, store: StoreLog, seg: Segment, buf: Buffer) -> None:
    """A segment not served: unmapped, reported to the scrubber, counted."""
    close_map(buf)
    store.suspect(seg)
    plan.unreadable += 1


def _split_keyed(bufs: dict[str, Buffer], g: Group, lo: bytes, hi_excl: bytes) -> list[Unit]:
    """Units of a group with compressed segments, cut at ULID keys so that each
    holds about UNIT_BYTES of records: block starts (and, for plain segments,
    the ULIDs every UNIT_BYTES) are the candidate keys. A block that spans a
    key is read by both units, each cutting it to its own keys; copies of a
    record (one ULID) always fall in the same unit."""
    events: list[tuple[bytes, int]] = []
    for _seg, blks in g.blocks:
        events.extend((b.first, b.rawlen) for b in blks)
    for seg, s, e in g.parts:
        buf = bufs[seg.name]
        events.extend((bytes(buf[p : p + ULID_LEN]), q - p) for p, q in _strides(buf, s, e))
    cuts = _cuts(sorted(events), lo[:ULID_LEN], hi_excl)
    units = []
    pos = {seg.name: s for seg, s, _ in g.parts}
    for klo, khi in zip(cuts, cuts[1:], strict=False):
        if khi <= klo:
            continue
        blocks = [(seg, mine) for seg, blks in g.blocks if (mine := [b for b in blks if b.first < khi and b.last >= klo])]
        # plain ranges cut to the keys here (exact, bounded)
        parts = _cut_parts(bufs, g.parts, pos, khi if khi < hi_excl else None)
        if blocks or parts:
            units.append(Unit(parts, blocks, (max(klo, lo), khi)))
    return units


def _cuts(events: list[tuple[bytes, int]], lo_key: bytes, hi_excl: bytes) -> list[bytes]:
    """Keys from ``lo_key`` to ``hi_excl`` between which lie at most UNIT_BYTES
    of the (key, size) events, sorted by key (or one event, when it is larger):
    a cut falls before the event that would pass the bound, so a unit holds one
    compaction block (8 MiB), not two."""
    cuts = [lo_key]
    acc = 0
    for key, size in events:
        if acc and acc + size > UNIT_BYTES and key > cuts[-1]:
            cuts.append(key)
            acc = 0
        acc += size
    cuts.append(hi_excl)
    return cuts


def _cut_parts(bufs: dict[str, Buffer], parts: list[Part], pos: dict[str, int], key: bytes | None) -> list[Part]:
    """Each part from where the last cut left it (``pos``, advanced here) to
    its first record at or after ``key`` (None: to its end)."""
    out = []
    for seg, _, e in parts:
        start = pos[seg.name]
        end = e if key is None else seek(bufs[seg.name], key, start, e)
        if end > start:
            out.append((seg, start, end))
        pos[seg.name] = end
    return out


def run_unit(plan: Plan, matcher: ScanMatcher, unit: Unit, fmt: Formatter | None = None) -> bytes:
    """Scan one unit (in a worker thread); return its matching records in order,
    formatted by ``fmt`` if given."""
    return b"".join(run_unit_pieces(plan, matcher, unit, fmt))


def run_unit_pieces(plan: Plan, matcher: ScanMatcher, unit: Unit, fmt: Formatter | None = None) -> list[bytes]:
    """``run_unit``'s answer as record-aligned pieces, in order. Raw records, lines
    and ULID+line come straight out of the scan of a single segment range (no
    intermediate copy); a single compressed part gives a piece per block, not
    joined, so a worker holds the unit's answer once, not twice."""
    matcher = narrowed(matcher, unit)
    mode = NATIVE_MODES.get(fmt)
    if unit.keys is not None:
        return _run_keyed(plan, matcher, unit, fmt, mode)
    if mode is not None and len(unit.parts) == 1:
        seg, lo, hi = unit.parts[0]
        buf = plan.bufs[seg.name]
        out = matcher.scan_format(buf, lo, hi, mode)
        _release(buf, lo, hi)
        return [out]
    if mode is not None:  # merged and cut to the output in one pass
        return [_fast.merge(_scan_parts(plan, matcher, unit), mode)]
    return [apply_chunked(fmt, _scan_unit(plan, matcher, unit))]


def narrowed(matcher: ScanMatcher, unit: Unit) -> ScanMatcher:
    """``matcher`` for a unit whose segments are all of one topic: its topic
    filter is dropped when it is that topic."""
    topics = {seg.topic for seg, _, _ in unit.parts} | {seg.topic for seg, _ in unit.blocks}
    return matcher.without_topic(topics.pop()) if len(topics) == 1 else matcher


def _pieces(plan: Plan, unit: Unit) -> Iterator[Pieces]:
    """Per part of a keyed unit, an iterator of the (buffer, start, end) ranges
    to scan: plain ranges, and blocks decompressed one at a time (only one
    block of a part is held while it is scanned), cut to the unit's keys."""
    assert unit.keys is not None
    for seg, lo, hi in unit.parts:  # already cut to the keys
        yield iter([(plan.bufs[seg.name], lo, hi)])
    for seg, blocks in unit.blocks:
        yield _blocks(plan, unit, seg, blocks)


def _blocks(plan: Plan, unit: Unit, seg: Segment, blocks: list[Block]) -> Pieces:
    assert unit.keys is not None
    klo, khi = unit.keys
    buf = plan.bufs[seg.name]
    for blk in blocks:
        try:
            data = segfile.decompress_block(buf, blk)
        except (zstandard.ZstdError, segfile.FormatError):
            plan.found_damaged(seg, 1)
            continue
        finally:
            _release(buf, blk.offset, blk.offset + blk.clen)
        s, e = blk.within(data, klo, khi)
        if e > s:
            yield data, s, e


def _run_keyed(plan: Plan, matcher: ScanMatcher, unit: Unit, fmt: Formatter | None, mode: int | None) -> list[bytes]:
    n_parts = len(unit.parts) + len(unit.blocks)
    if isinstance(matcher, Matcher) and _fast.zscan_available():
        plain, needle = matcher.plain_needle()
        verify = matcher.c_verifier()
        hs_db: object = None
        if verify is not None:  # a regex the C scan decides, by its literal and Hyperscan
            plain, (needle, hs_db) = True, verify
        elif not plain:  # the C scan keeps the records holding the literal; the matcher decides
            needle = matcher.literal()

        def scan(seg: Segment, blocks: list[Block], m: int) -> list[bytes]:
            if plain:
                return _zscan_shared(plan, unit, seg, blocks, needle, m, hs_db)
            groups = _grouped(_zscan_shared(plan, unit, seg, blocks, needle, MODE_RAW))
            return [o for g in groups if (o := matcher.scan_format(g, 0, len(g), m))]

        if n_parts == 1 and not unit.parts and mode is not None:
            return scan(*unit.blocks[0], mode)
        outs = [matcher.scan_format(plan.bufs[seg.name], lo, hi, MODE_RAW) for seg, lo, hi in unit.parts]
        outs += [b"".join(scan(seg, blocks, MODE_RAW)) for seg, blocks in unit.blocks]
    elif n_parts == 1 and mode is not None:
        (pieces,) = list(_pieces(plan, unit))
        return [out for b, s, e in pieces if (out := matcher.scan_format(b, s, e, mode))]
    else:
        outs = [
            b"".join([matcher.scan_format(b, s, e, MODE_RAW) for b, s, e in pieces]) for pieces in _pieces(plan, unit)
        ]
    outs = [o for o in outs if o]
    if mode is not None:
        return [_fast.merge(outs, mode)] if outs else []
    if not outs:
        return []
    return [apply_chunked(fmt, outs[0] if len(outs) == 1 else merge_dedup(outs))]


def _grouped(pieces: list[bytes], limit: int = GROUP_BYTES) -> list[bytes]:
    """Record-aligned pieces joined into fewer of at most ``limit`` bytes (a
    bigger piece stays as it is): the matcher's steps per call (candidates,
    a hyperscan pass, picking the output) are paid per group, not per block."""
    out: list[bytes] = []
    run: list[bytes] = []
    size = 0
    for p in pieces:
        if run and size + len(p) > limit:
            out.append(run[0] if len(run) == 1 else b"".join(run))
            run, size = [], 0
        run.append(p)
        size += len(p)
    if run:
        out.append(run[0] if len(run) == 1 else b"".join(run))
    return out


def _zscan(
    plan: Plan, unit: Unit, seg: Segment, blocks: list[Block], needle: bytes | None, mode: int, verify: object = None
) -> list[bytes]:
    """The matching records of a compressed part of a keyed unit, cut to its
    keys, a piece per block with any: decompressed and scanned by one call of
    the C helper, off the GIL."""
    assert unit.keys is not None
    return _zscan_keys(plan, seg, blocks, needle, mode, *unit.keys, verify)


def _zscan_keys(
    plan: Plan, seg: Segment, blocks: list[Block], needle: bytes | None, mode: int, klo: bytes, khi: bytes, verify: object
) -> list[bytes]:
    buf = plan.bufs[seg.name]
    out, bad = _fast.zscan(buf, segfile.frame_table(blocks), needle, mode, klo, khi, verify)
    _release(buf, blocks[0].offset, blocks[-1].offset + blocks[-1].clen)
    if bad:
        plan.found_damaged(seg, len(bad))
    return out


def _zscan_shared(
    plan: Plan, unit: Unit, seg: Segment, blocks: list[Block], needle: bytes | None, mode: int, verify: object = None
) -> list[bytes]:
    """``_zscan``, with the blocks other units also read taken from the
    plan's memo (scanned once, whole) and cut to this unit's keys."""
    memo = plan.memo
    if memo is None or all((seg.name, b.offset) not in memo.refs for b in blocks):
        return _zscan(plan, unit, seg, blocks, needle, mode, verify)
    assert unit.keys is not None
    klo, khi = unit.keys
    out: list[bytes] = []
    run: list[Block] = []  # consecutive blocks only this unit reads: one call
    for blk in [*blocks, None]:
        if blk is not None and (seg.name, blk.offset) not in memo.refs:
            run.append(blk)
            continue
        if run:
            out += _zscan(plan, unit, seg, run, needle, mode, verify)
            run = []
        if blk is None:
            break
        whole = memo.take((seg.name, blk.offset), (needle, verify), partial(_zscan_whole, plan, seg, blk, needle, verify))
        for piece in whole:
            s, e = blk.within(piece, klo, khi)
            if e > s:
                out.append(piece[s:e] if mode == MODE_RAW else _fast.format(piece, s, e, mode))
    return out


def _zscan_whole(plan: Plan, seg: Segment, blk: Block, needle: bytes | None, verify: object) -> list[bytes]:
    """A block's matching records, all of them (raw: ULID, topic, line)."""
    return _zscan_keys(plan, seg, [blk], needle, MODE_RAW, b"0" * ULID_LEN, b"~", verify)


def _release(buf: Buffer, lo: int, hi: int) -> None:
    """Drop a scanned range's pages from this process (they stay in the page
    cache), so a big query does not inflate the node's resident memory."""
    if isinstance(buf, mmap.mmap):
        start = lo - lo % mmap.PAGESIZE
        try:
            buf.madvise(mmap.MADV_DONTNEED, start, hi - start)
        except (OSError, ValueError, AttributeError):
            pass


def _split_group(bufs: dict[str, Buffer], parts: list[Part]) -> list[Unit]:
    """Units for segments that overlap in time (topics kept in their own
    segments over one span, or copies not compacted yet): cut at the ULIDs found
    every UNIT_BYTES of every part, so no unit holds more than UNIT_BYTES of any
    part, units stay in ULID order, and copies of a record (one ULID) always
    fall in the same unit, where they are merged."""
    keys: set[bytes] = set()
    for seg, lo, hi in parts:
        buf = bufs[seg.name]
        keys.update(bytes(buf[e : e + ULID_LEN]) for _, e in _strides(buf, lo, hi) if e < hi)
    pos = {seg.name: lo for seg, lo, _ in parts}
    cuts: list[bytes | None] = [*sorted(keys), None]
    return [Unit(unit) for key in cuts if (unit := _cut_parts(bufs, parts, pos, key))]


def _scan_parts(plan: Plan, matcher: ScanMatcher, unit: Unit) -> list[bytes]:
    outs = []
    for seg, lo, hi in unit.parts:
        buf = plan.bufs[seg.name]
        outs.append(matcher.scan_format(buf, lo, hi, MODE_RAW))
        _release(buf, lo, hi)
    return outs


def _scan_unit(plan: Plan, matcher: ScanMatcher, unit: Unit) -> bytes:
    outs = _scan_parts(plan, matcher, unit)
    return outs[0] if len(outs) == 1 else merge_dedup(outs)


async def execute(
    store: StoreLog,
    matcher: ScanMatcher,
    plan: Plan,
    emit: Emit,
    limiter: trio.CapacityLimiter,
    in_flight: int = IN_FLIGHT,
    fmt: Formatter | None = None,
) -> None:
    """Scan the plan's units in parallel; emit each unit's result in order.
    Releases the plan's mappings when done."""
    try:
        await trio.to_thread.run_sync(lambda: plan.units, limiter=limiter)  # seeks touch pages: off the loop
        await _InOrder(matcher, plan, emit, limiter, fmt).run(in_flight)
    finally:
        plan.close()


class _InOrder:
    """Units scanned in worker threads, a few ahead of the one being sent;
    their answers emitted in unit order."""

    def __init__(
        self, matcher: ScanMatcher, plan: Plan, emit: Emit, limiter: trio.CapacityLimiter, fmt: Formatter | None
    ) -> None:
        self.matcher = matcher
        self.plan = plan
        self.emit = emit
        self.limiter = limiter
        self.fmt = fmt
        # each unit scanned ahead: its answer's channel and its records' bytes
        self.pending: collections.deque[tuple[trio.MemoryReceiveChannel[list[bytes]], int]] = collections.deque()
        self.pending_bytes = 0

    async def run(self, in_flight: int) -> None:
        """At most ``in_flight`` units ahead, and at most IN_FLIGHT_BYTES of their
        records beyond two units (a unit of large compressed blocks reads more)."""
        async with trio.open_nursery() as nursery:
            for unit in self.plan.units:
                size = unit.size
                while len(self.pending) >= in_flight or (
                    len(self.pending) >= 2 and self.pending_bytes + size > IN_FLIGHT_BYTES
                ):
                    await self._drain_one()
                tx: trio.MemorySendChannel[list[bytes]]
                rx: trio.MemoryReceiveChannel[list[bytes]]
                tx, rx = trio.open_memory_channel(1)
                nursery.start_soon(self._work, unit, tx)
                self.pending.append((rx, size))
                self.pending_bytes += size
            while self.pending:
                await self._drain_one()

    async def _work(self, unit: Unit, tx: trio.MemorySendChannel[list[bytes]]) -> None:
        pieces = await trio.to_thread.run_sync(
            run_unit_pieces, self.plan, self.matcher, unit, self.fmt, limiter=self.limiter
        )
        await tx.send(pieces)

    async def _drain_one(self) -> None:
        rx, size = self.pending.popleft()
        self.pending_bytes -= size
        async with rx:
            pieces = await rx.receive()
        pieces.reverse()
        while pieces:  # each piece let go once sent
            data = pieces.pop()
            if data:
                await self.emit(data)
            del data
