"""Compressed store segments: format, query over blocks, integrity per block."""

import os
import random
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest
from conftest import CORPUS

from oklog.fs import RealFS, join
from oklog.query.engine import Matcher, Query
from oklog.query.params import parse_params
from oklog.query.plan import plan_query, run_unit
from oklog.records import segfile
from oklog.records.record import ULIDSource, stamp_lines
from oklog.store.compact import (
    COLD_BLOCK_SIZE,
    COMPACT_LEVEL,
    IDLE_LEVEL,
    CompactStats,
    plan,
    run_job,
)
from oklog.store.log import StoreLog


def corpus_dir() -> Path:
    """The loghub corpus: $OKLOG_CORPUS, ../shared beside the checkout, or
    /work/shared. Missing is a failure here, not a skip."""
    for d in (os.environ.get("OKLOG_CORPUS"), CORPUS, "/work/shared/corpus/loghub"):
        if d and sorted(Path(d).glob("*.log")):
            return Path(d)
    pytest.fail(f"loghub corpus not found (looked in $OKLOG_CORPUS, {CORPUS}, /work/shared/corpus/loghub)")


def sample_lines(n: int, seed: int) -> list[bytes]:
    lines = [ln for f in sorted(corpus_dir().glob("*.log")) for ln in f.read_bytes().split(b"\n")[:-1]]
    rnd = random.Random(seed)
    return [rnd.choice(lines) for _ in range(n)]


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(segfile, "BLOCK_SIZE", 16 << 10)  # many blocks from little data


def body(n: int, seed: int, topic: bytes = b"default", start_ms: int = 10_000) -> bytes:
    src = ULIDSource(iter(range(start_ms + seed * 10**6, 10**14, 3)).__next__)
    lines = [ln.rstrip(b"\r") for ln in sample_lines(n, seed)]
    return b"".join(stamp_lines(lines[i : i + 20], src.headers(len(lines[i : i + 20]), topic)) for i in range(0, n, 20))


def query(store: StoreLog, q: bytes = b"", regex: bool = False, **params) -> bytes:
    p = parse_params({"q": [q.decode()], "regex": ["true" if regex else "false"], **{k: [v] for k, v in params.items()}})
    qp = plan_query(store, p)
    try:
        m = Matcher(Query(q, regex))
        return b"".join(run_unit(qp, m, u) for u in qp.units)
    finally:
        qp.close()


def grep(records: bytes, tmp_path, *args: str) -> bytes:
    path = tmp_path / "records.txt"
    path.write_bytes(records)
    return subprocess.run(["grep", "-a", *args, str(path)], capture_output=True, check=False).stdout


def test_round_trip_and_zstdcat_prints_the_records(tmp_path, small_blocks):
    data = body(3000, 1)
    enc = segfile.encode(data, 3)
    idx = segfile.read_index(enc)
    assert len(idx.blocks) > 5 and idx.raw_bytes == len(data) and idx.records == 3000
    assert segfile.decode(enc) == data
    if shutil.which("zstdcat") is None:
        pytest.fail("zstdcat not installed (make deps)")
    f = tmp_path / "x.seg"
    f.write_bytes(enc)
    assert subprocess.run(["zstdcat", str(f)], capture_output=True, check=True).stdout == data


def test_cold_blocks_have_a_window_spanning_each_and_zstdcat_reads_them(tmp_path):
    """Idle recompression's 8 MiB blocks at level 9 (whose own window is 4 MiB): each frame's
    window covers its whole block, the file is smaller than with compaction's 1 MiB
    level-3 blocks, and zstdcat and the reader both print the records."""
    data = body(100_000, 22)  # ~12 MiB of loghub lines
    enc = segfile.encode(data, IDLE_LEVEL, COLD_BLOCK_SIZE)
    idx = segfile.read_index(enc)
    assert len(idx.blocks) == 2 and max(b.rawlen for b in idx.blocks) > 4 << 20
    small = segfile.encode(data, segfile.DEFAULT_LEVEL)
    assert len(enc) < 0.8 * len(small)
    assert segfile.decode(enc) == data
    f = tmp_path / "big.seg"
    f.write_bytes(enc)
    assert subprocess.run(["zstdcat", str(f)], capture_output=True, check=True).stdout == data


def test_idle_compaction_raises_full_segments_and_leaves_small_ones_to_the_cold_age(tmp_path):
    """With nothing else to do, compaction recompresses a segment of at least half
    the target at the idle level in 8 MiB blocks; a smaller one (which the next
    batches may still be concatenated to) waits for the cold level and age."""
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    full, small = body(3000, 21), body(300, 23, start_ms=10**9)
    seg_full, seg_small = store.write(full)[0], store.write(small)[0]
    assert seg_full.level == seg_small.level == COMPACT_LEVEL
    target = 2 * len(full)  # the first is half the target, the second far below it
    (job,) = plan(store.segments(), target, idle_level=IDLE_LEVEL)
    assert job.kind == "recompress" and job.inputs == [seg_full] and job.level == IDLE_LEVEL
    assert job.block_size == COLD_BLOCK_SIZE
    (new,) = run_job(store, job, target, CompactStats())
    assert new.level == IDLE_LEVEL and store.records(new) == full
    assert plan(store.segments(), target, idle_level=IDLE_LEVEL) == []
    assert plan(store.segments(), target, idle_level=IDLE_LEVEL, cold_level=19, cold_before=seg_full.first) == []
    (job,) = plan(store.segments(), target, idle_level=IDLE_LEVEL, cold_level=19, cold_before="Z" * 26)
    assert job.inputs[0].level < 19 and job.level == 19  # cold: both, oldest first
    assert plan(store.segments(), target, idle_level=0) == []  # 0: never


def test_every_store_segment_zstdcats_to_its_records(tmp_path, small_blocks):
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    want = set()
    for seed in range(4):  # overlapping bodies, then compaction
        b = body(800, seed, random.Random(seed).choice([b"web", b"db"]))
        store.write(b)
        want |= set(b.splitlines(keepends=True))
    while jobs := plan(store.segments(), 200_000):
        run_job(store, jobs[0], 200_000, CompactStats())
    got = []
    for s in store.segments():
        out = subprocess.run(["zstdcat", store.path(s)], capture_output=True, check=True).stdout
        assert out == store.records(s)
        got += out.splitlines(keepends=True)
    assert sorted(got) == sorted(want)


@pytest.mark.parametrize(
    "q,regex,grep_args",
    [
        (b"", False, []),
        (b"Failed password", False, ["-F", "Failed password"]),
        (b"blk_-6952295868487656571", False, ["-F", "blk_-6952295868487656571"]),
        (b"nosuchtermanywhere", False, ["-F", "nosuchtermanywhere"]),
        (b"Failed password for (invalid user )?[a-z]+", True, ["-E", "Failed password for (invalid user )?[a-z]+"]),
        (b"session (opened|closed)", True, ["-E", "session (opened|closed)"]),
    ],
)
def test_query_equals_grep_line_for_line(tmp_path, small_blocks, q, regex, grep_args):
    """Compressed and plain segments together (an old store being compacted),
    overlapping, with copies: results equal GNU grep over the records."""
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    a, b, c = body(2500, 1), body(2500, 2), body(600, 3)
    store.write(a)
    store.write(b)
    store.level = 0  # a plain segment, the format before compression
    store.write(c)
    store.level = 3
    store.write(b"".join(sorted(a.splitlines(keepends=True)[::7])))  # copies
    records = b"".join(sorted(set(a.splitlines(keepends=True)) | set(b.splitlines(keepends=True)) | set(c.splitlines(keepends=True))))
    want = grep(records, tmp_path, *grep_args) if grep_args else records
    assert query(store, q, regex) == want
    assert q == b"" or len(want) < len(records)


def test_time_bounds_select_blocks_and_cut_inside_them(tmp_path, small_blocks):
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    data = body(4000, 5)
    (seg,) = store.write(data)
    recs = data.splitlines(keepends=True)
    lo, hi = recs[1234][:26], recs[2777][:26]
    from oklog.records.record import decode_ulid

    lo_ms, hi_ms = decode_ulid(lo)[0], decode_ulid(hi)[0]
    want = b"".join(r for r in recs if lo_ms <= decode_ulid(r[:26])[0] <= hi_ms)
    from datetime import UTC, datetime

    iso = lambda ms: datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")  # noqa: E731
    assert query(store, **{"from": iso(lo_ms), "to": iso(hi_ms)}) == want
    p = parse_params({"from": [iso(lo_ms)], "to": [iso(hi_ms)]})
    qp = plan_query(store, p)
    qp.close()
    total = len(store.index(seg).blocks)
    assert qp.bytes < len(data) and len(qp.groups[0].blocks[0][1]) < total
    # read_range: the same records, from compressed and plain segments alike
    assert store.read_range(seg, recs[100][:26], recs[3000][:26]) == b"".join(recs[100:3000])
    store.level = 0
    (plain,) = store.write(b"".join(recs[:50]))
    assert store.read_range(plain, recs[10][:26], recs[20][:26]) == b"".join(recs[10:20])


def test_bloom_skips_blocks_that_cannot_hold_a_rare_term(tmp_path, small_blocks):
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    data = body(6000, 8)
    store.write(data)
    rare = b"blk_-6952295868487656571"
    qp = plan_query(store, parse_params({"q": [rare.decode()]}))
    qp.close()
    n_blocks = qp.blocks_skipped + sum(len(b) for g in qp.groups for _, b in g.blocks)
    hits = data.count(rare)
    assert qp.blocks_skipped >= n_blocks - 2 * hits - 2  # few false positives
    assert query(store, rare) == b"".join(r for r in data.splitlines(keepends=True) if rare in r)
    # a regex's required literal is used the same way
    qp = plan_query(store, parse_params({"q": ["Failed password for [a-z]+ from"], "regex": ["true"]}))
    qp.close()
    assert qp.blocks_skipped > 0


def test_a_flipped_byte_costs_only_its_block(tmp_path, small_blocks):
    fs = RealFS()
    store = StoreLog(fs, str(tmp_path / "store"))
    data = body(4000, 9)
    (seg,) = store.write(data)
    idx = store.index(seg)
    victim = idx.blocks[3]
    raw = bytearray(fs.read(store.path(seg)))
    raw[victim.offset + victim.clen // 2] ^= 0x40
    fs.write_atomic(store.path(seg), bytes(raw))
    store = StoreLog(fs, store.root)  # a restart: the flip happened at rest
    (bad,) = store.segments()
    assert store.scrub(bad) is False
    (report,) = store.stats()["quarantined"]
    assert "block 3" in report
    assert fs.exists(join(store.quarantine_dir, bad.name))
    lost = set(segfile.decompress_block(segfile.encode(data, 3), victim).splitlines(keepends=True))
    assert len(lost) == victim.records
    got = b"".join(store.records(s) for s in store.segments())
    assert got == b"".join(r for r in data.splitlines(keepends=True) if r not in lost)
    assert store.dropped_records == victim.records
    assert query(store) == got  # the rest is served


def test_ulid_random_part_keeps_counting_across_milliseconds():
    """Consecutive ULIDs of a connection differ in their last characters only
    (what compresses), and stay unique and increasing."""
    from oklog.records.record import ULID_LEN, decode_ulid

    clock = iter([5, 5, 6, 9, 9, 12]).__next__
    src = ULIDSource(clock)
    ulids = [h[:ULID_LEN] for n in (3, 4, 1, 2, 5, 6) for h in src.headers(n)]
    assert ulids == sorted(ulids) and len(set(ulids)) == len(ulids)
    rands = [decode_ulid(u)[1] for u in ulids]
    assert rands == list(range(rands[0], rands[0] + len(rands)))


def test_concat_copies_blocks_and_merge_recompresses_only_overlapping_runs(tmp_path, small_blocks):
    fs = RealFS()
    store = StoreLog(fs, str(tmp_path / "store"))
    a, b = body(1500, 11), body(1500, 12)  # seed 12's clock starts later: disjoint
    sa, sb = store.write(a)[0], store.write(b)[0]
    frames = {bytes(fs.read(store.path(s))[blk.offset : blk.offset + blk.clen]) for s in (sa, sb) for blk in store.index(s).blocks}
    (job,) = plan(store.segments(), 10 << 20)
    assert job.kind == "concat"
    (out,) = run_job(store, job, 10 << 20, CompactStats())
    out_buf = fs.read(store.path(out))
    assert {bytes(out_buf[blk.offset : blk.offset + blk.clen]) for blk in store.index(out).blocks} == frames
    assert store.records(out) == a + b and store.scrub(out)
    # Copied blocks keep a CRC of their (verified) frame bytes in the output's version 2 index.
    assert all(
        blk.crc == zlib.crc32(bytes(out_buf[blk.offset : blk.offset + blk.clen])) for blk in store.index(out).blocks
    )
    # A body overlapping the tail of the store: only the blocks it overlaps are
    # decompressed and compressed again; the others are copied.
    recs = (a + b).splitlines(keepends=True)
    late = b"".join(recs[-300:])  # copies of the last records (a replica's batch)
    (plain,) = store.write(late)
    assert plain.level == 0  # overlaps a stored segment: written plain, compaction compresses it
    (job,) = plan(store.segments(), 10 << 20)
    assert job.kind == "merge"
    (merged,) = run_job(store, job, 10 << 20, CompactStats())
    assert store.records(merged) == a + b and merged.level == 3
    kept = {bytes(fs.read(store.path(merged))[blk.offset : blk.offset + blk.clen]) for blk in store.index(merged).blocks}
    assert len(kept & frames) >= len(frames) - 3


def test_old_plain_segments_are_served_and_rewritten_compressed_when_idle(tmp_path):
    fs = RealFS()
    store = StoreLog(fs, str(tmp_path / "store"))
    store.level = 0  # the format before compression
    data = body(2000, 13)
    (old,) = store.write(data)
    assert fs.read(store.path(old)) == data
    store = StoreLog(fs, store.root)  # a restart of the new version
    (seg,) = store.segments()
    assert seg.level == 0 and query(store) == data
    (job,) = plan(store.segments(), 128 << 20)
    assert job.kind == "recompress" and job.level == 3
    (new,) = run_job(store, job, 128 << 20, CompactStats())
    assert new.level == 3 and new.size < len(data) / 3 and store.records(new) == data
    assert plan(store.segments(), 128 << 20) == []
    # cold: recompressed once more at the cold level, larger blocks
    (job,) = plan(store.segments(), 128 << 20, cold_level=19, cold_before="Z" * 26)
    assert job.kind == "recompress" and job.level == 19
    (cold,) = run_job(store, job, 128 << 20, CompactStats())
    assert cold.level == 19 and cold.size <= new.size and store.records(cold) == data
    assert plan(store.segments(), 128 << 20, cold_level=19, cold_before="Z" * 26) == []
    reloaded = StoreLog(fs, store.root)
    assert [(s.level, s.raw_size) for s in reloaded.segments()] == [(19, len(data))]


def test_segment_fetch_sends_plain_records(tmp_path):
    """GET /store/segment: the records whatever the file's format, what every
    node's /store/replicate (this version's and older ones') takes."""
    import httpx
    import trio

    from oklog.node.config import Addr, NodeConfig
    from oklog.node.root import open_node
    from oklog.records.record import now_ms

    data = body(500, 0, start_ms=now_ms() - 60_000)  # recent: retention keeps it

    async def main() -> None:
        lo = "127.0.0.1"
        cfg = NodeConfig(api=Addr(lo, 0), ingest_fast=Addr(lo, 0), ingest_durable=Addr(lo, 0),
                         ingest_bulk=Addr(lo, 0), cluster=Addr(lo, 0), ingest_path=str(tmp_path / "ingest"),
                         store_path=str(tmp_path / "store"))
        async with trio.open_nursery() as nursery:
            n = open_node(cfg)
            await nursery.start(n.run)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{n.bound.api[1]}", timeout=10) as c:
                r = await c.post("/store/replicate", content=data)
                assert r.status_code == 200
                name = r.text.strip()  # written plain: queryable at once
                assert not segfile.is_compressed((tmp_path / "store" / name).read_bytes()[:4])
                with trio.fail_after(30):  # compaction compresses it
                    while True:
                        (seg,) = (await c.get("/store/segments")).json()["segments"]
                        path = tmp_path / "store" / seg["name"]
                        if path.exists() and segfile.is_compressed(path.read_bytes()[:4]):
                            break
                        await trio.sleep(0.2)
                got = await c.get("/store/segment", params={"name": seg["name"]})
                assert got.status_code == 200 and got.content == data
                assert (await c.get("/store/query")).content == data
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_bloom_has_every_trigram_of_every_line_and_none_of_the_headers():
    """No false negatives, also past the first 65,536 distinct trigrams (the
    list grows), and the ULID and topic are not indexed."""
    import oklog._fast as _fast

    rnd = random.Random(5)
    src = ULIDSource(iter(range(1, 10**9)).__next__)
    lines = [bytes(rnd.randrange(32, 127) for _ in range(rnd.randrange(0, 200))) for _ in range(6000)]
    data = stamp_lines(lines, src.headers(len(lines), b"topicxyz"))
    bloom = _fast.trigram_bloom(data, 0, len(data), 3)
    for ln in lines:
        for i in range(0, max(0, len(ln) - 2), 7):
            assert _fast.bloom_may_contain(bloom, ln[i : i + 12])
    absent = [b"topicxyz", data[:26]]  # in every record's header only
    assert not any(_fast.bloom_may_contain(bloom, a) for a in absent)
    # a block of one line: a bloom of a few bytes still answers
    small = stamp_lines([b"hello world"], src.headers(1))
    b2 = _fast.trigram_bloom(small, 0, len(small), 3)
    assert _fast.bloom_may_contain(b2, b"lo wor") and not _fast.bloom_may_contain(b2, b"zzzz")


def test_a_job_told_to_stop_leaves_its_inputs_and_no_temporary_file(tmp_path):
    fs = RealFS()
    store = StoreLog(fs, str(tmp_path / "store"))
    store.level = 0
    store.write(body(3000, 15))
    before = store.segments()
    (job,) = plan(before, 128 << 20)
    assert run_job(store, job, 128 << 20, CompactStats(), should_stop=lambda: True) == []
    assert store.segments() == before
    assert not [n for n in fs.listdir(store.root) if n.endswith(".tmp")]


def test_a_damaged_index_still_gives_back_every_intact_block(tmp_path, small_blocks):
    fs = RealFS()
    store = StoreLog(fs, str(tmp_path / "store"))
    data = body(3000, 16)
    (seg,) = store.write(data)
    raw = fs.read(store.path(seg))
    idx = store.index(seg)
    cut = raw[: idx.data_end + 20]  # torn inside the index frame
    fs.write_atomic(store.path(seg), cut)
    store = StoreLog(fs, store.root)
    (bad,) = store.segments()
    assert query(store) == b""  # not served while its index does not read
    assert store.scrub(bad) is False
    assert "index" in store.stats()["quarantined"][0]
    assert b"".join(store.records(s) for s in store.segments()) == data
