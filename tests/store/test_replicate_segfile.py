"""/store/replicate takes a segment file (what members advertising
``replicate_segfile`` send): bounded before it is expanded, refused whole when
damaged, deduplicated like plain bodies, and kept as received when its index
is what this node would write. A real node over real HTTP."""

from __future__ import annotations

import dataclasses
import time
import zlib
from datetime import UTC, datetime

import httpx
import pytest
import zstandard
from conftest import NodeProc, sample_lines

from oklog.net.http import MAX_BODY
from oklog.records import segfile
from oklog.records.record import make_headers, now_ms, stamp_lines
from oklog.store.log import crc_hex

ARGS = ["-ingest.segment-flush-age", "0.3s", "-store.segment-replication-factor", "1"]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = NodeProc(tmp_path_factory.mktemp("segfile-node"), list(ARGS)).start()
    yield n
    n.kill()


def body(ms: int, first: int, n: int, topic: bytes = b"default") -> bytes:
    return stamp_lines(sample_lines(n, seed=first), make_headers(ms, first, n, topic))


def put(node: NodeProc, data: bytes) -> httpx.Response:
    return httpx.post(node.url + "/store/replicate", content=data, timeout=60, auth=node.member_auth())


def segments(node: NodeProc) -> list[str]:
    return [s["name"] for s in httpx.get(node.url + "/store/segments", timeout=10, auth=node.member_auth()).json()["segments"]]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def held(node: NodeProc, ms: int, q: str = "") -> list[bytes]:
    """The node's own records of millisecond ``ms``."""
    params = {"from": iso(ms), "to": iso(ms), "q": q}
    r = httpx.get(node.url + "/store/_query", params=params, timeout=30, auth=node.member_auth())
    assert r.status_code == 200, r.text
    return [ln for ln in r.content.split(b"\n")[:-1] if ln]


def lying_index(data: bytes, **change: int) -> bytes:
    """``data``'s segment file with its first block's index entry changed."""
    enc = segfile.encode(data)
    idx = segfile.read_index(enc)
    blocks = [dataclasses.replace(idx.blocks[0], **change), *idx.blocks[1:]]
    return enc[: idx.data_end] + segfile.encode_index(blocks, idx.level)


def test_a_segment_file_is_stored_as_received(node):
    ms = now_ms() - 60_000
    data = body(ms, 0, 3000)
    enc = segfile.encode(data, 3, block_size=64 << 10)
    assert len(segfile.read_index(enc).blocks) > 1
    r = put(node, enc)
    assert r.status_code == 200, r.text
    # A name carries the CRC-32 of the file's bytes: the file is the body as sent.
    assert r.text.split() == [r.text.split()[0]] and f"~{crc_hex(zlib.crc32(enc))}." in r.text
    assert sorted(held(node, ms)) == sorted(data.split(b"\n")[:-1])


def test_a_file_over_the_bound_is_refused_before_it_is_expanded(node):
    ms = now_ms() - 120_000
    before = segments(node)
    # The index declares more records' bytes than a replicated body may hold.
    r = put(node, lying_index(body(ms, 0, 50), rawlen=MAX_BODY + 1))
    assert r.status_code == 413, r.text
    assert f"exceeds the {MAX_BODY}-byte limit" in r.text
    # An index that understates a frame's size: the frame header is read
    # before the frame is expanded (this one would expand to more than the bound).
    line = b"01ARZ3NDEKTSV4RRFFQ69G5FAV default " + b"z" * 90 + b"\n"
    n = MAX_BODY // len(line) + 1
    cobj = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True).compressobj(size=n * len(line))
    chunk = line * 8192
    parts = [cobj.compress(chunk) for _ in range(n // 8192)] + [cobj.compress(line * (n % 8192)), cobj.flush()]
    frame = b"".join(parts)
    blk = segfile.Block(line[:26], line[:26], 0, len(frame), len(line), 1, segfile.BLOOM_GRAMS, b"\0" * 8)
    r = put(node, frame + segfile.encode_index([blk], 3))
    assert r.status_code == 400, r.text
    assert "its index entry says" in r.text
    assert segments(node) == before
    assert node.answering()


def test_a_damaged_block_is_refused_and_nothing_is_stored(node):
    ms = now_ms() - 180_000
    enc = bytearray(segfile.encode(body(ms, 0, 2000), 3, block_size=64 << 10))
    idx = segfile.read_index(enc)
    victim = idx.blocks[1]
    enc[victim.offset + victim.clen // 2] ^= 0x40
    before = segments(node)
    r = put(node, bytes(enc))
    assert r.status_code == 400, r.text
    assert "bad segment file: block 1" in r.text
    assert segments(node) == before
    assert held(node, ms) == []


def test_a_body_partly_held_already_is_stored_once(node):
    ms = now_ms() - 240_000
    recs = body(ms, 0, 150).split(b"\n")[:-1]
    first = b"".join(r + b"\n" for r in recs[:100])
    second = b"".join(r + b"\n" for r in recs[50:])
    r = put(node, first)  # plain, as an older member sends
    assert r.status_code == 200, r.text
    r = put(node, segfile.encode(second))
    assert r.status_code == 200, r.text
    assert r.headers["X-Oklog-Held"] == "50"
    got = held(node, ms)
    assert len(got) == 150 == len({g[:26] for g in got})
    assert sorted(got) == sorted(set(first.split(b"\n")[:-1]) | set(second.split(b"\n")[:-1]))


def test_an_index_this_node_would_not_write_is_not_kept(node):
    """Blooms that would hide records from queries: the records are stored,
    the sender's file is not."""
    ms = now_ms() - 300_000
    data = body(ms, 0, 500)
    enc = lying_index(data, bloom=b"\0" * len(segfile.read_index(segfile.encode(data)).blocks[0].bloom))
    r = put(node, enc)
    assert r.status_code == 200, r.text
    assert len(r.text.split()) == 1 and f"~{crc_hex(zlib.crc32(enc))}." not in r.text
    assert sorted(held(node, ms)) == sorted(data.split(b"\n")[:-1])
    rec = data.split(b"\n")[7]
    assert rec in held(node, ms, rec.split(b" ", 2)[2][:40].decode())


def test_several_topics_in_one_file_are_stored_per_topic(node):
    ms = now_ms() - 360_000
    data = body(ms, 0, 100, b"alpha") + body(ms + 1, 0, 100, b"beta")
    r = put(node, segfile.encode(data))
    assert r.status_code == 200, r.text
    assert sorted(n.split(".")[1].split("~")[0] for n in r.text.split()) == ["alpha", "beta"]
    assert sorted(held(node, ms) + held(node, ms + 1)) == sorted(data.split(b"\n")[:-1])


def test_a_file_of_more_topics_than_the_store_splits_is_kept_as_sent(node):
    ms = now_ms() - 420_000
    data = b"".join(body(ms, i * 4, 3, b"t%d" % i) for i in range(70))
    enc = segfile.encode(data)
    r = put(node, enc)
    assert r.status_code == 200, r.text
    assert len(r.text.split()) == 1 and f"~{crc_hex(zlib.crc32(enc))}." in r.text
    assert sorted(held(node, ms)) == sorted(data.split(b"\n")[:-1])


def test_a_damaged_stored_block_is_a_503_to_retry_not_a_500_or_the_senders_fault(node):
    """A body whose duplicate check (or a segment fetch) meets a stored block
    that fails its checksum is answered 503 with Retry-After and the reason:
    the damage is ours, the sender retries (or asks another member), and
    once the scrubber has salvaged the segment the same body is taken."""
    ms = now_ms() - 180_000
    data = body(ms, 0, 3000, b"damaged")
    r = put(node, segfile.encode(data, 3, block_size=64 << 10))
    assert r.status_code == 200, r.text
    (name,) = r.text.split()
    path = node.workdir / "store" / name
    enc = bytearray(path.read_bytes())
    blk = segfile.read_index(bytes(enc)).blocks[1]
    enc[blk.offset + blk.clen // 2] ^= 0x10
    path.write_bytes(bytes(enc))  # same size and stamp kind as a disk's bit flip

    got = httpx.get(node.url + "/store/segment", params={"name": name}, timeout=30, auth=node.member_auth())
    # Nothing has read the block since the flip: this read is the one that finds it.
    assert got.status_code == 503 and "damaged block" in got.text and got.headers["Retry-After"], got.text
    again = put(node, data)  # 503 again, or 200 once the scrubber has salvaged the file
    if again.status_code == 503:
        assert "damaged block" in again.text and again.headers["Retry-After"], again.text
    deadline = time.monotonic() + 60
    while again.status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.5)
        again = put(node, data)
    assert again.status_code == 200, again.text
    # Salvaged blocks plus the resent body: every record once, with its text.
    # The node still says its answer may lack what the quarantined file held
    # (206): it cannot know the resent body restored exactly that.
    r = httpx.get(node.url + "/store/_query", params={"from": iso(ms), "to": iso(ms)}, timeout=30, auth=node.member_auth())
    assert r.status_code == 206 and "quarantine" in r.headers.get("X-Oklog-Errors", ""), (r.status_code, r.headers)
    assert sorted(ln for ln in r.content.split(b"\n") if ln) == sorted(data.split(b"\n")[:-1])
