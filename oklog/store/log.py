"""The store tier's segment files.

A store segment is a file of records sorted by ULID, named ``FIRST-LAST.seg`` by
the first and last ULID it holds, so a time range selects files with two string
comparisons. Topics are kept apart: a body holding several topics is written as
one segment per topic, ``FIRST-LAST.TOPIC.seg``, so a query for one topic never
reads the others' bytes (``FIRST-LAST.seg`` holds any topics: files from before,
or a body of more than MAX_TOPIC_SPLIT topics). The name ends with the CRC-32 of
the bytes as written (``~1a2b3c4d.seg``): the scrubber checks it, so bytes
changed at rest are caught even where the records still parse. Files are written whole and atomically (temporary name, fsync,
rename): a crash leaves either the old set of files or the new one. Corrupt files
are moved to ``quarantine/`` and reported, never fatal.

Segments are written compressed (oklog.records.segfile: zstd blocks, an index of
per-block ULID ranges and trigram blooms); plain segments from before are still
read, and compaction rewrites them compressed.
"""

from __future__ import annotations

import collections
import re
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import zstandard

import oklog._fast as _fast
from oklog.fs import FS, close_map, join
from oklog.node.state import StoreLogStats
from oklog.records import segfile
from oklog.records.buf import Buf
from oklog.records.merge import merge_dedup
from oklog.records.record import ULID_LEN
from oklog.records.segfile import Index

SEGMENT_SUFFIX = ".seg"
_NAME_RE = re.compile(
    r"([0-9A-HJKMNP-TV-Z]{26})-([0-9A-HJKMNP-TV-Z]{26})(?:\.([A-Za-z0-9][A-Za-z0-9_-]{0,127}))?(?:~([0-9a-f]{8}))?\.seg\Z"
)
_TOPIC_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}\Z")
MAX_TOPIC_SPLIT = 64  # more topics than this in one body: kept as one mixed segment
class SegmentError(ValueError):
    pass


class DamagedSegment(OSError):
    """A stored segment's block failed its checksum (or size) while being
    read: the segment is marked for the scrubber, which salvages its
    undamaged blocks. A request that needed it can be retried then, or sent
    to another member; it is not the requester's fault."""

    def __init__(self, seg_name: str, why: str) -> None:
        super().__init__(f"stored segment {seg_name} has a damaged block ({why}); it is being re-checked")
        self.seg_name = seg_name


@dataclass(frozen=True, order=True)
class Segment:
    first: str
    last: str
    size: int
    topic: str = ""  # "": records of any topic
    crc: str = ""  # CRC-32 of the file's bytes as written (8 hex digits); "": unknown
    # Not part of the identity (the name is): the zstd level the file was
    # written with (segfile.RAW_LEVEL: plain records) and its records' bytes.
    level: int = field(default=segfile.RAW_LEVEL, compare=False)
    raw: int = field(default=-1, compare=False)

    @property
    def raw_size(self) -> int:
        return self.size if self.raw < 0 else self.raw

    @property
    def name(self) -> str:
        return segment_name(self.first, self.last, self.topic, self.crc)


def segment_name(first: str, last: str, topic: str = "", crc: str = "") -> str:
    return f"{first}-{last}{'.' + topic if topic else ''}{'~' + crc if crc else ''}{SEGMENT_SUFFIX}"


def crc_hex(crc: int) -> str:
    return f"{crc & 0xFFFFFFFF:08x}"


def topic_of(data: bytes) -> str:
    """The topic of a body's first record."""
    sp = data.find(b" ", ULID_LEN + 1)
    return data[ULID_LEN + 1 : sp].decode("latin-1") if sp > 0 else ""


def validate_records(data: bytes) -> tuple[bytes, bytes]:
    """Check framing and order of a segment body; return (first, last) ULID."""
    reason = check_segment(data)
    if reason is not None:
        raise SegmentError(reason)
    return bounds(data)


_ULID_OK = None  # lookup table: byte -> valid Crockford (canonical) character


def check_segment(buf: Buf, chunk: int = 1 << 16) -> str | None:
    """Why a segment's bytes are not a valid segment, or None if they are: every
    record is ``ULID SP TOPIC SP LINE LF`` (canonical ULID characters, a topic
    of at most 128 bytes) and ULIDs strictly increase. Vectorized and chunked:
    memory stays small and the GIL is mostly released, so ingest keeps its pace."""
    import numpy as np

    global _ULID_OK
    if _ULID_OK is None:
        table = np.zeros(256, dtype=np.bool_)
        table[np.frombuffer(b"0123456789ABCDEFGHJKMNPQRSTVWXYZ", dtype=np.uint8)] = True
        _ULID_OK = table
    n = len(buf)
    if n == 0:
        return "empty"
    if buf[n - 1] != 0x0A:
        return "truncated (no LF at the end)"
    arr = np.frombuffer(buf, dtype=np.uint8)
    ends = np.flatnonzero(arr == 0x0A)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    if np.any(ends - starts < ULID_LEN + 3):
        return "malformed record (too short)"
    cols = np.arange(ULID_LEN)
    prev_last = None
    for i in range(0, len(starts), chunk):
        st, en = starts[i : i + chunk], ends[i : i + chunk]
        keys = arr[st[:, None] + cols]
        if not _ULID_OK[keys].all():
            return "malformed record (bad ULID)"
        if np.any(arr[st + ULID_LEN] != 0x20):
            return "malformed record (no space after the ULID)"
        # A second space (after the topic) before the record's LF, within 129 bytes.
        spaces = np.flatnonzero(arr[st[0] : en[-1] + 1] == 0x20) + st[0]
        k = np.searchsorted(spaces, st + ULID_LEN + 2)
        if np.any(k >= len(spaces)):
            return "malformed record (no topic)"
        topic_end = spaces[k]
        if np.any(topic_end >= en) or np.any(topic_end - st - ULID_LEN - 1 > 128):
            return "malformed record (no topic)"
        flat = np.ascontiguousarray(keys).view(f"S{ULID_LEN}").ravel()
        if len(flat) > 1 and not np.all(flat[1:] > flat[:-1]):
            return "records out of order or duplicated"
        if prev_last is not None and not flat[0] > prev_last:
            return "records out of order or duplicated"
        prev_last = flat[-1]
    return None


_RECORD_RE = re.compile(rb"[0-9A-HJKMNP-TV-Z]{26} [A-Za-z0-9][A-Za-z0-9_-]* [^\n]*\Z")


def salvage(data: bytes) -> tuple[bytes, int]:
    """The well-formed records of a damaged segment, in order; and how many were
    dropped (malformed, torn, or out of order: a corrupted ULID)."""
    recs = [r for r in data.split(b"\n")[:-1] if _RECORD_RE.match(r)]  # a torn tail has no LF
    dropped = data.count(b"\n") + (0 if data.endswith(b"\n") else 1) - len(recs)
    keep = list(recs)
    # Drop outliers that break the order (a damaged ULID), keeping the rest.
    i = 0
    while i < len(keep) - 1:
        if keep[i][:ULID_LEN] < keep[i + 1][:ULID_LEN]:
            i += 1
            continue
        if i > 0 and keep[i - 1][:ULID_LEN] < keep[i + 1][:ULID_LEN]:
            del keep[i]
            i -= 1
        else:
            del keep[i + 1]
        dropped += 1
    if not keep:
        return b"", dropped
    keep.append(b"")
    return b"\n".join(keep), dropped


def bounds(data: bytes) -> tuple[bytes, bytes]:
    last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
    return data[:ULID_LEN], data[last_start : last_start + ULID_LEN]


INDEX_CACHE_BYTES = 32 << 20  # parsed segment indexes kept in memory


class _FileTail:
    """Slices of a file by offset, read on demand (what read_index needs of it)."""

    def __init__(self, fs: FS, path: str, size: int) -> None:
        self.fs, self.path, self.n = fs, path, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, sl: slice) -> bytes:
        start, stop, _ = sl.indices(self.n)
        return self.fs.read(self.path, start, max(0, stop - start))


def check_compressed(buf: Buf) -> str | None:
    """Why a compressed segment is damaged, or None: the index reads, every
    block's frame decompresses with its checksum, holds valid records, matches
    its index entry, and blocks follow each other in ULID order."""
    try:
        idx = segfile.read_index(buf)
    except segfile.FormatError as e:
        return f"index: {e}"
    prev = b""
    for i, blk in enumerate(idx.blocks):
        try:
            data = segfile.decompress_block(buf, blk)
        except (zstandard.ZstdError, segfile.FormatError) as e:
            return f"block {i}: {e}"
        reason = check_segment(data)
        if reason is None:
            first, last = bounds(data)
            if first != blk.first or last != blk.last or data.count(b"\n") != blk.records:
                reason = "index entry does not match the block"
            elif prev and first <= prev:
                reason = "blocks out of order"
            prev = last
        if reason is not None:
            return f"block {i}: {reason}"
    return None


class StoreLog:
    def __init__(self, fs: FS, root: str) -> None:
        self.fs = fs
        self.root = root
        self.quarantine_dir = join(root, "quarantine")
        self._lock = threading.Lock()
        self._segments: dict[str, Segment] = {}
        self.quarantined: list[str] = []
        self.validated: set[str] = set()  # names checked (or written by us) since start
        self._validated_at: dict[str, float] = {}
        self.rescrub_after = 600.0  # seconds: re-check every segment now and then
        # (size, mtime) of each segment as written: a file changed on disk after
        # that is not trusted (quarantined whole; replicas and repair restore it).
        self._stamps: dict[str, tuple[int, int]] = {}
        self._modified: set[str] = set()
        self.salvaged_records = 0
        self.dropped_records = 0
        self.segments_written = 0
        # The oldest first ULID written since ``take_oldest_written`` ("~":
        # none): the node publishes a lowered oldest record to gossip as soon as
        # it sees one, not at the next periodic update.
        self.oldest_written = "~"
        self.bytes_written = 0
        self.replications_received = 0
        # Replication factor 1: no other node can restore a damaged segment.
        self.sole_copy = False
        # zstd level of segments written here (RAW_LEVEL: plain records, the
        # format before compression; kept for tests of reading old stores)
        self.level = segfile.DEFAULT_LEVEL
        # Parsed indexes of compressed segments, most recently used last.
        self._indexes: collections.OrderedDict[str, Index] = collections.OrderedDict()
        self._index_bytes = 0
        fs.mkdirs(root)
        self._load()

    def _load(self) -> None:
        for name in self.fs.listdir(self.root):
            path = join(self.root, name)
            if name.endswith(".tmp"):  # an interrupted atomic write or compaction
                self.fs.remove(path)  # an interrupted atomic write
                continue
            m = _NAME_RE.match(name)
            if m is None:
                continue
            size = self.fs.size(path)
            if size == 0 or m.group(1) > m.group(2):
                self.quarantine(name, "empty or misnamed")
                continue
            level, raw = self._describe(path, size)
            self._segments[name] = Segment(m.group(1), m.group(2), size, m.group(3) or "", m.group(4) or "", level, raw)
            self._stamps[name] = self.fs.stamp(path)

    def _describe(self, path: str, size: int) -> tuple[int, int]:
        """(level, records' bytes) of a segment file; a compressed one whose
        index does not read is left to the scrubber (level 1, size unknown)."""
        if not segfile.is_compressed(self.fs.read(path, 0, 4)):
            return segfile.RAW_LEVEL, size
        try:
            idx = segfile.read_index(_FileTail(self.fs, path, size))
        except (segfile.FormatError, OSError):
            return 1, size
        return idx.level, idx.raw_bytes

    def scrub(self, seg: Segment) -> bool:
        """Validate one segment; a bad one goes to quarantine and its good records
        come back as a new segment. True if it was valid."""
        path = join(self.root, seg.name)
        self.modified(seg)
        if seg.name in self._modified:
            # Changed in place after it was written: which bytes are still right
            # can't be told (records carry no checksum), so none are trusted.
            self.quarantine(seg.name, "modified on disk after it was written")
            return False
        try:
            crc, compressed, reason = self._check_file(seg, path)
        except FileNotFoundError:
            return True
        if crc != seg.crc and reason is None:
            self._checksum_mismatch(seg, path, f"checksum mismatch (crc32 {crc}, written {seg.crc})")
            return False
        if reason is None:
            with self._lock:
                self.validated.add(seg.name)
                self._validated_at[seg.name] = time.monotonic()
            return True
        self._salvage(seg, path, compressed, reason)
        return False

    def _check_file(self, seg: Segment, path: str) -> tuple[str, bool, str | None]:
        """(CRC-32 of the file if its name carries one, compressed?, why it is
        damaged or None)."""
        buf = self.fs.open_map(path)
        try:
            crc = crc_hex(zlib.crc32(buf)) if seg.crc else ""
            compressed = segfile.is_compressed(buf[:4])
            if compressed and seg.crc and crc == seg.crc:
                # Bit for bit what was written (and checked as it was written):
                # the CRC-32 of the compressed bytes is enough, and a tenth of
                # the work of decompressing every block. Reads still verify
                # each block's checksum.
                return crc, compressed, None
            return crc, compressed, check_compressed(buf) if compressed else check_segment(buf)
        finally:
            close_map(buf)

    def _checksum_mismatch(self, seg: Segment, path: str, why: str) -> None:
        """Bytes changed at rest (the name carries the CRC-32 they were written
        with) and every record still parses: which one is wrong can't be told.
        With replicas none is served (a damaged copy could win deduplication
        against a good one); the file stays in quarantine/ and read repair or
        oklog repair restore its records. As the only copy (replication factor
        1) the records come back, damaged one included, and the report says so."""
        if not self.sole_copy:
            self.quarantine(seg.name, why)
            return
        data = segfile.decode(self.fs.read(path))
        self.quarantine(seg.name, why + "; records kept: this node holds the only copy")
        self.write(data, validate=False)
        self.salvaged_records += data.count(b"\n")

    def _salvage(self, seg: Segment, path: str, compressed: bool, reason: str) -> None:
        """Quarantine a damaged file and write back the records that still read."""
        raw = self.fs.read(path)
        lost = 0
        if compressed:
            # Each block carries its own checksum: only damaged blocks are lost
            # on this copy (replicas and repair restore them).
            data, bad = segfile.salvage_blocks(raw)
            if bad:
                reason = "; ".join(bad)
                try:
                    idx = segfile.read_index(raw)
                    lost = idx.records - data.count(b"\n")
                except segfile.FormatError:
                    pass
        else:
            data = raw
        del raw
        good, dropped = salvage(data)
        self.quarantine(seg.name, reason)
        self.dropped_records += dropped + lost
        if good:
            self.write(good, validate=False)  # topics as the records say (a damaged one may differ)
            self.salvaged_records += good.count(b"\n")

    def unvalidated(self) -> list[Segment]:
        """Segments never checked, suspected, or not checked for a while."""
        now = time.monotonic()
        with self._lock:
            out = []
            for n, s in sorted(self._segments.items()):
                if n not in self.validated:
                    out.append(s)
                elif now - self._validated_at.setdefault(n, now) > self.rescrub_after:
                    out.append(s)
            return out

    def suspect(self, seg: Segment) -> None:
        """A reader saw something wrong (size changed, no final LF): re-check it."""
        with self._lock:
            self.validated.discard(seg.name)

    def modified(self, seg: Segment) -> bool:
        """Whether the file changed on disk since this node wrote (or loaded) it;
        such a file is marked for quarantine. A new stamp alone (a ``touch``, a
        backup tool restoring times) is not a change: bytes that still match the
        CRC-32 in the name, and records that still verify, are re-stamped and
        kept."""
        path = join(self.root, seg.name)
        try:
            now = self.fs.stamp(path)
        except FileNotFoundError:
            return False
        with self._lock:
            was = self._stamps.get(seg.name)
            if was is None or was == now:
                return False
        if self._unchanged(seg, path):
            with self._lock:
                if self._stamps.get(seg.name) == was:
                    self._stamps[seg.name] = now  # taken before the check: a later write is seen
            return False
        with self._lock:
            self._modified.add(seg.name)
            self.validated.discard(seg.name)
        return True

    def _unchanged(self, seg: Segment, path: str) -> bool:
        """Whether a file's bytes are still the ones written: its size, the
        CRC-32 its name carries, and (as the scrubber checks) its records or
        blocks. A name without a CRC cannot tell."""
        if not seg.crc:
            return False
        try:
            buf = self.fs.open_map(path)
        except FileNotFoundError:
            return False
        try:
            if len(buf) != seg.size or crc_hex(zlib.crc32(buf)) != seg.crc:
                return False
            compressed = segfile.is_compressed(buf[:4])
            return (check_compressed(buf) if compressed else check_segment(buf)) is None
        finally:
            close_map(buf)

    def quarantined_overlapping(self, lo: bytes, hi_excl: bytes, topic: str = "") -> list[str]:
        """Names of files in quarantine/ whose ULID range overlaps lo <= ULID <
        hi_excl (of ``topic``, or of any topic for ""): their records are
        missing from this node until restored. The directory is read each time:
        the operator moving or deleting a file there (after ``oklog repair``)
        is how the node learns the range is whole again."""
        lo_s, hi_s = lo.decode("latin-1")[:ULID_LEN], hi_excl.decode("latin-1")
        try:
            names = self.fs.listdir(self.quarantine_dir)
        except FileNotFoundError:
            return []
        out = []
        for name in sorted(names):
            m = _NAME_RE.match(name)
            if m is None or m.group(1) >= hi_s or m.group(2) < lo_s:
                continue
            if topic and m.group(3) and m.group(3) != topic:
                continue
            out.append(name)
        return out

    def quarantine(self, name: str, reason: str) -> None:
        self.fs.mkdirs(self.quarantine_dir)
        try:
            self.fs.rename(join(self.root, name), join(self.quarantine_dir, name))
        except FileNotFoundError:
            pass
        with self._lock:
            self._segments.pop(name, None)
            self._stamps.pop(name, None)
            self._modified.discard(name)
            self._forget_index(name)
            self.quarantined.append(f"{name}: {reason}")

    # -- writing ----------------------------------------------------------------

    def write(self, data: bytes, validate: bool = True, encoded: bytes | None = None) -> list[Segment]:
        """Store a sorted body atomically, one segment per topic; idempotent for
        equal bodies. ``encoded``: a segment file whose records are ``data``
        and whose index is checked (``segfile.index_describes``), written as
        the file when the body is stored as one segment that overlaps nothing."""
        if validate:
            validate_records(data)
        parts = _fast.split_topics(data, MAX_TOPIC_SPLIT)
        if parts is None:  # one topic
            return [self._write_one(data, topic_of(data), encoded)]
        if not parts:  # too many to keep apart
            return [self._write_one(data, "", encoded)]
        return [self._write_one(part, t.decode("latin-1")) for t, part in parts]

    def _write_one(self, data: bytes, topic: str, given: bytes | None = None) -> Segment:
        if topic and not _TOPIC_NAME_RE.match(topic):
            topic = ""  # not a topic oklog would accept: keep it out of file names
        first_b, last_b = bounds(data)
        first, last = first_b.decode(), last_b.decode()
        level = self.level
        if self._overlaps(first, last, topic):
            # Compaction merges it with what it overlaps right away and
            # compresses the result: compressing it now would be done twice.
            level, given = segfile.RAW_LEVEL, None
        if given is not None:  # compressed once by the sender, for every copy
            level = segfile.read_index(given).level
            encoded = given
        else:
            encoded = segfile.encode(data, level) if level != segfile.RAW_LEVEL else data
        crc = crc_hex(zlib.crc32(encoded))
        name = segment_name(first, last, topic, crc)
        path = join(self.root, name)
        with self._lock:
            existing = self._segments.get(name)
        if existing is not None:
            old = segfile.decode(self.fs.read(path))
            if old == data:
                return existing  # the same body again (a retried replication)
            # Another body with the same bounds and CRC-32: the merged bytes are
            # written beside it under their own name; queries and compaction
            # drop the copies.
            data = merge_dedup([old, data])
            encoded = segfile.encode(data, level) if level != segfile.RAW_LEVEL else data
            crc = crc_hex(zlib.crc32(encoded))
            name = segment_name(first, last, topic, crc)
            path = join(self.root, name)
        self.fs.write_atomic(path, encoded)
        seg = Segment(first, last, len(encoded), topic, crc, level, len(data))
        stamp = self.fs.stamp(path)
        with self._lock:
            self._segments[name] = seg
            self.validated.add(name)
            self._stamps[name] = stamp
            self._modified.discard(name)
            self.segments_written += 1
            self.bytes_written += len(encoded)
            self.oldest_written = min(self.oldest_written, first)
        return seg

    def _overlaps(self, first: str, last: str, topic: str) -> bool:
        """Whether a stored segment of this topic overlaps [first, last] (one
        with exactly these bounds does not count: the same body again must get
        the same name)."""
        with self._lock:
            return any(
                s.topic == topic and s.first <= last and s.last >= first and (s.first, s.last) != (first, last)
                for s in self._segments.values()
            )

    def adopt(
        self, tmp_path: str, first: str, last: str, size: int, topic: str = "", crc: str = "",
        level: int = segfile.RAW_LEVEL, raw: int = -1,
    ) -> Segment:
        """Rename a complete, synced temporary file into place as a segment."""
        seg = Segment(first, last, size, topic, crc, level, raw)
        self.fs.rename(tmp_path, join(self.root, seg.name))
        self.fs.sync_dir(self.root)
        stamp = self.fs.stamp(join(self.root, seg.name))
        with self._lock:
            self._segments[seg.name] = seg
            self.validated.add(seg.name)
            self._stamps[seg.name] = stamp
            self._modified.discard(seg.name)
        return seg

    def trash(self, seg: Segment, trash_dir: str, now_ms: int) -> None:
        """Move a segment out of queries; the name carries when, for the purge."""
        with self._lock:
            self._segments.pop(seg.name, None)
            self._forget_index(seg.name)
        try:
            self.fs.rename(join(self.root, seg.name), join(trash_dir, f"{now_ms}-{seg.name}"))
        except FileNotFoundError:
            pass

    def remove(self, seg: Segment) -> None:
        with self._lock:
            self._segments.pop(seg.name, None)
            self._forget_index(seg.name)
        self.fs.remove(join(self.root, seg.name))

    # -- reading ------------------------------------------------------------------

    def segments(self) -> list[Segment]:
        with self._lock:
            return sorted(self._segments.values())

    def overlapping(self, lo: bytes, hi_excl: bytes) -> list[Segment]:
        """Segments that may hold records with lo <= ULID < hi_excl."""
        lo_s, hi_s = lo.decode("latin-1"), hi_excl.decode("latin-1")
        return [s for s in self.segments() if s.first < hi_s and s.last >= lo_s[:ULID_LEN]]

    def path(self, seg: Segment) -> str:
        return join(self.root, seg.name)

    def index(self, seg: Segment, buf: Buf | None = None) -> Index | None:
        """The index of a compressed segment (None for a plain one), cached;
        ``buf``: the file's bytes or mapping if the caller holds them. Raises
        segfile.FormatError if it does not read."""
        with self._lock:
            idx = self._indexes.get(seg.name)
            if idx is not None:
                self._indexes.move_to_end(seg.name)
                return idx
        if buf is None:
            path = self.path(seg)
            if not segfile.is_compressed(self.fs.read(path, 0, 4)):
                return None
            idx = segfile.read_index(_FileTail(self.fs, path, self.fs.size(path)))
        else:
            if not segfile.is_compressed(buf[:4]):
                return None
            idx = segfile.read_index(buf)
        cost = 64 * len(idx.blocks) + sum(len(b.bloom) for b in idx.blocks)
        with self._lock:
            if seg.name not in self._indexes:
                self._indexes[seg.name] = idx
                self._index_bytes += cost
            while self._index_bytes > INDEX_CACHE_BYTES and len(self._indexes) > 1:
                _, old = self._indexes.popitem(last=False)
                self._index_bytes -= 64 * len(old.blocks) + sum(len(b.bloom) for b in old.blocks)
        return idx

    def _forget_index(self, name: str) -> None:
        old = self._indexes.pop(name, None)  # caller holds the lock
        if old is not None:
            self._index_bytes -= 64 * len(old.blocks) + sum(len(b.bloom) for b in old.blocks)

    def records(self, seg: Segment) -> bytes:
        """Every record of a segment, plain (compressed or not on disk);
        DamagedSegment if a block fails its checksum."""
        with self._reading(seg):
            return segfile.decode(self.fs.read(self.path(seg)))

    @contextmanager
    def _reading(self, seg: Segment) -> Iterator[None]:
        """A block of ``seg`` that fails its checksum while read is a
        DamagedSegment, and the segment is re-checked by the scrubber next
        (damaged since it was validated)."""
        try:
            yield
        except (zstandard.ZstdError, segfile.FormatError) as e:
            self.suspect(seg)
            raise DamagedSegment(seg.name, str(e)) from None

    def read_range(self, seg: Segment, lo: bytes, hi_excl: bytes) -> bytes:
        """The records of one segment with lo <= ULID < hi_excl, plain (b"" if
        none). FileNotFoundError if the segment is gone (compacted away
        meanwhile: the caller looks again); DamagedSegment if a block it
        needs fails its checksum."""
        from oklog.fs import close_map
        from oklog.records.merge import seek

        buf = self.fs.open_map(self.path(seg))
        try:
            n = len(buf)
            if not n:
                return b""
            idx = self.index(seg, buf)
            if idx is None:
                s = seek(buf, lo, 0, n)
                return bytes(buf[s : seek(buf, hi_excl, s, n)])
            out = []
            for blk in idx.blocks:
                if blk.last < lo[:ULID_LEN] or blk.first >= hi_excl:
                    continue
                with self._reading(seg):
                    data = segfile.decompress_block(buf, blk)
                s, e = blk.within(data, lo, hi_excl)
                out.append(data[s:e])
            return b"".join(out)
        finally:
            close_map(buf)

    def take_oldest_written(self) -> str:
        with self._lock:
            out, self.oldest_written = self.oldest_written, "~"
        return out

    def stats(self) -> StoreLogStats:
        segs = self.segments()
        oldest = segs[0].first if segs else None
        return {
            "segments": len(segs),
            "bytes": sum(s.size for s in segs),  # on disk
            "records_bytes": sum(s.raw_size for s in segs),  # uncompressed
            "oldest": oldest,
            "newest": max((s.last for s in segs), default=None),
            "segments_written": self.segments_written,
            "bytes_written": self.bytes_written,
            "replications_received": self.replications_received,
            "quarantined": list(self.quarantined),
            "unvalidated": len(segs) - len(self.validated & {x.name for x in segs}),
            "salvaged_records": self.salvaged_records,
            "dropped_records": self.dropped_records,
            "time": time.time(),
        }


def group_overlapping(segments: list[Segment]) -> list[list[Segment]]:
    """Chains of segments whose ULID ranges overlap, in time order."""
    groups: list[list[Segment]] = []
    hi = ""
    for seg in sorted(segments):
        if groups and seg.first <= hi:
            groups[-1].append(seg)
            hi = max(hi, seg.last)
        else:
            groups.append([seg])
            hi = seg.last
    return groups
