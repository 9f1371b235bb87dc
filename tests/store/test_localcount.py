"""Counting in place (oklog.store.localcount) against the ULID path it
replaces for a node answering alone: the records a query returns, turned into
ULID lines and tallied (oklog.query.count). Real stores with small compressed
blocks, overlapping segments of two topics and copies of records."""

from __future__ import annotations

import time

import pytest
import trio
from test_segfile import body

import oklog._fast as _fast
from oklog.fs import RealFS
from oklog.query.count import Tally, ulid_lines
from oklog.query.engine import Matcher
from oklog.query.params import parse_params
from oklog.query.plan import plan_query, run_unit
from oklog.query.terms import build_matcher
from oklog.records import segfile
from oklog.records.record import ULID_LEN
from oklog.store import localcount
from oklog.store.localcount import count_plan
from oklog.store.log import StoreLog


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(segfile, "BLOCK_SIZE", 16 << 10)


def matcher_of(params):
    if len(params.terms) <= 1 and not params.without and not params.where:
        return Matcher(params.query)
    return build_matcher(list(params.terms), params.regex, params.icase, list(params.without), params.topic, params.where)


def reference(store: StoreLog, args: dict, step: int) -> Tally:
    params = parse_params(args)
    plan = plan_query(store, params)
    try:
        m = matcher_of(params)
        records = b"".join(run_unit(plan, m, u) for u in plan.units)
    finally:
        plan.close()
    t = Tally(step)
    t.add(ulid_lines(records))
    return t


def counted(store: StoreLog, args: dict, step: int) -> Tally:
    params = parse_params(args)
    plan = plan_query(store, params)
    t = Tally(step)
    try:
        trio.run(count_plan, plan, matcher_of(params), t, trio.CapacityLimiter(2))
    finally:
        plan.close()
    assert not plan.damaged
    return t


@pytest.fixture
def store(tmp_path, small_blocks) -> StoreLog:
    s = StoreLog(RealFS(), str(tmp_path / "store"))
    a = body(3000, 9)
    s.write(a)
    s.write(body(1500, 9, topic=b"other"))  # same span, another topic: overlapping segments
    recs = a.splitlines(keepends=True)
    s.write(b"".join(recs[700:1300]))  # copies of records already held: counted once
    return s


QUERIES = [
    {},
    {"q": ["error"]},
    {"q": ["ERROR"], "i": ["true"]},
    {"q": ["e", "a"], "not": ["INFO"]},
    {"q": ["e"], "not": ["error", "block"], "i": ["true"]},
    {"q": ["blk_[0-9]+"], "regex": ["true"]},
    {"where": ["level=INFO"]},
    {"topic": ["other"]},
    {"topic": ["default"], "q": ["Failed"]},
    {"q": ["no such text anywhere"]},
]


@pytest.mark.parametrize("step", [0, 1, 7, 1000, 60_000])
@pytest.mark.parametrize("args", QUERIES, ids=lambda a: repr(a)[:40])
def test_counts_equal_the_ulid_path(store, args, step):
    want = reference(store, args, step)
    got = counted(store, args, step)
    assert (got.total, got.buckets) == (want.total, want.buckets)


def test_windows_cut_blocks(store):
    (seg, *_) = store.segments()
    blocks = store.index(seg).blocks
    assert len(blocks) > 5
    # windows starting and ending inside blocks, and on their first ULIDs
    for lo, hi in [(blocks[1].first, blocks[4].last), (blocks[2].last, blocks[3].first), (blocks[0].first, blocks[-1].first)]:
        args = {"from": [lo.decode()], "to": [hi.decode()]}
        for step in (0, 3, 1000):
            want = reference(store, args, step)
            got = counted(store, args, step)
            assert (got.total, got.buckets) == (want.total, want.buckets)
            assert want.total > 0


def test_whole_blocks_are_counted_from_the_index(store, monkeypatch):
    """A match-all count reads no block but those cut by the range or a bucket."""
    read = []
    real = segfile.decompress_block

    def spy(buf, blk):
        read.append(blk)
        return real(buf, blk)

    real_z = _fast.zcount

    def zspy(buf, frames, *rest):  # blocks read by the C helper: one int64 quad each
        read.extend(range(len(frames) // 32))
        return real_z(buf, frames, *rest)

    monkeypatch.setattr(segfile, "decompress_block", spy)
    monkeypatch.setattr(_fast, "zcount", zspy)
    s = StoreLog(RealFS(), store.root + "-single")
    s.write(body(3000, 4))
    (seg,) = s.segments()
    n = len(s.index(seg).blocks)
    want = reference(s, {}, 0)
    read.clear()
    assert counted(s, {}, 0).total == want.total == 3000
    assert read == []
    got, want = counted(s, {}, 60_000), reference(s, {}, 60_000)
    assert got.buckets == want.buckets
    want = reference(s, {}, 1)
    read.clear()
    got = counted(s, {}, 1)  # every block spans many 1ms buckets: all read
    assert (got.total, got.buckets) == (want.total, want.buckets)
    assert len(read) == n


def test_out_of_order_and_huge_spans_fall_back_exactly():
    c = localcount._Counts(1)
    from tests.fast.test_fast_count import records

    # a piece whose records go back in time, and one spanning more buckets than allowed
    buf = records([b"a", b"b", b"c"], t0=10_000, gap=5) + records([b"d"], t0=1_000, gap=1)
    buf += records([b"e", b"f"], t0=50_000, gap=10**10)
    c.records(buf, 0, len(buf), ([], [], False))
    t = Tally(1)
    t.add(ulid_lines(buf))
    assert (c.total, c.buckets) == (t.total, t.buckets)
    assert ULID_LEN == 26


@pytest.mark.parametrize("unit_bytes", [16 << 10, 40 << 10])
def test_coarse_units_count_each_block_once(tmp_path, small_blocks, monkeypatch, unit_bytes):
    """Counting joins consecutive units of one compressed segment (fewer,
    larger units): each block is in one joined unit, the joined keys cover
    the same range, and every count is the one of the units as planned."""
    from oklog.query import plan as plan_mod

    monkeypatch.setattr(plan_mod, "UNIT_BYTES", unit_bytes)
    s = StoreLog(RealFS(), str(tmp_path / "store"))
    s.write(body(4000, 21))
    (seg,) = s.segments()
    n_blocks = len(s.index(seg).blocks)
    blk = s.index(seg).blocks
    for args in ({}, {"q": ["error"]}, {"from": [blk[3].last.decode()], "to": [blk[-4].first.decode()]}):
        params = parse_params(args)
        plan = plan_query(s, params)
        try:
            units = plan.units
            joined = localcount.coarse(units, 100 << 10)
            assert 1 < len(joined) < len(units)
            offsets = [b.offset for u in joined for _, bs in u.blocks for b in bs]
            assert len(offsets) == len(set(offsets)) <= n_blocks
            assert all(u.size <= 100 << 10 for u in joined if len(u.blocks[0][1]) > 1)
            assert joined[0].keys[0] == units[0].keys[0] and joined[-1].keys[1] == units[-1].keys[1]
            assert all(a.keys[1] == b.keys[0] for a, b in zip(joined, joined[1:], strict=False))
        finally:
            plan.close()
        for step in (0, 7, 60_000):
            want, got = reference(s, args, step), counted(s, args, step)
            assert (got.total, got.buckets) == (want.total, want.buckets)


def test_counting_gives_its_tokens_back_and_stops_when_cancelled(tmp_path, small_blocks, monkeypatch):
    """Workers count units for a time slice, then give their limiter token
    back: a second query gets a turn before the first is done, and a
    cancelled count stops within a slice instead of running every unit."""
    from oklog.query import plan as plan_mod

    monkeypatch.setattr(plan_mod, "UNIT_BYTES", 16 << 10)
    monkeypatch.setattr(localcount, "COUNT_UNIT_BYTES", 16 << 10)
    monkeypatch.setattr(localcount, "SLICE_S", 0.01)
    s = StoreLog(RealFS(), str(tmp_path / "store"))
    s.write(body(3000, 22))
    real, started = localcount.count_unit, []

    first: list[trio.Event] = []  # set when a unit starts, once main() asks for it

    def slow(plan, matcher, unit, step):
        started.append(id(plan))
        if first:
            trio.from_thread.run_sync(first[0].set)
        time.sleep(0.003)
        return real(plan, matcher, unit, step)

    monkeypatch.setattr(localcount, "count_unit", slow)
    params = parse_params({})
    probe = plan_query(s, params)
    n_units = len(localcount.coarse(probe.units, localcount.COUNT_UNIT_BYTES))
    probe.close()
    assert n_units >= 20

    async def main() -> None:
        limiter = trio.CapacityLimiter(1)
        plan_a, plan_b = plan_query(s, params), plan_query(s, params)
        a, b = Tally(0), Tally(0)
        async with trio.open_nursery() as n:
            n.start_soon(count_plan, plan_a, Matcher(params.query), a, limiter)
            await trio.sleep(0.01)
            n.start_soon(count_plan, plan_b, Matcher(params.query), b, limiter)
        plan_a.close()
        plan_b.close()
        assert a.total == b.total == 3000
        # b's first unit ran before a's last one: a gave its token back between slices
        assert started.index(id(plan_b)) < len(started) - 1 - started[::-1].index(id(plan_a))
        started.clear()
        plan_c = plan_query(s, params)
        first.append(trio.Event())
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as n:
                n.start_soon(count_plan, plan_c, Matcher(params.query), Tally(0), limiter)
                await first[0].wait()
                scope.cancel()
        plan_c.close()
        assert len(started) < n_units // 2  # stopped within a slice

    trio.run(main)
