"""Store maintenance: compaction and retention, continuous and bounded.

Compaction, decided from segment names and sizes alone (``plan``, pure):

* overlapping segments are merged by a streamed k-way merge (``iter_merge``:
  block at a time, duplicates by ULID dropped) and split to the target size;
* a segment over twice the target is split;
* runs of small adjacent segments are concatenated up to the target size.

Crash safety: outputs are written under temporary names, fsynced and renamed
into place before any input is removed. A crash leaves the old files, or the old
and the new (overlapping, so queries merge and deduplicate them, and the next
pass compacts them again), never neither.

Retention: segments whose newest record is older than ``retain`` move to
``trash/``; trashed files are deleted ``purge`` seconds later. With a disk cap,
the oldest segments are trashed first until the store fits.
"""

from __future__ import annotations

import logging
import mmap
import os
import time
import zlib
from dataclasses import dataclass, field

import trio
import trio.lowlevel

from oklog.fs import File, join
from oklog.query.engine import iter_merge, record_start_at_or_after
from oklog.record import ULID_LEN, ms_floor
from oklog.store.log import (
    Segment,
    SegmentError,
    StoreLog,
    check_segment,
    crc_hex,
    group_overlapping,
)

log = logging.getLogger("oklog.store.compact")

INTERVAL = 2.0  # seconds between maintenance passes when there is nothing to do
PIECE = 4 << 20  # bytes copied per write
RELEASE_STEP = 8 << 20  # release merged input pages every this many bytes


@dataclass
class Job:
    kind: str  # "merge" | "concat" | "split"
    inputs: list[Segment]
    topic: str = ""  # of every input and output ("": any topics)

    @property
    def size(self) -> int:
        return sum(s.size for s in self.inputs)


@dataclass
class CompactStats:
    runs: int = 0
    merges: int = 0
    concats: int = 0
    splits: int = 0
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


def plan(
    segments: list[Segment], target: int, max_inputs: int = 8, unsplittable: frozenset | set = frozenset()
) -> list[Job]:
    """Jobs that would leave the store non-overlapping and near the target size,
    topic by topic: segments of different topics are never merged (a segment
    of any topics, "", is a class of its own)."""
    by_topic: dict[str, list[Segment]] = {}
    for seg in segments:
        by_topic.setdefault(seg.topic, []).append(seg)
    jobs: list[Job] = []
    for topic, segs in sorted(by_topic.items()):
        for job in _plan_one(segs, target, max_inputs, unsplittable):
            job.topic = topic
            jobs.append(job)
    return jobs


def _plan_one(segments: list[Segment], target: int, max_inputs: int, unsplittable) -> list[Job]:
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
        if seg.size > 2 * target and seg.name not in unsplittable:
            close_small()
            jobs.append(Job("split", [seg]))
            continue
        if seg.size >= target // 2:
            close_small()
            continue
        if small and sum(s.size for s in small) + seg.size > target:
            close_small()
        small.append(seg)
        if len(small) >= 64:  # concatenation streams input after input: fan-in is cheap
            close_small()
    close_small()
    return jobs


class _Writer:
    """Streams records into target-sized output segments."""

    def __init__(self, store: StoreLog, target: int, topic: str = "") -> None:
        self.store = store
        self.target = target
        self.topic = topic
        self.done: list[Segment] = []
        self._f: File | None = None
        self._bad: str | None = None
        self._tmp = ""
        self._first = b""
        self._last = b""
        self._size = 0
        self._crc = 0

    def write(self, chunk) -> None:
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

    def _append(self, chunk) -> None:
        # An input changed under the merge (damaged on disk mid-job) shows here:
        # every chunk is checked, and in order with the one before, so an output
        # that is not a valid, ordered segment is never adopted.
        reason = check_segment(chunk)
        if reason is None and self._f is not None and bytes(chunk[:ULID_LEN]) <= self._last:
            reason = "records out of order across pieces"
        if reason is not None and self._bad is None:
            self._bad = reason
        if self._f is None:
            self._tmp = join(self.store.root, f".compact-{os.urandom(6).hex()}.tmp")
            self._f = self.store.fs.create(self._tmp)
            self._first = bytes(chunk[:ULID_LEN])
            self._size = 0
            self._crc = 0
        self._f.write(bytes(chunk))
        self._size += len(chunk)
        self._crc = zlib.crc32(chunk, self._crc)
        last_start = chunk.rfind(b"\n", 0, len(chunk) - 1) + 1
        self._last = bytes(chunk[last_start : last_start + ULID_LEN])

    def finish(self) -> None:
        if self._f is None:
            return
        self._f.sync()
        self._f.close()
        self._f = None
        if self._bad is not None:
            self.store.fs.remove(self._tmp)
            raise SegmentError(f"compaction output invalid ({self._bad}); inputs will be re-checked")
        self.done.append(
            self.store.adopt(
                self._tmp, self._first.decode(), self._last.decode(), self._size, self.topic, crc_hex(self._crc)
            )
        )

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self.store.fs.remove(self._tmp)
            self._f = None


def run_job(store: StoreLog, job: Job, target: int, stats: CompactStats) -> list[Segment]:
    """Execute one job (blocking; run it in a worker thread)."""
    writer = _Writer(store, target, job.topic)
    ctxs = [store.fs.map(store.path(s)) for s in job.inputs]
    bufs = []
    try:
        for c in ctxs:
            bufs.append(c.__enter__())
        changed = [
            seg for seg, b in zip(job.inputs, bufs, strict=True)
            if store.modified(seg) or len(b) != seg.size or not len(b) or b[len(b) - 1] != 0x0A
        ]
        if changed:
            for seg in changed:
                store.suspect(seg)  # the scrubber decides; nothing is merged meanwhile
            return []
        if job.kind in ("merge", "split"):
            for piece in iter_merge(bufs, consumed=lambda i, upto: _release(bufs[i], upto)):
                writer.write(piece)
        else:
            for b in bufs:
                for piece in iter_merge([b], consumed=lambda _i, upto, b=b: _release(b, upto)):
                    writer.write(piece)
        writer.finish()
    except SegmentError as e:
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
        for c in ctxs:
            c.__exit__(None, None, None)
    out_names = {s.name for s in writer.done}
    for s in job.inputs:
        if s.name not in out_names:
            store.remove(s)
    stats.runs += 1
    stats.merges += job.kind == "merge"
    stats.splits += job.kind == "split"
    stats.concats += job.kind == "concat"
    stats.segments_in += len(job.inputs)
    stats.segments_out += len(writer.done)
    stats.bytes_in += job.size
    out_bytes = sum(s.size for s in writer.done)
    stats.bytes_out += out_bytes
    stats.duplicates_dropped_bytes += max(0, job.size - out_bytes)
    return writer.done


def _release(buf, upto: int) -> None:
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
    ) -> None:
        self.store = store
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
            ok = await trio.to_thread.run_sync(self.store.scrub, seg, limiter=self.limiter)
            if not ok:
                log.warning("segment %s failed validation: quarantined, good records salvaged", seg.name)
        await trio.to_thread.run_sync(self.retention)
        valid = [s for s in self.store.segments() if s.name in self.store.validated]
        jobs = plan(valid, self.target, unsplittable=self.unsplittable)
        if not jobs:
            return False
        job = jobs[0]
        out = await trio.to_thread.run_sync(run_job, self.store, job, self.target, self.stats, limiter=self.limiter)
        if job.kind == "split" and len(out) == 1:
            self.unsplittable.add(out[0].name)
        return True

    def pending(self) -> bool:
        """Whether a pass would find work: segments to validate or a compaction
        job (sizes are not settled until this is false)."""
        segs = self.store.segments()
        valid = [s for s in segs if s.name in self.store.validated]
        if len(valid) < len(segs):  # never checked, or suspect (not the periodic re-checks)
            return True
        return bool(plan(valid, self.target, unsplittable=self.unsplittable))

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
