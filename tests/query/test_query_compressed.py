"""The query path over compressed segments: blooms that rule out rare
identifiers, and answers equal to a plain filter of the records."""

from __future__ import annotations

import dataclasses
import random
import zlib

import pytest

import oklog._fast as _fast
from oklog.fs import RealFS
from oklog.query.engine import Matcher, Query
from oklog.query.format import FORMATS, MODE_LINES, MODE_RAW, MODE_ULID
from oklog.query.params import QueryParams
from oklog.query.plan import plan_query, run_unit
from oklog.records import segfile
from oklog.records.record import ULIDSource, stamp_lines
from oklog.store.log import StoreLog, crc_hex, segment_name


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(segfile, "BLOCK_SIZE", 16 << 10)


def hdfs_lines(n: int, seed: int) -> list[bytes]:
    """Lines full of digits, as HDFS logs are: every digit trigram occurs in
    every block, so trigrams alone cannot rule out a block id."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        blk = rnd.randrange(10**18, 10**19)
        out.append(
            b"081109 %06d %d INFO dfs.DataNode$PacketResponder: Received block blk_-%d of size %d from /10.250.%d.%d"
            % (rnd.randrange(10**6), i, blk, rnd.randrange(1 << 26), rnd.randrange(256), rnd.randrange(256))
        )
    return out


def store_of(tmp_path, lines: list[bytes]) -> StoreLog:
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    src = ULIDSource(iter(range(10_000, 10**14, 3)).__next__)
    store.write(stamp_lines(lines, src.headers(len(lines), b"default")))
    return store


def run(store: StoreLog, q: bytes, regex: bool = False, fmt=None) -> tuple[bytes, int, int]:
    query = Query(q, regex)
    params = QueryParams(lo=b"0" * 26, hi_excl=b"~", query=query)
    plan = plan_query(store, params)
    try:
        m = Matcher(query)
        out = b"".join(run_unit(plan, m, u, fmt) for u in plan.units)
        return out, plan.blocks_skipped, sum(len(b) for _, b in (x for g in plan.groups for x in g.blocks))
    finally:
        plan.close()


def test_a_rare_block_id_skips_the_blocks_without_it(tmp_path, monkeypatch):
    monkeypatch.setattr(segfile, "BLOCK_SIZE", 64 << 10)
    lines = hdfs_lines(12000, 1)
    rare = b"blk_-6952295868487656571"
    for i in (5, 7100):  # in two blocks only
        lines[i] = lines[i][:40] + rare + b" " + lines[i][40:]
    store = store_of(tmp_path, lines)
    (seg,) = store.segments()
    blocks = store.index(seg).blocks
    assert len(blocks) > 20
    with_it = sum(1 for b in blocks if rare in segfile.decompress_block(store.fs.read(store.path(seg)), b))
    assert with_it == 2
    # the trigram filter alone lets (nearly) every block through on such lines
    raw = store.fs.read(store.path(seg))
    tri = [_fast.trigram_bloom(segfile.decompress_block(raw, b), 0, b.rawlen, 3) for b in blocks]
    assert sum(_fast.bloom_may_contain(t, rare) for t in tri) > len(blocks) // 2
    out, skipped, read = run(store, rare)
    assert out.count(b"\n") == 2 and all(rare in ln for ln in out.splitlines())
    assert read <= 4 and skipped >= len(blocks) - 4


def test_gram_bloom_has_every_gram_of_every_line(tmp_path):
    rnd = random.Random(7)
    src = ULIDSource(iter(range(1, 10**9)).__next__)
    lines = [bytes(rnd.randrange(32, 127) for _ in range(rnd.randrange(0, 200))) for _ in range(6000)]
    data = stamp_lines(lines, src.headers(len(lines), b"topicxyz"))
    bloom = _fast.gram_bloom(data, 0, len(data), 1)
    for ln in lines:
        for i in range(0, max(0, len(ln) - 2), 5):
            lit = ln[i : i + rnd.randrange(3, 30)]
            assert _fast.gram_bloom_may_contain(bloom, lit)
            assert _fast.bloom_may_contain(bloom, lit)  # a trigram-only reader stays correct
    assert not _fast.gram_bloom_may_contain(bloom, b"topicxyz")
    small = stamp_lines([b"hello world"], src.headers(1))
    b2 = _fast.gram_bloom(small, 0, len(small), 1)
    assert _fast.gram_bloom_may_contain(b2, b"lo wor") and not _fast.gram_bloom_may_contain(b2, b"hello x")


def test_segments_with_trigram_blooms_are_still_planned_correctly(tmp_path, small_blocks):
    """Files written before the 5-gram filters (bloom kind 1) are read with
    the trigram check."""
    lines = hdfs_lines(3000, 2)
    store = store_of(tmp_path, lines)
    (seg,) = store.segments()
    path = store.path(seg)
    raw = store.fs.read(path)
    idx = segfile.read_index(raw)
    old = [
        segfile.Block(b.first, b.last, b.offset, b.clen, b.rawlen, b.records, segfile.BLOOM_TRIGRAMS,
                      _fast.trigram_bloom(segfile.decompress_block(raw, b), 0, b.rawlen, 3))
        for b in idx.blocks
    ]
    rewritten = bytes(raw[: idx.data_end]) + segfile.encode_index(old, idx.level)
    (tmp_path / "old").mkdir()
    name = segment_name(seg.first, seg.last, seg.topic, crc_hex(zlib.crc32(rewritten)))
    (tmp_path / "old" / name).write_bytes(rewritten)
    old_store = StoreLog(RealFS(), str(tmp_path / "old"))
    want = lines[1234]
    out_new, _, _ = run(store, want[30:])
    (oseg,) = old_store.segments()
    assert all(b.hashes == segfile.BLOOM_TRIGRAMS for b in old_store.index(oseg).blocks)
    out_old, _, _ = run(old_store, want[30:])
    assert out_old == out_new and want in out_old


@pytest.mark.parametrize("fmt", [None, "lines", "ulid"])
@pytest.mark.parametrize(
    "q,regex",
    [(b"blk_-1", False), (b"INFO", False), (b"", False), (b"Received block blk_-9\\d+ of", True), (b"zzz", False)],
)
def test_answers_equal_a_plain_filter(tmp_path, small_blocks, q, regex, fmt):
    import re

    lines = hdfs_lines(3000, 3)
    store = store_of(tmp_path, lines)
    out, _, _ = run(store, q, regex, FORMATS[fmt] if fmt else None)
    (seg,) = store.segments()
    records = segfile.decode(store.fs.read(store.path(seg))).splitlines(keepends=True)
    want = []
    for r in records:
        line = r.split(b" ", 2)[2]
        if (re.search(q, line) if regex else q in line) if q else True:
            want.append(r)
    mode = {None: MODE_RAW, "lines": MODE_LINES, "ulid": MODE_ULID}[fmt]
    body = b"".join(want)
    assert out == _fast.format(body, 0, len(body), mode)


def windowed(store: StoreLog, q: bytes, lo: bytes, hi: bytes, regex: bool = False, fmt=None) -> tuple[bytes, int]:
    query = Query(q, regex)
    plan = plan_query(store, QueryParams(lo=lo, hi_excl=hi, query=query))
    try:
        m = Matcher(query)
        return b"".join(run_unit(plan, m, u, fmt) for u in plan.units), plan.damaged
    finally:
        plan.close()


@pytest.mark.parametrize("fmt", [None, "lines", "ulid"])
def test_the_one_call_scan_equals_the_block_by_block_one(tmp_path, monkeypatch, fmt):
    """zscan (decompress, cut to the unit's keys, grep, format in C) gives
    byte for byte what decompressing in Python and scanning each block gives,
    for windows that cut blocks, units cut at keys, and overlapping segments
    (merged, copies dropped)."""
    import oklog.query.plan as sq

    if not _fast.zscan_available():
        pytest.skip("no libzstd on this host")
    monkeypatch.setattr(segfile, "BLOCK_SIZE", 16 << 10)
    monkeypatch.setattr(sq, "UNIT_BYTES", 40 << 10)
    lines = hdfs_lines(6000, 4)
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    src = ULIDSource(iter(range(10_000, 10**14, 3)).__next__)
    recs = stamp_lines(lines, src.headers(len(lines), b"default"))
    store.write(recs)
    rs = recs.splitlines(keepends=True)
    store.write(b"".join(rs[2000:2600:3]))  # copies of some records, overlapping in time
    ulids = [r[:26] for r in rs]
    windows = [(b"0" * 26, b"~"), (ulids[123], ulids[4567]), (ulids[2100] + b"0", ulids[2500]), (ulids[77], ulids[78])]
    fm = FORMATS[fmt] if fmt else None
    for q, regex in [(b"blk_-1", False), (b"", False), (b"of size 1", False), (b"INFO", False), (b"blk_-9\\d+ of", True)]:
        for lo, hi in windows:
            fast, dmg = windowed(store, q, lo, hi, regex, fm)
            monkeypatch.setattr(_fast, "zscan_available", lambda: False)
            slow, _ = windowed(store, q, lo, hi, regex, fm)
            monkeypatch.undo()
            monkeypatch.setattr(segfile, "BLOCK_SIZE", 16 << 10)
            monkeypatch.setattr(sq, "UNIT_BYTES", 40 << 10)
            assert fast == slow and dmg == 0
            sel = [r for r in rs if lo <= r[:26] < hi and (not q or regex or q in r.split(b" ", 2)[2])]
            if not regex:
                body = b"".join(sel)
                want = _fast.format(body, 0, len(body), {None: MODE_RAW, "lines": MODE_LINES, "ulid": MODE_ULID}[fmt])
                assert fast == want


@pytest.mark.parametrize("with_crc", [True, False], ids=["index-v2-crc", "index-v1-checksum"])
@pytest.mark.parametrize("where", ["middle", "content-checksum"])
def test_zscan_reports_a_damaged_frame_and_returns_the_others(tmp_path, with_crc, where):
    """A flipped byte anywhere in a frame (its content checksum included) is
    caught: by the CRC-32 of the frame's bytes in a version 2 index, by the
    content checksum for a version 1 file (no CRCs)."""
    if not _fast.zscan_available():
        pytest.skip("no libzstd on this host")
    data = stamp_lines(hdfs_lines(3000, 5), ULIDSource(iter(range(10_000, 10**14, 3)).__next__).headers(3000))
    enc = bytearray(segfile.encode(data, 3, 64 << 10))
    blocks = segfile.read_index(bytes(enc)).blocks
    assert all(b.crc is not None for b in blocks)
    if not with_crc:
        blocks = [dataclasses.replace(b, crc=None) for b in blocks]
    enc[blocks[1].offset + (blocks[1].clen // 2 if where == "middle" else blocks[1].clen - 2)] ^= 0x10
    out, bad = _fast.zscan(bytes(enc), segfile.frame_table(blocks), None, MODE_RAW, b"0" * 26, b"~")
    assert bad == [1]
    good = [segfile.decompress_block(bytes(enc), b) for i, b in enumerate(blocks) if i != 1]
    assert out == good
    with pytest.raises(ValueError):
        _fast.zscan(bytes(enc), (len(enc) + 1).to_bytes(8, "little") + bytes(24), None, MODE_RAW, b"0", b"~")
    with pytest.raises(ValueError):  # triples (the version before CRCs) are refused, not misread
        _fast.zscan(bytes(enc), bytes(24), None, MODE_RAW, b"0", b"~")


def test_zscan_and_zcount_refuse_a_frame_whose_crc_differs_from_its_index_entry():
    """A frame that decodes and passes its content checksum but whose bytes
    differ from the CRC its index entry records is reported, not trusted."""
    if not _fast.zscan_available():
        pytest.skip("no libzstd on this host")
    data = stamp_lines(hdfs_lines(2000, 6), ULIDSource(iter(range(10_000, 10**14, 3)).__next__).headers(2000))
    enc = segfile.encode(data, 3, 64 << 10)
    blocks = segfile.read_index(enc).blocks
    lying = [dataclasses.replace(b, crc=(b.crc or 0) ^ 1) if i == 0 else b for i, b in enumerate(blocks)]
    out, bad = _fast.zscan(enc, segfile.frame_table(lying), None, MODE_RAW, b"0" * 26, b"~")
    assert bad == [0]
    assert out == [segfile.decompress_block(enc, b) for b in blocks[1:]]
    matched, outside, bad = _fast.zcount(enc, segfile.frame_table(lying), [], [], False, b"0" * 26, b"~", 0, 0, None)
    assert bad == [0]
    assert matched == sum(b.records for b in blocks[1:]) and outside == 0


def test_topic_filters_regexes_and_several_terms_over_compressed_blocks(tmp_path, monkeypatch):
    """Matchers the C scan cannot decide alone (a topic filter, a regex, -q
    A -q B -v C) get the records holding their literal from it and decide
    themselves: the same answer as the block-by-block path and a plain filter."""
    import re

    from oklog.query.terms import build_matcher

    monkeypatch.setattr(segfile, "BLOCK_SIZE", 16 << 10)
    lines = hdfs_lines(4000, 6)
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    src = ULIDSource(iter(range(10_000, 10**14, 3)).__next__)
    a = stamp_lines(lines[:2000], src.headers(2000, b"alpha"))
    b = stamp_lines(lines[2000:], src.headers(2000, b"beta"))
    merged = b"".join(sorted(a.splitlines(keepends=True) + b.splitlines(keepends=True)))
    store.write(merged)
    recs = merged.splitlines(keepends=True)

    def answer(m, query: Query) -> bytes:
        plan = plan_query(store, QueryParams(lo=b"0" * 26, hi_excl=b"~", query=query))
        try:
            return b"".join(run_unit(plan, m, u) for u in plan.units)
        finally:
            plan.close()

    cases = [
        (Query(b"blk_-1", False, b"alpha"), lambda r: r.split(b" ")[1] == b"alpha" and b"blk_-1" in r.split(b" ", 2)[2]),
        (Query(b"", False, b"beta"), lambda r: r.split(b" ")[1] == b"beta"),
        (Query(b"Received block blk_-[89]\\d+ of size 1", True),
         lambda r: re.search(rb"Received block blk_-[89]\d+ of size 1", r.split(b" ", 2)[2]) is not None),
    ]
    for query, keep in cases:
        want = b"".join(r for r in recs if keep(r))
        got = answer(Matcher(query), query)
        monkeypatch.setattr(_fast, "zscan_available", lambda: False)
        slow = answer(Matcher(query), query)
        monkeypatch.undo()
        monkeypatch.setattr(segfile, "BLOCK_SIZE", 16 << 10)
        assert got == slow == want and want
    tm = build_matcher([b"blk_-2", b"10.250.1"], False, False, [b"size 3"], None)
    q0 = Query(b"blk_-2")
    want = b"".join(r for r in recs if b"blk_-2" in r and b"10.250.1" in r and b"size 3" not in r)
    assert answer(tm, q0) == want and want


@pytest.mark.parametrize("q", [b"info dfs", b"RECEIVED BLOCK", b"Of SiZe"])
def test_case_insensitive_terms_over_compressed_blocks(tmp_path, small_blocks, q):
    """-i substrings must not take the exact-case C scan (zscan) or its literal
    prefilter: every case variant of the term is found."""
    lines = hdfs_lines(2000, 5)
    store = store_of(tmp_path, lines)
    query = Query(q, False, icase=True)
    plan = plan_query(store, QueryParams(lo=b"0" * 26, hi_excl=b"~", query=query, icase=True))
    try:
        m = Matcher(query)
        out = b"".join(run_unit(plan, m, u, FORMATS["lines"]) for u in plan.units)
    finally:
        plan.close()
    want = b"".join(line + b"\n" for line in lines if q.lower() in line.lower())
    assert want and out == want


HS_PATTERNS = [
    rb"Received block blk_-9[0-9]{18} of",  # a class and a counted repeat after the literal
    rb"of size [0-9]{7} from",  # bounded repeat: lines holding the literal without a match
    rb"PacketResponder: Received (block|packet) blk_-1",  # alternation inside
    rb"from /10\.250\.1[0-9]\.",  # escaped dots
    rb"default 0811",  # the literal also in the topic and line: only the line counts
    rb"size 12?3",  # an optional byte
]


@pytest.mark.parametrize("fmt", [None, "lines", "ulid"])
@pytest.mark.parametrize("pattern", HS_PATTERNS)
def test_regexes_decided_in_c_equal_re2_line_by_line(tmp_path, small_blocks, monkeypatch, pattern, fmt):
    """A regex whose hits Hyperscan alone decides runs in the C scan
    (libhs.so.5): the answer equals RE2 over each line, and the path where
    the Python binding decides the candidates."""
    import re2

    if _fast.hs_compile(b"a", 0) is None or not _fast.zscan_available():
        pytest.skip("no libhs.so.5 or libzstd on this host (make deps installs libhyperscan5)")
    lines = hdfs_lines(3000, 5)
    lines[10] = b"081109 default 0811 at the start of a line, a topic-like prefix"
    store = store_of(tmp_path, lines)
    assert Matcher(Query(pattern, True)).c_verifier() is not None
    out, _, _ = run(store, pattern, True, FORMATS[fmt] if fmt else None)
    (seg,) = store.segments()
    records = segfile.decode(store.fs.read(store.path(seg))).splitlines(keepends=True)
    rx = re2.compile(pattern)
    want = b"".join(r for r in records if rx.search(r.split(b" ", 2)[2].rstrip(b"\n")))
    mode = {None: MODE_RAW, "lines": MODE_LINES, "ulid": MODE_ULID}[fmt]
    assert out == _fast.format(want, 0, len(want), mode)
    assert 0 < want.count(b"\n") < len(lines)
    monkeypatch.setattr(_fast, "hs_compile", lambda *_: None)
    assert Matcher(Query(pattern, True)).c_verifier() is None
    assert run(store, pattern, True, FORMATS[fmt] if fmt else None)[0] == out


def test_hs_compile_refuses_what_it_cannot_take():
    if _fast.hs_compile(b"a", 0) is None:
        pytest.skip("no libhs.so.5 on this host")
    assert _fast.hs_compile(b"a\x00b", 0) is None  # a C string cannot hold NUL
    assert _fast.hs_compile(b"(a", 0) is None  # rejected by Hyperscan: the binding's path decides
    with pytest.raises(ValueError, match="needle"):
        _fast.zscan(b"", b"", None, 0, b"", b"~", _fast.hs_compile(b"a", 0))


@pytest.mark.parametrize("memo_bytes", [32 << 20, 0], ids=["memo", "over-budget"])
@pytest.mark.parametrize("fmt", [None, "lines", "ulid"])
def test_blocks_that_units_share_are_scanned_once_and_answers_stay_exact(tmp_path, monkeypatch, fmt, memo_bytes):
    """Topics interleaved in time are kept in their own segments, whose blocks
    straddle each other's unit cuts: every unit overlapping a block used to
    decompress and scan it again. Each shared block is now scanned once and
    cut per unit (or, past the memo's budget, scanned by each unit as before),
    with the same answer as the block-by-block path and a plain filter."""
    import re

    import oklog.query.plan as sq

    if not _fast.zscan_available():
        pytest.skip("no libzstd on this host")
    scans: list[tuple[str, int]] = []
    whole = sq._zscan_whole

    def counted(plan, seg, blk, *a):
        scans.append((seg.name, blk.offset))
        return whole(plan, seg, blk, *a)

    def patch() -> None:
        monkeypatch.setattr(segfile, "BLOCK_SIZE", 16 << 10)
        monkeypatch.setattr(sq, "UNIT_BYTES", 24 << 10)
        monkeypatch.setattr(sq, "MEMO_BYTES", memo_bytes)
        monkeypatch.setattr(sq, "_zscan_whole", counted)

    patch()
    rnd = random.Random(9)
    lines = hdfs_lines(6000, 8)
    src = ULIDSource(iter(range(10_000, 10**14, 3)).__next__)
    topics = [b"t%d" % i for i in range(5)]
    recs: list[bytes] = []
    i = 0
    while i < len(lines):  # runs of a few records per topic, as connections interleave
        n = rnd.randrange(1, 40)
        recs += stamp_lines(lines[i : i + n], src.headers(len(lines[i : i + n]), rnd.choice(topics))).splitlines(True)
        i += n
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    store.write(b"".join(recs))
    assert len(store.segments()) == len(topics)
    ulids = [r[:26] for r in recs]
    fm = FORMATS[fmt] if fmt else None
    mode = {None: MODE_RAW, "lines": MODE_LINES, "ulid": MODE_ULID}[fmt]
    for q, regex in [(b"", False), (b"blk_-1", False), (b"of size 3", False), (rb"blk_-9\d+ of size [12]", True)]:
        for lo, hi in [(b"0" * 26, b"~"), (ulids[500], ulids[5100])]:
            scans.clear()
            query = Query(q, regex)
            plan = plan_query(store, QueryParams(lo=lo, hi_excl=hi, query=query))
            try:
                fast = b"".join(run_unit(plan, Matcher(query), u, fm) for u in plan.units)
                memo = plan.memo
            finally:
                plan.close()
            assert memo is not None and memo.refs, "the case must have blocks that units share"
            assert len(scans) == len(set(scans)) or not memo_bytes  # once each, within the budget
            assert memo.size == 0 and not memo.out  # all let go once the last unit cut them
            monkeypatch.setattr(_fast, "zscan_available", lambda: False)
            slow, _ = windowed(store, q, lo, hi, regex, fm)
            monkeypatch.undo()
            patch()
            lines_in = [(r, r.split(b" ", 2)[2]) for r in recs if lo <= r[:26] < hi]
            sel = b"".join(r for r, ln in lines_in if (re.search(q, ln) if regex else q in ln))
            assert fast == slow == _fast.format(sel, 0, len(sel), mode)
