"""segfile.decode_bounded and index_describes: what a receiver checks of a
segment file before it expands it and before it keeps it as sent."""

from __future__ import annotations

import dataclasses
import zlib

import pytest
from conftest import sample_lines

from oklog.records import segfile
from oklog.records.record import make_headers, now_ms, stamp_lines


def body(n: int, first: int = 0) -> bytes:
    return stamp_lines(sample_lines(n, seed=3), make_headers(now_ms(), first, n, b"default"))


def with_entry(enc: bytes, i: int, **change: object) -> bytes:
    idx = segfile.read_index(enc)
    blocks = list(idx.blocks)
    blocks[i] = dataclasses.replace(blocks[i], **change)
    return enc[: idx.data_end] + segfile.encode_index(blocks, idx.level)


@pytest.mark.parametrize("block_size", [None, 4096, 100])
def test_what_this_version_writes_is_described_by_its_index(block_size):
    data = body(2000)
    enc = segfile.encode(data, 3, block_size)
    got, idx = segfile.decode_bounded(enc, len(data))
    assert got == data
    assert segfile.index_describes(got, idx)


def test_the_bound_is_checked_against_the_index_before_any_block():
    data = body(500)
    enc = segfile.encode(data, 3, 4096)
    with pytest.raises(segfile.TooLarge):
        segfile.decode_bounded(enc, len(data) - 1)
    # A damaged block after the bound is exceeded is never reached.
    idx = segfile.read_index(enc)
    bad = bytearray(enc)
    bad[idx.blocks[0].offset + 20] ^= 1
    with pytest.raises(segfile.TooLarge):
        segfile.decode_bounded(bytes(bad), len(data) - 1)


def test_a_frame_that_does_not_fill_its_entry_exactly_is_refused():
    data = body(300)
    enc = segfile.encode(data, 3, 4096)
    idx = segfile.read_index(enc)
    # Two blocks' frames under one entry: the first frame ends before the entry does.
    b0, b1 = idx.blocks[0], idx.blocks[1]
    merged = dataclasses.replace(b0, clen=b0.clen + b1.clen, last=b1.last, records=b0.records + b1.records)
    rest = [dataclasses.replace(b) for b in idx.blocks[2:]]
    lying = enc[: idx.data_end] + segfile.encode_index([merged, *rest], idx.level)
    with pytest.raises(segfile.FormatError, match="block 0"):
        segfile.decode_bounded(lying, 1 << 30)
    # An entry that states another size than its frame holds.
    with pytest.raises(segfile.FormatError, match="its index entry says"):
        segfile.decode_bounded(with_entry(enc, 1, rawlen=b1.rawlen - 1), 1 << 30)


def test_a_flipped_byte_in_a_frame_is_refused():
    enc = bytearray(segfile.encode(body(800), 3, 4096))
    blk = segfile.read_index(enc).blocks[2]
    enc[blk.offset + blk.clen - 6] ^= 0x10  # inside the data or the content checksum
    with pytest.raises(segfile.FormatError, match="block 2"):
        segfile.decode_bounded(bytes(enc), 1 << 30)


@pytest.mark.parametrize(
    "change",
    [
        {"first": b"0" * 26},
        {"last": b"7" * 26},
        {"records": 1},
        {"hashes": segfile.BLOOM_TRIGRAMS},
        {"bloom": b"\xff" * 64},
    ],
)
def test_an_index_that_says_something_else_is_not_kept(change):
    data = body(1000)
    enc = with_entry(segfile.encode(data, 3, 8192), 1, **change)
    got, idx = segfile.decode_bounded(enc, 1 << 30)
    assert got == data  # the records are fine
    assert not segfile.index_describes(got, idx)


def test_a_crc_that_does_not_match_its_frame_is_refused():
    data = body(800)
    enc = segfile.encode(data, 3, 4096)
    blk = segfile.read_index(enc).blocks[1]
    assert blk.crc == zlib.crc32(enc[blk.offset : blk.offset + blk.clen])
    with pytest.raises(segfile.FormatError, match="block 1: .*CRC-32"):
        segfile.decode_bounded(with_entry(enc, 1, crc=blk.crc ^ 0x80), 1 << 30)


def test_a_version_1_index_is_read_and_its_file_not_kept_as_sent():
    """Files of the version before block CRCs stay readable (their frames are
    verified by content checksum); a receiver re-encodes one rather than keep
    an index without CRCs."""
    data = body(900)
    enc = segfile.encode(data, 3, 4096)
    idx = segfile.read_index(enc)
    v1 = enc[: idx.data_end] + segfile.encode_index([dataclasses.replace(b, crc=None) for b in idx.blocks], idx.level)
    assert v1[idx.data_end + 12] == 1  # the index version byte, after the frame header and "OKLI"
    got, idx1 = segfile.decode_bounded(v1, 1 << 30)
    assert got == data and all(b.crc is None for b in idx1.blocks)
    assert [dataclasses.replace(b, crc=None) for b in idx.blocks] == idx1.blocks
    assert not segfile.index_describes(got, idx1)
    assert segfile.decode(v1) == data


def test_a_level_the_store_cannot_have_is_not_kept():
    data = body(200)
    enc = segfile.encode(data, 3)
    idx = segfile.read_index(enc)
    odd = enc[: idx.data_end] + segfile.encode_index(idx.blocks, 0)
    got, idx0 = segfile.decode_bounded(odd, 1 << 30)
    assert not segfile.index_describes(got, idx0)
