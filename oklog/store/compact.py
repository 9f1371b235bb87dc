"""Store maintenance: compaction and retention, continuous and bounded.

Compaction, decided from segment names and sizes alone (``plan``, pure):

* overlapping segments are merged by a streamed k-way merge (``iter_merge``:
  block at a time, duplicates by ULID dropped) and split to the target size;
* a segment over twice the target is split;
* runs of small adjacent segments are concatenated up to the target size;
* when there is nothing else to do, one segment at a time is recompressed:
  plain segments (written before segments were compressed) at the compaction
  level, and segments whose newest record is older than ``cold_age`` at the
  cold level (smaller, slower to write; reading costs the same).

Sizes are the records' bytes (``Segment.raw_size``), so a target-sized segment
holds the same records whether it is compressed or not. Outputs are compressed
(oklog.records.segfile); inputs of either kind are read a block at a time.

Crash safety: outputs are written under temporary names, fsynced and renamed
into place before any input is removed. A crash leaves the old files, or the old
and the new (overlapping, so queries merge and deduplicate them, and the next
pass compacts them again), never neither.

Retention: segments whose newest record is older than ``retain`` move to
``trash/``; trashed files are deleted ``purge`` seconds later. With a disk cap,
the oldest segments are trashed first until the store fits.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import mmap
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import trio
import trio.lowlevel
import zstandard

import oklog._fast as _fast
from oklog.fs import File, join
from oklog.node import state as node_state
from oklog.records import segfile
from oklog.records.buf import Buf, Records
from oklog.records.merge import record_start_at_or_after, seek
from oklog.records.record import ULID_LEN, ms_floor
from oklog.records.segfile import Index
from oklog.store.log import (
    Segment,
    SegmentError,
    StoreLog,
    check_segment,
    crc_hex,
    group_overlapping,
)

log = logging.getLogger("oklog.store.compact")

_T = TypeVar("_T")

INTERVAL = 2.0  # seconds between maintenance passes when there is nothing to do
PIECE = 4 << 20  # bytes copied per write
RELEASE_STEP = 1 << 20  # release read input pages every this many bytes (a block)


COMPACT_LEVEL = 3  # zstd level of merge and split outputs (concatenation copies blocks as they are)
IDLE_LEVEL = 9  # zstd level full segments are recompressed to when compaction is idle
COLD_LEVEL = 19  # zstd level of segments recompressed once cold
COLD_BLOCK_SIZE = 8 << 20  # the blocks of both: records' bytes, each frame with a window spanning it
COLD_AGE = 3600.0  # seconds after its newest record a segment counts as cold


@dataclass
class Job:
    kind: str  # "merge" | "concat" | "split" | "recompress"
    inputs: list[Segment]
    topic: str = ""  # of every input and output ("": any topics)
    level: int = COMPACT_LEVEL  # of the outputs
    block_size: int | None = None  # of the outputs' blocks (None: segfile.BLOCK_SIZE)

    @property
    def size(self) -> int:
        return sum(s.size for s in self.inputs)


@dataclass
class CompactStats:
    runs: int = 0
    merges: int = 0
    concats: int = 0
    splits: int = 0
    recompressions: int = 0
    segments_in: int = 0
    segments_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    duplicates_dropped_bytes: int = 0
    trashed: int = 0
    purged: int = 0
    trash_segments: int = 0
    trash_bytes: int = 0
    last_error: str = ""
    errors: list[str] = field(default_factory=list)

    def count(self, job: Job, outputs: list[Segment]) -> None:
        """A job done: its kind, inputs and outputs."""
        self.runs += 1
        self.merges += job.kind == "merge"
        self.splits += job.kind == "split"
        self.concats += job.kind == "concat"
        self.recompressions += job.kind == "recompress"
        self.segments_in += len(job.inputs)
        self.segments_out += len(outputs)
        self.bytes_in += job.size
        self.bytes_out += sum(s.size for s in outputs)
        raw_in = sum(s.raw_size for s in job.inputs)
        self.duplicates_dropped_bytes += max(0, raw_in - sum(s.raw_size for s in outputs))

    def as_dict(self) -> node_state.CompactionStats:
        """The typed document the node publishes (``pipeline.compaction``)."""
        return node_state.CompactionStats(
            runs=self.runs, merges=self.merges, concats=self.concats, splits=self.splits,
            recompressions=self.recompressions, segments_in=self.segments_in, segments_out=self.segments_out,
            bytes_in=self.bytes_in, bytes_out=self.bytes_out, duplicates_dropped_bytes=self.duplicates_dropped_bytes,
            trashed=self.trashed, purged=self.purged, trash_segments=self.trash_segments,
            trash_bytes=self.trash_bytes, last_error=self.last_error, errors=list(self.errors),
        )


def plan(
    segments: list[Segment],
    target: int,
    max_inputs: int = 8,
    unsplittable: frozenset[str] | set[str] = frozenset(),
    level: int = COMPACT_LEVEL,
    cold_level: int = 0,
    cold_before: str = "",
    idle_level: int = 0,
) -> list[Job]:
    """Jobs that would leave the store non-overlapping and near the target size,
    topic by topic: segments of different topics are never merged (a segment
    of any topics, "", is a class of its own). With none, at most one
    recompression: a plain segment to ``level``; else one whose newest ULID is
    before ``cold_before`` to ``cold_level``; else one of at least half the target
    (concatenation leaves it alone from then on) to ``idle_level``; both in
    COLD_BLOCK_SIZE blocks (a level 0: no such recompression)."""
    by_topic: dict[str, list[Segment]] = {}
    for seg in segments:
        by_topic.setdefault(seg.topic, []).append(seg)
    jobs: list[Job] = []
    for topic, segs in sorted(by_topic.items()):
        for job in _plan_one(segs, target, max_inputs, unsplittable):
            job.topic = topic
            cold = cold_level and all(s.last < cold_before for s in job.inputs)
            job.level = cold_level if cold else level
            job.block_size = COLD_BLOCK_SIZE if cold else None
            jobs.append(job)
    # Plain segments (written by the consumer, or by an older version) left
    # out of other jobs are compressed next, oldest first.
    busy = {s.name for j in jobs for s in j.inputs}
    plain = sorted(
        (
            g[0] for segs in by_topic.values() for g in group_overlapping(segs)
            if len(g) == 1 and g[0].level == segfile.RAW_LEVEL and g[0].name not in busy
        ),
        key=lambda s: s.last,
    )  # (overlapping ones are merged, and so compressed, first)
    jobs.extend(Job("recompress", [s], s.topic, level) for s in plain[:1])
    return jobs or _idle_job(segments, target, cold_level, cold_before, idle_level)


def _idle_job(segments: list[Segment], target: int, cold_level: int, cold_before: str, idle_level: int) -> list[Job]:
    """With nothing else to do: the oldest cold segment below the cold level, else
    the oldest of at least half the target below the idle level (none: [])."""
    by_age = sorted(segments, key=lambda s: s.last)
    for seg in by_age:
        if cold_level and seg.last < cold_before and seg.level < cold_level:
            return [Job("recompress", [seg], seg.topic, cold_level, COLD_BLOCK_SIZE)]
    for seg in by_age:
        if idle_level and seg.raw_size >= target // 2 and seg.level < idle_level:
            return [Job("recompress", [seg], seg.topic, idle_level, COLD_BLOCK_SIZE)]
    return []


def _plan_one(
    segments: list[Segment], target: int, max_inputs: int, unsplittable: frozenset[str] | set[str]
) -> list[Job]:
    jobs: list[Job] = []
    small: list[Segment] = []

    def close_small() -> None:
        if len(small) > 1:
            jobs.append(Job("concat", list(small)))
        small.clear()

    for group in group_overlapping(segments):
        if len(group) > 1:
            close_small()
            # Bound each job's fan-in; overlapping leftovers are picked up next pass.
            jobs.append(Job("merge", group[:max_inputs]))
            continue
        seg = group[0]
        if seg.raw_size > 2 * target and seg.name not in unsplittable:
            close_small()
            jobs.append(Job("split", [seg]))
            continue
        if seg.raw_size >= target // 2:
            close_small()
            continue
        if small and sum(s.raw_size for s in small) + seg.raw_size > target:
            close_small()
        small.append(seg)
        if len(small) >= 64:  # concatenation streams input after input: fan-in is cheap
            close_small()
    close_small()
    return jobs


class _Writer:
    """Streams records into target-sized (records' bytes) compressed output
    segments, a block at a time."""

    def __init__(
        self, store: StoreLog, target: int, topic: str = "", level: int = COMPACT_LEVEL,
        block_size: int | None = None,
    ) -> None:
        self.store = store
        self.target = target
        self.topic = topic
        self.level = level
        self.block_size = block_size or segfile.BLOCK_SIZE
        self._cctx: zstandard.ZstdCompressor | None = segfile.compressor(level, self.block_size)
        self.should_stop: Callable[[], bool] | None = None
        self._min_level = level  # lowest level of any block of the current output
        self.done: list[Segment] = []
        self._f: File | None = None
        self._bad: str | None = None
        self._tmp = ""
        self._first = b""
        self._last = b""
        self._size = 0  # records' bytes in the current output
        self._pending = bytearray()  # records not yet compressed (less than a block, between writes)
        self._blocks: list[segfile.Block] = []
        self._offset = 0  # file bytes written
        self._crc = 0

    def write(self, chunk: bytes) -> None:
        """Append whole records, cutting a new output at the target size."""
        while chunk:
            room = self.target - self._size if self._f is not None else self.target
            if len(chunk) <= room:
                self._append(chunk)
                chunk = b""
            else:
                cut = record_start_at_or_after(chunk, max(room, 1), len(chunk))
                self._append(chunk[:cut])
                chunk = chunk[cut:]
            if self._size >= self.target or chunk:
                self.finish()

    def _append(self, chunk: bytes) -> None:
        # An input changed under the merge (damaged on disk mid-job) shows here:
        # every chunk is checked, and in order with the one before, so an output
        # that is not a valid, ordered segment is never adopted.
        reason = check_segment(chunk)
        if reason is None and self._f is not None and bytes(chunk[:ULID_LEN]) <= self._last:
            reason = "records out of order across pieces"
        if reason is not None and self._bad is None:
            self._bad = reason
        self._open(bytes(chunk[:ULID_LEN]))
        self._pending += chunk
        self._size += len(chunk)
        last_start = chunk.rfind(b"\n", 0, len(chunk) - 1) + 1
        self._last = bytes(chunk[last_start : last_start + ULID_LEN])
        if len(self._pending) >= self.block_size:
            self._flush(final=False)

    def _open(self, first: bytes) -> None:
        if self._f is None:
            self._tmp = join(self.store.root, f".compact-{os.urandom(6).hex()}.tmp")
            self._f = self.store.fs.create(self._tmp)
            self._first = first
            self._size = 0
            self._crc = 0
            self._offset = 0
            self._blocks = []
            self._min_level = self.level

    def copy_block(self, buf: Buf, blk: segfile.Block, level: int) -> None:
        """Append a compressed block of an input as it is (concatenation: the
        records are already in order and compressed at least this well). Its
        frame is copied, then decompressed once to check it against its
        checksum and index: the CRC the output's index gives it is of bytes
        that were verified."""
        frame = bytes(buf[blk.offset : blk.offset + blk.clen])
        data = _decompressed(frame, dataclasses.replace(blk, offset=0))
        if bytes(data[: ULID_LEN]) != blk.first or not data.endswith(b"\n"):
            raise SegmentError("block does not match its index entry")
        del data
        self._flush(final=True)
        if self._f is not None and self._size and self._size + blk.rawlen > self.target:
            self.finish()
        if self._f is not None and self._size and blk.first <= self._last and self._bad is None:
            self._bad = "records out of order across pieces"
        self._open(blk.first)
        assert self._f is not None
        self._f.write(frame)
        self._crc = zlib.crc32(frame, self._crc)
        self._blocks.append(dataclasses.replace(blk, offset=self._offset, crc=zlib.crc32(frame)))
        self._offset += blk.clen
        self._size += blk.rawlen
        self._last = blk.last
        self._min_level = min(self._min_level, level)

    def _flush(self, final: bool) -> None:
        """Compress the pending records into blocks (all of them if final;
        otherwise a shorter tail waits for more)."""
        if not self._pending:
            return
        data = self._pending  # compressed in place: one copy of a block's records, not two
        cuts = segfile.block_cuts(data, self.block_size)
        if not final and cuts and cuts[-1][1] - cuts[-1][0] < self.block_size:
            cuts.pop()
        assert self._f is not None
        for s, e in cuts:
            if self.should_stop is not None and self.should_stop():
                raise Stopped
            frame, blk = segfile.encode_block(data, s, e, self.level, self._offset, self._cctx)
            self._f.write(frame)
            self._crc = zlib.crc32(frame, self._crc)
            self._offset += len(frame)
            self._blocks.append(blk)
        if cuts:
            del data[: cuts[-1][1]]  # the shorter tail waits for more

    def finish(self) -> None:
        if self._f is None:
            return
        self._flush(final=True)
        level = min(self.level, self._min_level)
        index = segfile.encode_index(self._blocks, level)
        self._f.write(index)
        self._crc = zlib.crc32(index, self._crc)
        self._offset += len(index)
        self._f.sync()
        self._f.close()
        self._f = None
        if self._bad is not None:
            self.store.fs.remove(self._tmp)
            raise SegmentError(f"compaction output invalid ({self._bad}); inputs will be re-checked")
        self.done.append(
            self.store.adopt(
                self._tmp, self._first.decode(), self._last.decode(), self._offset, self.topic,
                crc_hex(self._crc), level, self._size,
            )
        )

    def close(self) -> None:
        """Return the compressor (after finish or abort)."""
        if self._cctx is not None:
            segfile.release(self._cctx, self.level, self.block_size)
            self._cctx = None

    def abort(self) -> None:
        self._pending = bytearray()
        if self._f is not None:
            self._f.close()
            self.store.fs.remove(self._tmp)
            self._f = None


def _chunks(store: StoreLog, seg: Segment, buf: Records) -> Iterator[bytes]:
    """An input's records a block at a time (a compressed segment's blocks, or
    PIECE-sized runs of a plain one); pages read are released behind."""
    idx = store.index(seg, buf)
    if idx is None:
        n = len(buf)
        p = 0
        while p < n:
            q = record_start_at_or_after(buf, p + PIECE, n)
            yield bytes(buf[p:q])
            _release(buf, q)
            p = q
        return
    for blk in idx.blocks:
        data = _decompressed(buf, blk, seg.name)
        _release(buf, blk.offset + blk.clen)
        yield data


def _last_ulid(chunk: bytes) -> bytes:
    s = chunk.rfind(b"\n", 0, len(chunk) - 1) + 1
    return bytes(chunk[s : s + ULID_LEN])


def merged(inputs: Sequence[Iterable[bytes]]) -> Iterator[bytes]:
    """Merge sorted inputs (each an iterator of record chunks) into ULID order,
    copies (one ULID) dropped: each round takes, from every input, its records
    up to the smallest last ULID among the inputs' current chunks, and merges
    those in C. Every round finishes at least one chunk."""
    iters = [iter(x) for x in inputs]
    cur: dict[int, bytes] = {}
    for i, it in enumerate(iters):
        first = next(it, None)
        if first is not None:
            cur[i] = first
    pos = [0] * len(iters)
    while cur:
        if len(cur) == 1:
            ((i, c),) = cur.items()
            yield c[pos[i] :]
            yield from iters[i]
            return
        cutoff = min(_last_ulid(c) for c in cur.values()) + b"\x00"  # just after it
        pieces = []
        for i, c in sorted(cur.items()):
            e = seek(c, cutoff, pos[i], len(c))
            if e > pos[i]:
                pieces.append(memoryview(c)[pos[i] : e])
            pos[i] = e
            if e >= len(c):
                nxt = next(iters[i], None)
                if nxt is None:
                    del cur[i]
                else:
                    cur[i] = nxt
                pos[i] = 0
        if pieces:
            out: bytes = _fast.merge(pieces, 0)
            yield out


@dataclass(frozen=True)
class _Piece:
    """Part of an input a merge reads: a compressed block (``blk``, its zstd
    level), or the byte range [start, end) of a plain input."""

    blk: segfile.Block | None = None
    level: int = 0
    start: int = 0
    end: int = 0


def _merge_blocks(writer: _Writer, bufs: list[Records], idxs: list[Index | None], level: int) -> None:
    """Merge inputs a block at a time: a compressed block (at ``level`` or
    better) whose ULID range overlaps nothing else is copied as it is; each run
    of pieces that overlap one another (blocks, and PIECE-sized runs of plain
    inputs) is read, merged (copies dropped) and compressed. Segments that
    overlap only at their edges cost little more than a copy."""
    items: list[tuple[bytes, bytes, int, _Piece]] = []
    for i, (buf, idx) in enumerate(zip(bufs, idxs, strict=True)):
        if idx is not None:
            items.extend((blk.first, blk.last, i, _Piece(blk, idx.level)) for blk in idx.blocks)
            continue
        n, p = len(buf), 0
        while p < n:
            q = record_start_at_or_after(buf, p + segfile.BLOCK_SIZE, n)  # a round holds one piece per input
            ls = max(p, buf.rfind(b"\n", p, q - 1) + 1)
            items.append((bytes(buf[p : p + ULID_LEN]), bytes(buf[ls : ls + ULID_LEN]), i, _Piece(start=p, end=q)))
            p = q
        _release(buf, n)  # the probes' readahead maps most of a sequential mapping
    items.sort(key=lambda t: (t[0], t[1], t[2]))
    runs: list[list[tuple[int, _Piece]]] = []
    hi = b""
    for first, last, i, what in items:
        if runs and first <= hi:
            runs[-1].append((i, what))
            hi = max(hi, last)
        else:
            runs.append([(i, what)])
            hi = last
    for run in runs:
        i, first_piece = run[0]
        blk, blk_level = first_piece.blk, first_piece.level
        if len(run) == 1 and blk is not None:
            if blk_level >= level and blk.rawlen <= writer.target:  # (a bigger block is cut by writing it)
                writer.copy_block(bufs[i], blk, blk_level)
                _release(bufs[i], blk.offset + blk.clen)
                continue
        per_input: dict[int, list[_Piece]] = {}
        for i, what in run:
            per_input.setdefault(i, []).append(what)
        sources = [_read_pieces(bufs[i], whats) for i, whats in sorted(per_input.items())]
        for piece in merged(sources):
            writer.write(piece)


def _read_pieces(buf: Records, whats: list[_Piece]) -> Iterator[bytes]:
    for what in whats:
        blk = what.blk
        if blk is None:
            yield bytes(buf[what.start : what.end])
            _release(buf, what.end)
            continue
        data = _decompressed(buf, blk)
        _release(buf, blk.offset + blk.clen)
        yield data


def _decompressed(buf: Buf, blk: segfile.Block, name: str = "") -> bytes:
    """A block's records; a block damaged since its segment was validated is a
    SegmentError (the job gives up, its inputs go back to the scrubber)."""
    try:
        return segfile.decompress_block(buf, blk)
    except (zstandard.ZstdError, segfile.FormatError) as e:
        raise SegmentError(f"{name}: {e}" if name else str(e)) from None


class Stopped(Exception):
    """The node is shutting down: a job gives up at its next block (its
    temporary output is removed; its inputs stay)."""


def run_job(
    store: StoreLog, job: Job, target: int, stats: CompactStats, should_stop: Callable[[], bool] | None = None
) -> list[Segment]:
    """Execute one job (blocking; run it in a worker thread). ``should_stop``
    is asked at every block; when it says so the job is abandoned (Stopped)."""
    writer = _Writer(store, target, job.topic, job.level, job.block_size)
    writer.should_stop = should_stop
    ctxs = [store.fs.map(store.path(s)) for s in job.inputs]
    bufs: list[Records] = []
    try:
        for c in ctxs:
            bufs.append(c.__enter__())
        changed = _changed_inputs(store, job.inputs, bufs)
        if changed:
            for seg in changed:
                store.suspect(seg)  # the scrubber decides; nothing is merged meanwhile
            return []
        _write_outputs(store, job, writer, bufs)
        writer.finish()
    except Stopped:
        writer.abort()
        return []
    except (SegmentError, segfile.FormatError) as e:
        writer.abort()
        for seg in job.inputs:
            store.suspect(seg)
        stats.last_error = str(e)
        log.warning("%s", e)
        return []
    except BaseException:
        writer.abort()
        raise
    finally:
        writer.close()
        for c in ctxs:
            try:
                c.__exit__(None, None, None)
            except BufferError:
                pass
    out_names = {s.name for s in writer.done}
    for s in job.inputs:
        if s.name not in out_names:
            store.remove(s)
    stats.count(job, writer.done)
    return writer.done


def _changed_inputs(store: StoreLog, inputs: list[Segment], bufs: list[Records]) -> list[Segment]:
    """Inputs changed on disk since they were validated (stamp, size, a plain
    one's final LF): never merged."""
    return [
        seg for seg, b in zip(inputs, bufs, strict=True)
        if store.modified(seg) or len(b) != seg.size or not len(b)
        or (not segfile.is_compressed(b[:4]) and b[len(b) - 1] != 0x0A)
    ]


def _write_outputs(store: StoreLog, job: Job, writer: _Writer, bufs: list[Records]) -> None:
    """The job's records into ``writer``: merged (copies dropped) for merge and
    split jobs; input after input for the others, a concatenation copying
    blocks already compressed well enough as they are."""
    try:
        sources = [_chunks(store, seg, b) for seg, b in zip(job.inputs, bufs, strict=True)]
    except segfile.FormatError as e:
        raise SegmentError(str(e)) from None
    idxs = [store.index(seg, b) for seg, b in zip(job.inputs, bufs, strict=True)]
    if job.kind in ("merge", "split"):
        _merge_blocks(writer, bufs, idxs, job.level)
        return
    for b, idx, src in zip(bufs, idxs, sources, strict=True):
        if idx is not None and idx.level >= job.level and job.kind == "concat":
            for blk in idx.blocks:
                writer.copy_block(b, blk, idx.level)
                _release(b, blk.offset + blk.clen)
            continue
        for piece in src:
            writer.write(piece)


MAINTENANCE_NICE = 10


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MAINTENANCE_NICE)  # this thread only (Linux)
    except (OSError, AttributeError):
        pass


def _release(buf: Buf, upto: int) -> None:
    """Drop what compaction has read of an input from this process's resident
    memory (the pages stay in the page cache)."""
    if isinstance(buf, mmap.mmap) and upto >= RELEASE_STEP:
        try:
            buf.madvise(mmap.MADV_DONTNEED, 0, upto - upto % mmap.PAGESIZE)
        except (OSError, ValueError):
            pass


class Maintenance:
    """The store's background loop: compaction, retention, purge."""

    def __init__(
        self,
        store: StoreLog,
        target_size: int,
        retain: float,
        purge: float,
        limiter: trio.CapacityLimiter,
        max_disk: int = 0,
        level: int = COMPACT_LEVEL,
        cold_level: int = COLD_LEVEL,
        cold_age: float = COLD_AGE,
        idle_level: int = IDLE_LEVEL,
    ) -> None:
        self.store = store
        # Maintenance runs on its own thread at a lower CPU priority: on a busy
        # node ingest and queries go first, and compression catches up when
        # the CPU is free (it is what runs when nothing else wants to).
        self._worker = concurrent.futures.ThreadPoolExecutor(1, "oklog-maintenance", initializer=_lower_priority)
        self.level = level
        self.cold_level = cold_level
        self.cold_age = cold_age
        self.idle_level = idle_level
        self.target = target_size
        self.retain = retain
        self.purge = purge
        self.limiter = limiter
        self.max_disk = max_disk
        self.stats = CompactStats()
        self.unsplittable: set[str] = set()  # one record bigger than the target
        self.trash_dir = join(store.root, "trash")
        store.fs.mkdirs(self.trash_dir)

    async def run(self) -> None:
        while True:
            did = False
            try:
                did = await self.step()
            except OSError as e:
                self.stats.last_error = str(e)
                log.warning("maintenance: %s", e)
            if not did:
                await trio.sleep(INTERVAL)
            else:
                await trio.lowlevel.checkpoint()

    async def step(self) -> bool:
        """One pass: scrub unvalidated segments, retention and purge, then at most
        one compaction job (whose inputs are all validated)."""
        for seg in self.store.unvalidated():
            ok = await self._run(self.store.scrub, seg)
            if not ok:
                log.warning("segment %s failed validation: quarantined, good records salvaged", seg.name)
        await trio.to_thread.run_sync(self.retention)
        valid = [s for s in self.store.segments() if s.name in self.store.validated]
        jobs = self._plan(valid)
        if not jobs:
            return False
        job = jobs[0]
        stop = threading.Event()
        try:
            # A cold job can run for minutes: on shutdown it is left to stop
            # at its next block (a crash at any step of a job loses nothing).
            out = await self._run(run_job, self.store, job, self.target, self.stats, stop.is_set)
        except trio.Cancelled:
            stop.set()
            raise
        if job.kind == "split" and len(out) == 1:
            self.unsplittable.add(out[0].name)
        return True

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        """``fn(*args)`` on the maintenance thread; on cancellation the wait is
        abandoned (the caller tells a job to stop)."""
        fut = self._worker.submit(fn, *args)
        return await trio.to_thread.run_sync(fut.result, limiter=self.limiter, abandon_on_cancel=True)

    def pending(self) -> bool:
        """Whether a pass would find work: segments to validate or a compaction
        job (sizes are not settled until this is false)."""
        segs = self.store.segments()
        valid = [s for s in segs if s.name in self.store.validated]
        if len(valid) < len(segs):  # never checked, or suspect (not the periodic re-checks)
            return True
        return bool(self._plan(valid))

    def _plan(self, valid: list[Segment]) -> list[Job]:
        cold_before = ms_floor(int((time.time() - self.cold_age) * 1000)).decode()
        return plan(
            valid, self.target, unsplittable=self.unsplittable,
            level=self.level, cold_level=self.cold_level, cold_before=cold_before, idle_level=self.idle_level,
        )

    def retention(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        cutoff = ms_floor(int((now - self.retain) * 1000)).decode()
        segs = self.store.segments()
        expired = [s for s in segs if s.last < cutoff]
        if self.max_disk:
            total = sum(s.size for s in segs)
            for s in sorted(segs, key=lambda s: s.last):
                if total <= self.max_disk:
                    break
                if s not in expired:
                    expired.append(s)
                total -= s.size
        for s in expired:
            self.store.trash(s, self.trash_dir, int(now * 1000))
            self.stats.trashed += 1
        fs = self.store.fs
        count = size = 0
        for name in fs.listdir(self.trash_dir):
            path = join(self.trash_dir, name)
            stamp, _, _ = name.partition("-")
            try:
                if now - int(stamp) / 1000 > self.purge:
                    fs.remove(path)
                    self.stats.purged += 1
                    continue
                count += 1
                size += fs.size(path)
            except (FileNotFoundError, ValueError):
                continue
        self.stats.trash_segments, self.stats.trash_bytes = count, size
