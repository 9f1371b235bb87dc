"""_fast.zcount: count() over zstd frames decompressed in C, checked against
count() over the same blocks decompressed in Python, and the local count
path that uses it against a count of the records a query returns."""

from __future__ import annotations

import random

import numpy as np
import pytest
import trio

import oklog._fast as _fast
from oklog.fs import RealFS
from oklog.query.count import Tally, ulid_lines
from oklog.query.params import parse_params
from oklog.query.plan import plan_query, run_unit
from oklog.query.terms import build_matcher
from oklog.records import segfile
from oklog.records.record import ULIDSource, stamp_lines
from oklog.store.localcount import _ms, count_plan
from oklog.store.log import StoreLog

pytestmark = pytest.mark.skipif(not _fast.zscan_available(), reason="no libzstd on this host")

WORDS = [b"error", b"Error", b"INFO", b"user", b"USER", b"blk_1", b"size", b"a"]


def lines(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [b" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(0, 6))) for _ in range(n)]


def stamped(ls: list[bytes]) -> bytes:
    """Records 25 a second from 2001-09-09 on: batches of 25 lines a second apart."""
    src = ULIDSource(iter(range(10**12, 10**14, 1000)).__next__)
    return b"".join(stamp_lines(ls[i : i + 25], src.headers(len(ls[i : i + 25]), b"default")) for i in range(0, len(ls), 25))


def frames_of(blocks: list[segfile.Block]) -> bytes:
    return segfile.frame_table(blocks)


@pytest.fixture(scope="module")
def encoded() -> tuple[bytes, list[bytes]]:
    recs = stamped(lines(5000, 3))
    return segfile.encode(recs, 3, 8 << 10), recs.splitlines(keepends=True)


KERNELS = [
    ([], [], False),
    ([b"error"], [], False),
    ([b"ERROR"], [], True),
    ([b"user", b"a"], [b"size"], False),
    ([], [b"INFO"], True),
]


@pytest.mark.parametrize("kernel", KERNELS)
def test_zcount_equals_count_over_the_decompressed_blocks(encoded, kernel):
    enc, recs = encoded
    blocks = segfile.read_index(enc).blocks
    assert len(blocks) > 5
    terms, nots, icase = kernel
    ulids = [r[:26] for r in recs]
    for lo, hi in [(b"0" * 26, b"~"), (ulids[100], ulids[4000]), (ulids[777] + b"0", ulids[778]), (ulids[5], ulids[5])]:
        for step in (0, 1, 7_000):
            origin = _ms(blocks[0].first) // step * step if step else 0
            nb = (_ms(blocks[-1].last) - origin) // step + 1 if step else 0
            got_c = np.zeros(nb, dtype=np.int64) if step else None
            got, outside, bad = _fast.zcount(enc, frames_of(blocks), terms, nots, icase, lo, hi, step, origin, got_c)
            sel = b"".join(r for r in recs if lo <= r[:26] < hi)
            want_c = np.zeros(nb, dtype=np.int64) if step else None
            want, w_out = _fast.count(sel, 0, len(sel), terms, nots, icase, step, origin, want_c)
            assert (got, outside, bad) == (want, w_out, [])
            if step:
                assert got_c.tolist() == want_c.tolist()
            # and independently of the C kernel, for the plain terms
            if not icase:
                ref = sum(
                    1
                    for r in recs
                    if lo <= r[:26] < hi
                    and all(t in r.split(b" ", 2)[2] for t in terms)
                    and not any(t in r.split(b" ", 2)[2] for t in nots)
                )
                assert got == ref


def test_zcount_reports_a_damaged_frame_and_counts_the_others(encoded):
    enc0, recs = encoded
    enc = bytearray(enc0)
    blocks = segfile.read_index(enc0).blocks
    enc[blocks[2].offset + blocks[2].clen // 2] ^= 0x10
    got, outside, bad = _fast.zcount(bytes(enc), frames_of(blocks), [b"error"], [], False, b"0" * 26, b"~", 0, 0, None)
    assert bad == [2]
    want = sum(_fast.count(segfile.decompress_block(enc0, b), 0, b.rawlen, [b"error"], [], False, 0, 0, None)[0]
               for i, b in enumerate(blocks) if i != 2)
    assert (got, outside) == (want, 0)
    with pytest.raises(ValueError):
        _fast.zcount(bytes(enc), (len(enc) + 1).to_bytes(8, "little") + bytes(16), [], [], False, b"0", b"~", 0, 0, None)
    with pytest.raises(ValueError):
        _fast.zcount(bytes(enc), bytes(23), [], [], False, b"0", b"~", 0, 0, None)
    with pytest.raises(ValueError):
        _fast.zcount(bytes(enc), frames_of(blocks), [b""], [], False, b"0", b"~", 0, 0, None)


def test_zcount_tells_matches_outside_the_buckets(encoded):
    enc, recs = encoded
    blocks = segfile.read_index(enc).blocks
    counts = np.zeros(3, dtype=np.int64)  # far fewer buckets than the blocks span
    origin = _ms(blocks[0].first) + 1000  # and the first second's records before them
    got, outside, _ = _fast.zcount(enc, frames_of(blocks), [], [], False, b"0" * 26, b"~", 1, origin, counts)
    assert got == len(recs) and outside == got - int(counts.sum()) and outside > 0


@pytest.mark.parametrize("args", [{"q": ["error"]}, {"q": ["USER"], "i": ["true"]}, {}, {"q": ["user"], "not": ["a"]}])
@pytest.mark.parametrize("step", [0, 1000, 7000])
def test_the_local_count_reads_compressed_blocks_in_one_call(tmp_path, monkeypatch, args, step):
    """count_plan over a store of compressed segments counts through zcount
    (spied) and gives what counting the query's records gives."""
    monkeypatch.setattr(segfile, "BLOCK_SIZE", 8 << 10)
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    store.write(stamped(lines(4000, 8)))
    calls = []
    real = _fast.zcount

    def spy(*a):
        calls.append(a)
        return real(*a)

    monkeypatch.setattr(_fast, "zcount", spy)
    for window in ({}, {"from": ["2001-09-09T01:47:00Z"], "to": ["2001-09-09T01:49:00Z"]}):
        params = parse_params({**args, **window})
        plan = plan_query(store, params)
        try:
            m = build_matcher(list(params.terms), params.regex, params.icase, list(params.without), params.topic, params.where)
            records = b"".join(run_unit(plan, m, u) for u in plan.units)
            want = Tally(step)
            want.add(ulid_lines(records))
            got = Tally(step)
            trio.run(count_plan, plan, m, got, trio.CapacityLimiter(2))
        finally:
            plan.close()
        assert (got.total, got.buckets) == (want.total, want.buckets)
        assert want.total > 0
    assert calls


@pytest.mark.parametrize("step", [0, 1000])
def test_a_regex_decided_in_c_is_counted_as_its_records(tmp_path, monkeypatch, step):
    """A regex Hyperscan alone decides is counted from the C scan's matches
    (zscan with its database, spied): the same tally as through the Python
    binding's path, and as RE2 over each line."""
    import re2

    from oklog.query.engine import Matcher, Query

    if _fast.hs_compile(b"a", 0) is None:
        pytest.skip("no libhs.so.5 on this host (make deps installs libhyperscan5)")
    monkeypatch.setattr(segfile, "BLOCK_SIZE", 8 << 10)
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    ls = lines(4000, 9)
    store.write(stamped(ls))
    pattern = rb"user (error|size) [a-z]"
    calls = []
    real = _fast.zscan
    monkeypatch.setattr(_fast, "zscan", lambda *a: calls.append(a[6:]) or real(*a))

    def count() -> Tally:
        plan = plan_query(store, parse_params({"q": [pattern.decode()], "regex": ["true"]}))
        got = Tally(step)
        try:
            trio.run(count_plan, plan, Matcher(Query(pattern, True)), got, trio.CapacityLimiter(2))
        finally:
            plan.close()
        return got

    in_c = count()
    assert calls and all(c and c[0] is not None for c in calls)  # zscan was given the database
    monkeypatch.setattr(_fast, "hs_compile", lambda *_: None)
    binding = count()
    assert (in_c.total, in_c.buckets) == (binding.total, binding.buckets)
    assert in_c.total == sum(1 for ln in ls if re2.search(pattern, ln)) > 0


def test_grouped_keeps_order_and_bounds_each_group():
    from oklog.query.plan import _grouped

    pieces = [b"a" * n + b"\n" for n in (3, 5, 40, 2, 2, 2, 90, 1)]
    groups = _grouped(pieces, limit=20)
    assert b"".join(groups) == b"".join(pieces)
    assert [len(g) for g in groups] == [10, 41, 9, 91, 2]
    assert _grouped([]) == []
    assert _grouped([b"x\n"]) == [b"x\n"]
