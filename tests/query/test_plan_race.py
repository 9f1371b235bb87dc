"""A query planned while compaction replaces the segments it listed: the
answer is whole, or says it is not (never silently shorter)."""

from __future__ import annotations

from oklog.fs import RealFS
from oklog.query.engine import Matcher, Query
from oklog.query.params import QueryParams
from oklog.query.plan import PLAN_AGAIN, plan_query, run_unit
from oklog.records.record import ULIDSource, stamp_lines
from oklog.store.compact import CompactStats, plan, run_job
from oklog.store.log import StoreLog


def small_segments(tmp_path, n: int = 6) -> tuple[StoreLog, int]:
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    src = ULIDSource(iter(range(1, 10**6)).__next__)
    for i in range(n):
        store.write(stamp_lines([b"seg %d rec %d" % (i, j) for j in range(50)], src.headers(50)))
    return store, n * 50


def answer(store: StoreLog) -> tuple[bytes, object]:
    p = plan_query(store, QueryParams(lo=b"0" * 26, hi_excl=b"~", query=Query(b"")))
    try:
        return b"".join(run_unit(p, Matcher(Query(b"")), u) for u in p.units), p
    finally:
        p.close()


def test_segments_compacted_between_listing_and_opening_are_planned_again(tmp_path, monkeypatch):
    store, total = small_segments(tmp_path)
    listing = store.overlapping
    compactions = []

    def list_then_compact(lo, hi):
        segs = listing(lo, hi)
        if not compactions:  # compaction concatenates them right after this listing
            (job,) = plan(store.segments(), 1 << 20)
            compactions.append(run_job(store, job, 1 << 20, CompactStats()))
        return segs

    monkeypatch.setattr(store, "overlapping", list_then_compact)
    out, p = answer(store)
    assert compactions and len(store.segments()) == 1  # the listed segments were gone when opened
    assert out.count(b"\n") == total and p.unreadable == 0 and p.unserved() is None


def test_a_planning_that_keeps_losing_segments_says_so(tmp_path, monkeypatch):
    store, total = small_segments(tmp_path)
    listing = store.overlapping
    calls = []

    def stale_listing(lo, hi):  # as if compaction replaced them after every listing
        calls.append(1)
        segs = listing(lo, hi)
        store.fs.remove(store.path(segs[0]))
        return segs

    monkeypatch.setattr(store, "overlapping", stale_listing)
    out, p = answer(store)
    assert len(calls) == PLAN_AGAIN
    assert p.unreadable == 1 and "compacted away while the query was planned" in (p.unserved() or "")
    assert "damaged" not in (p.unserved() or "")
    assert out.count(b"\n") < total
