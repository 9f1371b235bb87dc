"""The ingest tier's disk-backed queue of segments.

A segment's state is its file extension, changed only by atomic rename::

    .active ──flush──▶ .flushed ──next──▶ .pending ──commit──▶ (deleted)
                          ▲                  │
                          └──failed/timeout──┘

Segment ids are ULIDs taken when the segment is created, so name order is age
order and ``next`` hands out the oldest flushed segment first. Synchronous: the
callers (listeners, the /ingest API) move the slow calls off the event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from oklog.fs import FS, File, join
from oklog.node.state import ByIngestState, IngestLogStats
from oklog.records.record import ULIDSource, encode_ulid

ACTIVE, FLUSHED, PENDING = "active", "flushed", "pending"
STATES = (ACTIVE, FLUSHED, PENDING)


def _by_state(n: dict[str, int]) -> ByIngestState:
    return ByIngestState(active=n[ACTIVE], flushed=n[FLUSHED], pending=n[PENDING])


@dataclass
class RecoveryReport:
    reactivated: int = 0  # .active/.pending files turned back into .flushed
    torn_bytes: int = 0  # bytes cut from torn final lines
    removed_empty: int = 0
    quarantined: list[str] = field(default_factory=list)


class ActiveSegment:
    """An open ``.active`` segment that one connection appends to."""

    def __init__(self, log: IngestLog, seg_id: str, f: File) -> None:
        self.log = log
        self.id = seg_id
        self._f = f
        self.created = time.monotonic()
        self.records = 0

    @property
    def size(self) -> int:
        return self._f.size

    def write(self, data: bytes, records: int) -> None:
        self._f.write(data)
        self.records += records
        self.log.note_written(len(data), records)
        if self.log.tap is not None:
            self.log.tap(data)

    def sync(self) -> None:
        self._f.sync()

    def discard(self) -> None:
        """Drop a segment whose write failed before it was handed over (nothing
        of it was acknowledged): its file and its place in the log's state go."""
        try:
            self._f.close()
        except OSError:
            pass
        self.log._discard(self)

    def flush(self, sync: bool = True) -> bool:
        """Close and hand over to the store tier; an empty segment is removed."""
        if sync:
            self._f.sync()
        self._f.close()
        return self.log._finish(self)


class IngestLog:
    def __init__(self, fs: FS, root: str, pending_timeout: float = 60.0) -> None:
        self.fs = fs
        self.root = root
        self.pending_timeout = pending_timeout
        self._ids = ULIDSource()
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}
        self._pending_since: dict[str, float] = {}
        self._sizes: dict[str, int] = {}
        # Figures for /cluster/state and /metrics.
        self.records_in = 0
        self.bytes_in = 0
        self.flushes = 0
        self.commits = 0
        self.failures = 0
        self.timeouts = 0
        # seg_id -> callback run when the store tier commits it (bulk acks).
        self.commit_waiters: dict[str, Callable[[], None]] = {}
        # Live tail: called with every batch of records written (any thread).
        self.tap: Callable[[bytes], None] | None = None
        # Called (from any thread) whenever a segment becomes flushed.
        self.on_flushed: Callable[[], None] | None = None
        fs.mkdirs(root)

    # -- startup -------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Turn leftover .active/.pending into .flushed; cut torn final lines."""
        report = RecoveryReport()
        for name in sorted(self.fs.listdir(self.root)):
            seg_id, _, state = name.rpartition(".")
            if state not in STATES:
                continue
            path = join(self.root, name)
            size = self.fs.size(path)
            if size:
                cut = _torn_cut(self.fs, path, size)
                if cut != size:
                    self.fs.truncate(path, cut)
                    report.torn_bytes += size - cut
                    size = cut
            if size == 0:
                self.fs.remove(path)
                report.removed_empty += 1
                continue
            if state != FLUSHED:
                self.fs.rename(path, join(self.root, f"{seg_id}.{FLUSHED}"))
                report.reactivated += 1
            self._state[seg_id] = FLUSHED
            self._sizes[seg_id] = size
        return report

    # -- writers -------------------------------------------------------------

    def new_segment(self) -> ActiveSegment:
        ms, rand = self._ids.reserve(1)
        seg_id = encode_ulid(ms, rand).decode()
        f = self.fs.create(self._path(seg_id, ACTIVE))
        with self._lock:
            self._state[seg_id] = ACTIVE
        return ActiveSegment(self, seg_id, f)

    def note_written(self, nbytes: int, records: int) -> None:
        with self._lock:  # writers call this from worker threads
            self.bytes_in += nbytes
            self.records_in += records

    def _discard(self, seg: ActiveSegment) -> None:
        with self._lock:
            if self._state.get(seg.id) != ACTIVE:
                return  # handed over already: the store tier owns it
            del self._state[seg.id]
        try:
            self.fs.remove(self._path(seg.id, ACTIVE))
        except FileNotFoundError:
            pass

    def _finish(self, seg: ActiveSegment) -> bool:
        size = seg.size
        if size == 0:
            self.fs.remove(self._path(seg.id, ACTIVE))
            with self._lock:
                self._state.pop(seg.id, None)
            return False
        self.fs.rename(self._path(seg.id, ACTIVE), self._path(seg.id, FLUSHED))
        with self._lock:
            self._state[seg.id] = FLUSHED
            self._sizes[seg.id] = size
            self.flushes += 1
        if self.on_flushed is not None:
            self.on_flushed()
        return True

    # -- the store tier's side: next / read / commit / failed ------------------

    def next(self) -> str | None:
        """Mark the oldest flushed segment pending and return its id."""
        with self._lock:
            self._expire_locked()
            flushed = [i for i, s in self._state.items() if s == FLUSHED]
            if not flushed:
                return None
            seg_id = min(flushed)
            self.fs.rename(self._path(seg_id, FLUSHED), self._path(seg_id, PENDING))
            self._state[seg_id] = PENDING
            self._pending_since[seg_id] = time.monotonic()
            return seg_id

    def read(self, seg_id: str) -> bytes:
        with self._lock:
            if self._state.get(seg_id) != PENDING:
                raise KeyError(seg_id)
        return self.fs.read(self._path(seg_id, PENDING))

    def pending(self, seg_id: str) -> bool:
        """Whether ``seg_id`` is handed out and not yet settled (a consumer holds it)."""
        with self._lock:
            self._expire_locked()
            return self._state.get(seg_id) == PENDING

    def commit(self, seg_id: str) -> None:
        with self._lock:
            if self._state.get(seg_id) != PENDING:
                raise KeyError(seg_id)
            self.fs.remove(self._path(seg_id, PENDING))
            del self._state[seg_id]
            self._pending_since.pop(seg_id, None)
            self._sizes.pop(seg_id, None)
            self.commits += 1
            waiter = self.commit_waiters.pop(seg_id, None)
        if waiter is not None:
            waiter()

    def add_flushed(self, data: bytes, on_commit: Callable[[], None] | None = None) -> str:
        """Write a complete segment straight to .flushed (fsynced); return its id.
        ``on_commit`` is registered before the segment can be consumed (a woken
        consumer may commit it before this returns)."""
        seg = self.new_segment()
        if on_commit is not None:
            with self._lock:
                self.commit_waiters[seg.id] = on_commit
        try:
            seg.write(data, data.count(b"\n"))
            seg.flush(sync=True)
            self.fs.sync_dir(self.root)
        except BaseException:
            with self._lock:
                self.commit_waiters.pop(seg.id, None)
            seg.discard()  # a failed write (a full disk) must not leave an .active segment forever
            raise
        return seg.id

    def failed(self, seg_id: str) -> None:
        with self._lock:
            if self._state.get(seg_id) != PENDING:
                raise KeyError(seg_id)
            self._unpend_locked(seg_id)
            self.failures += 1

    def expire_pending(self) -> int:
        with self._lock:
            return self._expire_locked()

    def _expire_locked(self) -> int:
        now = time.monotonic()
        expired = [
            i for i, t in self._pending_since.items() if now - t > self.pending_timeout
        ]
        for seg_id in expired:
            self._unpend_locked(seg_id)
            self.timeouts += 1
        return len(expired)

    def _unpend_locked(self, seg_id: str) -> None:
        self.fs.rename(self._path(seg_id, PENDING), self._path(seg_id, FLUSHED))
        self._state[seg_id] = FLUSHED
        self._pending_since.pop(seg_id, None)

    # -- figures ----------------------------------------------------------------

    def stats(self) -> IngestLogStats:
        now_wall = time.time()
        with self._lock:
            counts = dict.fromkeys(STATES, 0)
            sizes = dict.fromkeys(STATES, 0)
            oldest_flushed: str | None = None
            for seg_id, state in self._state.items():
                counts[state] += 1
                sizes[state] += self._sizes.get(seg_id, 0)
                if state == FLUSHED and (oldest_flushed is None or seg_id < oldest_flushed):
                    oldest_flushed = seg_id
        lag = 0.0
        if oldest_flushed is not None:
            from oklog.records.record import ulid_ms

            lag = max(0.0, now_wall - ulid_ms(oldest_flushed.encode()) / 1000)
        return IngestLogStats(
            segments=_by_state(counts),
            bytes=_by_state(sizes),
            oldest_flushed_age_seconds=round(lag, 3),
            records_in=self.records_in,
            bytes_in=self.bytes_in,
            flushes=self.flushes,
            commits=self.commits,
            failures=self.failures,
            pending_timeouts=self.timeouts,
        )

    def _path(self, seg_id: str, state: str) -> str:
        return join(self.root, f"{seg_id}.{state}")


def _torn_cut(fs: FS, path: str, size: int) -> int:
    """Length of the file up to and including its last LF."""
    if size == 0:
        return 0
    window = 1 << 16
    end = size
    while end > 0:
        start = max(0, end - window)
        chunk = fs.read(path, start, end - start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0
