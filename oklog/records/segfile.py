"""The compressed store segment format.

A segment file is a run of standard zstd frames, one per block of whole records
(sorted by ULID, at most BLOCK_SIZE uncompressed bytes, each frame with its
content size and content checksum), followed by one zstd *skippable* frame
holding the index. ``zstdcat SEGMENT`` therefore prints the records verbatim
(decoders skip skippable frames), while oklog reads the index from the end:

    index frame = magic 0x184D2A5E (LE u32) | payload length (LE u32) | payload
    payload     = "OKLI" | version u8 | level u8 | 0 u16 | blocks u32
                  | per block: first ULID (26) | last ULID (26) | offset u64
                    | compressed length u32 | raw length u32 | records u32
                    | bloom kind u8 | bloom length u32 | [version 2: frame CRC-32 u32]
                    | bloom bytes
                  | CRC-32 of everything above (u32) | frame length (u32) | "OKLX"

The last 12 bytes of the file find the index without a scan. Each block's
summary is a bloom filter of its lines, so a query for a literal skips blocks
that cannot hold it. Bloom kind 1: trigrams only (oklog._fast.trigram_bloom;
the first files); kind 2: trigrams and 5-grams in one filter (oklog._fast.
gram_bloom), written now, as trigrams cannot rule out an identifier made of
digits. The trigram bits of both kinds are set alike, so a reader that knows
only kind 1 checks trigrams on either and stays correct.
Version 2 adds each block's CRC-32 of its compressed frame bytes: a reader
that checks it (a tenth of the bytes, at CRC speed) has verified everything
the frame's content checksum would, and decompresses without hashing the
output (oklog._fast.zscan and zcount: about a tenth faster). Version 1 files
(no block CRCs) are still read, their frames verified by content checksum.
Files from before (plain records) are recognised by their first bytes: a ULID,
never the zstd magic.
"""

from __future__ import annotations

import array
import struct
import threading
import zlib
from dataclasses import dataclass

import zstandard

import oklog._fast as _fast
from oklog.records.buf import Buf, Records, Sliced
from oklog.records.merge import seek
from oklog.records.record import ULID_LEN

DEFAULT_LEVEL = 3  # zstd level of segments the store consumer writes
BLOCK_SIZE = 1 << 20  # uncompressed bytes per block (a block may exceed it by one record)
BLOOM_BITS = 1  # bloom bits per distinct gram (trigram or 5-gram key) of a block
BLOOM_TRIGRAMS = 1  # bloom kinds (see the module docstring)
BLOOM_GRAMS = 2
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SKIP_MAGIC = struct.pack("<I", 0x184D2A5E)
_HEAD = struct.Struct("<4sBBHI")
_ENTRY = struct.Struct(f"<{ULID_LEN}s{ULID_LEN}sQIIIBI")
_CRC = struct.Struct("<I")
_TAIL = struct.Struct("<II4s")
_VERSION = 2  # written when every block's CRC is known; 1 otherwise
INDEX_VERSION = _VERSION  # what a member advertises when its /store/replicate takes these files
RAW_LEVEL = 0  # the level reported for a plain (uncompressed) segment


class FormatError(ValueError):
    pass


@dataclass(frozen=True)
class Block:
    first: bytes
    last: bytes
    offset: int
    clen: int
    rawlen: int
    records: int
    hashes: int  # the bloom kind (BLOOM_TRIGRAMS, BLOOM_GRAMS)
    bloom: bytes
    crc: int | None = None  # CRC-32 of the frame's bytes (index version 2), None when unknown

    def may_contain(self, literal: bytes | None) -> bool:
        if literal is None or len(literal) < 3:
            return True
        if self.hashes == BLOOM_GRAMS:
            return _fast.gram_bloom_may_contain(self.bloom, literal)
        return _fast.bloom_may_contain(self.bloom, literal)

    def within(self, data: Records, lo: bytes, hi_excl: bytes) -> tuple[int, int]:
        """[start, end) of the records of ``data`` (this block's records, or
        some of them in order) with lo <= ULID < hi_excl; no search on a side
        the block's first or last ULID already decides."""
        s = seek(data, lo) if self.first < lo else 0
        e = seek(data, hi_excl, s) if self.last >= hi_excl[:ULID_LEN] else len(data)
        return s, e


@dataclass(frozen=True)
class Index:
    level: int
    blocks: list[Block]
    data_end: int  # where the index frame starts

    @property
    def raw_bytes(self) -> int:
        return sum(b.rawlen for b in self.blocks)

    @property
    def records(self) -> int:
        return sum(b.records for b in self.blocks)


def is_compressed(head: Sliced) -> bool:
    return bytes(head[:4]) == ZSTD_MAGIC


_local = threading.local()


CACHED_LEVELS = 9  # compressors up to this level are pooled (level 19's takes ~50 MiB: never kept)
_pool: dict[int, list[zstandard.ZstdCompressor]] = {}
_pool_lock = threading.Lock()


def _wide(block_size: int | None) -> bool:
    """Blocks larger than the store's own: their compressors get a window that
    spans the block and are never pooled."""
    return block_size is not None and block_size > BLOCK_SIZE


def compressor(level: int, block_size: int | None = None) -> zstandard.ZstdCompressor:
    """A compressor for segment blocks, for one thread at a time (return it
    with ``release``). The fast levels come from a pool, so there are only as
    many contexts as concurrent writers, not one per worker thread ever used.

    Blocks larger than ``BLOCK_SIZE`` get a window that spans the whole block
    (a level's own window may be smaller: level 9's is 4 MiB); such a context
    holds tens of MiB of tables, so it is never pooled (``release`` frees it)."""
    if _wide(block_size):
        assert block_size is not None
        params = zstandard.ZstdCompressionParameters.from_level(
            level, window_log=(block_size - 1).bit_length(), write_checksum=1, write_content_size=1
        )
        return zstandard.ZstdCompressor(compression_params=params)
    if level <= CACHED_LEVELS:
        with _pool_lock:
            free = _pool.get(level)
            if free:
                return free.pop()
    return zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)


def release(cctx: zstandard.ZstdCompressor, level: int, block_size: int | None = None) -> None:
    if _wide(block_size):
        return
    if level <= CACHED_LEVELS:
        with _pool_lock:
            free = _pool.setdefault(level, [])
            if len(free) < 4:
                free.append(cctx)


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def block_cuts(data: Records, block_size: int | None = None) -> list[tuple[int, int]]:
    """Record-aligned [start, end) ranges of at most block_size bytes (or one record)."""
    block_size = block_size or BLOCK_SIZE
    n = len(data)
    cuts = []
    s = 0
    while s < n:
        e = s + block_size
        if e >= n:
            e = n
        else:
            lf = data.rfind(b"\n", s, e)
            e = lf + 1 if lf >= 0 else data.find(b"\n", e) + 1 or n
        cuts.append((s, e))
        s = e
    return cuts


def encode_block(
    data: bytes | bytearray, start: int, end: int, level: int, offset: int, cctx: zstandard.ZstdCompressor | None = None
) -> tuple[bytes, Block]:
    """One block: its zstd frame and its index entry (offset: where the frame goes)."""
    view = memoryview(data)[start:end]
    if cctx is None:
        own = compressor(level)
        try:
            frame = own.compress(view)
        finally:
            release(own, level)
    else:
        frame = cctx.compress(view)
    bloom = _fast.gram_bloom(data, start, end, BLOOM_BITS)
    last_start = data.rfind(b"\n", start, end - 1) + 1
    last_start = max(last_start, start)
    blk = Block(
        bytes(data[start : start + ULID_LEN]),
        bytes(data[last_start : last_start + ULID_LEN]),
        offset,
        len(frame),
        end - start,
        data.count(b"\n", start, end),
        BLOOM_GRAMS,
        bloom,
        zlib.crc32(frame),
    )
    return frame, blk


def encode_index(blocks: list[Block], level: int) -> bytes:
    """The index frame; version 2 when every block carries its frame's CRC."""
    version = 2 if all(b.crc is not None for b in blocks) else 1
    parts = [_HEAD.pack(b"OKLI", version, level, 0, len(blocks))]
    for b in blocks:
        parts.append(_ENTRY.pack(b.first, b.last, b.offset, b.clen, b.rawlen, b.records, b.hashes, len(b.bloom)))
        if version == 2:
            parts.append(_CRC.pack(b.crc))
        parts.append(b.bloom)
    body = b"".join(parts)
    frame_len = 8 + len(body) + _TAIL.size
    payload = body + _TAIL.pack(zlib.crc32(body), frame_len, b"OKLX")
    return SKIP_MAGIC + struct.pack("<I", len(payload)) + payload


def encode(data: bytes | bytearray, level: int = DEFAULT_LEVEL, block_size: int | None = None) -> bytes:
    """A whole segment file for a sorted body of records."""
    frames: list[bytes] = []
    blocks: list[Block] = []
    off = 0
    cctx = compressor(level, block_size)
    try:
        for s, e in block_cuts(data, block_size):
            frame, blk = encode_block(data, s, e, level, off, cctx)
            frames.append(frame)
            blocks.append(blk)
            off += len(frame)
    finally:
        release(cctx, level, block_size)
    frames.append(encode_index(blocks, level))
    return b"".join(frames)


def read_index(buf: Sliced) -> Index:
    """The index of a compressed segment (buf: its bytes or a mapping)."""
    n = len(buf)
    if n < 8 + _HEAD.size + _TAIL.size:
        raise FormatError("too short for an index")
    crc, frame_len, magic = _TAIL.unpack(bytes(buf[n - _TAIL.size : n]))
    if magic != b"OKLX" or frame_len > n or frame_len < 8 + _HEAD.size + _TAIL.size:
        raise FormatError("no index at the end")
    start = n - frame_len
    frame = bytes(buf[start:n])
    if frame[:4] != SKIP_MAGIC or struct.unpack("<I", frame[4:8])[0] != frame_len - 8:
        raise FormatError("index frame header damaged")
    body = frame[8 : frame_len - _TAIL.size]
    if zlib.crc32(body) != crc:
        raise FormatError("index checksum mismatch")
    tag, version, level, _, count = _HEAD.unpack_from(body, 0)
    if tag != b"OKLI" or version not in (1, 2):
        raise FormatError(f"unknown index version {version}")
    pos = _HEAD.size
    blocks = []
    expect = 0
    for _ in range(count):
        if pos + _ENTRY.size + (_CRC.size if version == 2 else 0) > len(body):
            raise FormatError("index entries cut short")
        first, last, off, clen, rawlen, recs, hashes, blen = _ENTRY.unpack_from(body, pos)
        pos += _ENTRY.size
        crc = None
        if version == 2:
            (crc,) = _CRC.unpack_from(body, pos)
            pos += _CRC.size
        bloom = body[pos : pos + blen]
        pos += blen
        if off != expect or off + clen > start:
            raise FormatError("index offsets inconsistent")
        expect = off + clen
        blocks.append(Block(first, last, off, clen, rawlen, recs, hashes, bloom, crc))
    if expect != start or pos != len(body):
        raise FormatError("index does not cover the file")
    return Index(level, blocks, start)


def frame_table(blocks: list[Block]) -> bytes:
    """The blocks' frames as oklog._fast.zscan and zcount take them: native
    int64 quads (offset, compressed length, raw length, CRC-32 or -1)."""
    table = array.array("q")
    for b in blocks:
        table.extend((b.offset, b.clen, b.rawlen, -1 if b.crc is None else b.crc))
    return table.tobytes()


def decompress_block(buf: Buf, blk: Block) -> bytes:
    """A block's records; raises zstandard.ZstdError if its frame is damaged
    (the content checksum is verified), FormatError if the size is wrong."""
    out = _decompressor().decompress(memoryview(buf)[blk.offset : blk.offset + blk.clen])
    if len(out) != blk.rawlen:
        raise FormatError("block size differs from its index entry")
    return out


def decode(buf: Buf) -> bytes:
    """All records of a segment file (compressed or plain)."""
    if not is_compressed(buf[:4]):
        return bytes(buf)
    idx = read_index(buf)
    return b"".join(decompress_block(buf, b) for b in idx.blocks)


class TooLarge(FormatError):
    """A body whose index declares more records' bytes than the receiver takes."""


def decode_bounded(buf: Buf, limit: int) -> tuple[bytes, Index]:
    """The records of a segment file received from elsewhere, and its index,
    expanding nothing before the whole is known to fit: TooLarge when the
    index declares more than ``limit`` bytes of records, FormatError when a
    block's frame declares another size than its index entry, does not end
    exactly where the entry says, or fails its content checksum."""
    idx = read_index(buf)
    if idx.raw_bytes > limit:
        raise TooLarge(f"records of {idx.raw_bytes} bytes exceed the {limit}-byte limit")
    view = memoryview(buf)
    out = []
    for i, blk in enumerate(idx.blocks):
        frame = view[blk.offset : blk.offset + blk.clen]
        try:
            declared = zstandard.frame_content_size(frame)
        except zstandard.ZstdError as e:
            raise FormatError(f"block {i}: {e}") from None
        if declared != blk.rawlen:
            raise FormatError(f"block {i}: its frame holds {declared} bytes, its index entry says {blk.rawlen}")
        if blk.crc is not None and zlib.crc32(frame) != blk.crc:
            raise FormatError(f"block {i}: its frame's bytes do not match the CRC-32 in its index entry")
        d = zstandard.ZstdDecompressor().decompressobj()
        try:
            chunk = d.decompress(frame)
        except zstandard.ZstdError as e:
            raise FormatError(f"block {i}: {e}") from None
        if not d.eof or d.unused_data or len(chunk) != blk.rawlen:
            raise FormatError(f"block {i}: the frame does not fill its index entry exactly")
        out.append(chunk)
    return b"".join(out), idx


def index_describes(data: bytes, idx: Index) -> bool:
    """Whether ``idx`` says of ``data`` (a decoded, valid body) what this
    version's writer would: each block's ULID bounds, record count and bloom
    of the same kind, and a level the store can have. Only then can a
    sender's file be kept as is: queries trust the index to skip blocks."""
    if not 1 <= idx.level <= 22:
        return False
    start = 0
    for blk in idx.blocks:
        end = start + blk.rawlen
        if blk.rawlen == 0 or data[end - 1 : end] != b"\n" or blk.hashes != BLOOM_GRAMS or blk.crc is None:
            return False
        last_start = max(data.rfind(b"\n", start, end - 1) + 1, start)
        if (
            blk.first != data[start : start + ULID_LEN]
            or blk.last != data[last_start : last_start + ULID_LEN]
            or blk.records != data.count(b"\n", start, end)
            or blk.bloom != _fast.gram_bloom(data, start, end, BLOOM_BITS)
        ):
            return False
        start = end
    return start == len(data)


def salvage_blocks(buf: Buf) -> tuple[bytes, list[str]]:
    """The records of the undamaged blocks of a compressed segment, and a
    reason for each damaged part. Without a readable index, frames are read
    in order from the start until one fails."""
    bad: list[str] = []
    try:
        idx = read_index(buf)
    except FormatError as e:
        bad.append(f"index: {e}")
        return _salvage_stream(buf, bad), bad
    out = []
    for i, blk in enumerate(idx.blocks):
        try:
            out.append(decompress_block(buf, blk))
        except (zstandard.ZstdError, FormatError) as e:
            bad.append(f"block {i} ({blk.first.decode('latin-1')}..{blk.last.decode('latin-1')}, {blk.records} records): {e}")
    return b"".join(out), bad


def _salvage_stream(buf: Buf, bad: list[str]) -> bytes:
    out = []
    data = bytes(buf)
    pos = 0
    while pos + 4 <= len(data) and data[pos : pos + 4] == ZSTD_MAGIC:
        d = _decompressor().decompressobj()
        try:
            chunk = d.decompress(data[pos:])
        except zstandard.ZstdError as e:
            bad.append(f"frame at {pos}: {e}; the rest is lost on this copy")
            break
        if not d.eof:
            bad.append(f"frame at {pos} truncated")
            break
        rest = d.unused_data
        out.append(chunk)
        pos = len(data) - len(rest)
    return b"".join(out)
