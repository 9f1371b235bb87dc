"""Records are immutable once stored: StoreLog.read_range and store.api.Immutable
on real and in-memory stores, with compaction run to the end."""

from __future__ import annotations

import random

import pytest

from oklog.fs import MemFS, RealFS
from oklog.records.record import encode_ulid
from oklog.store.api import Immutable
from oklog.store.compact import CompactStats, plan, run_job
from oklog.store.log import StoreLog


@pytest.fixture(params=["real", "mem"])
def store(request, tmp_path):
    if request.param == "real":
        return StoreLog(RealFS(), str(tmp_path / "store"))
    return StoreLog(MemFS(), "data/store")


def rec(i: int, text: bytes) -> bytes:
    return encode_ulid(1_700_000_000_000 + i, 0) + b" t " + text + b"\n"


def compact(store: StoreLog, target: int = 1 << 20) -> None:
    stats = CompactStats()
    for _ in range(100):
        jobs = plan(store.segments(), target)
        if not jobs:
            return
        run_job(store, jobs[0], target, stats)
    pytest.fail("compaction did not converge")


def test_read_range_bounds(store):
    body = b"".join(rec(i, b"r%d" % i) for i in range(0, 20, 2))
    (seg,) = store.write(body)
    u = lambda i: encode_ulid(1_700_000_000_000 + i, 0)  # noqa: E731
    assert store.read_range(seg, u(4), u(9)) == rec(4, b"r4") + rec(6, b"r6") + rec(8, b"r8")
    assert store.read_range(seg, u(5), u(8)) == rec(6, b"r6")  # hi is exclusive
    assert store.read_range(seg, u(0), u(100)) == body
    assert store.read_range(seg, u(19), u(100)) == b""
    assert store.read_range(seg, u(18), u(18) + b"\x00") == rec(18, b"r18")


def test_conflicting_text_never_replaces_stored_text(store):
    imm = Immutable(store)
    imm.write(rec(1, b"original") + rec(3, b"three"))
    segs, same, conflicts = imm.write(rec(1, b"forged") + rec(2, b"two") + rec(3, b"three"))
    assert (same, conflicts) == (1, 1)
    assert b"forged" not in b"".join(store.records(s) for s in segs)
    compact(store)
    data = b"".join(store.records(s) for s in store.segments())
    assert data == rec(1, b"original") + rec(2, b"two") + rec(3, b"three")
    assert imm.conflicts == 1 and imm.duplicates_dropped == 1
    # A body entirely held already writes nothing.
    assert imm.write(rec(2, b"two")) == ([], 1, 0)


def test_many_records_against_many_segments(store):
    rnd = random.Random(3)
    imm = Immutable(store)
    stored = {}
    for _ in range(8):
        keys = sorted(rnd.sample(range(5000), 400))
        body = b"".join(rec(k, stored.get(k, b"v%d" % rnd.randrange(3))) for k in keys)
        imm.write(body)
        for k in keys:
            stored.setdefault(k, b"")  # placeholder, filled from the store below
    texts = {}
    for s in store.segments():
        for line in store.records(s).splitlines():
            texts.setdefault(line[:26], set()).add(line[27:])
    assert all(len(v) == 1 for v in texts.values()), "a ULID is stored with two texts"
    assert len(texts) == len(stored)


def test_hash_collisions_are_told_apart(store, monkeypatch):
    """Every ULID hashing alike makes each record a candidate; the byte check decides."""
    import numpy as np

    from oklog.store import api

    monkeypatch.setattr(api, "_hashes", lambda buf, starts: np.zeros(len(starts), dtype=np.uint64))
    imm = Immutable(store)
    imm.write(b"".join(rec(i, b"a%d" % i) for i in range(0, 40, 2)))
    segs, same, conflicts = imm.write(b"".join(rec(i, b"a%d" % i if i % 4 else b"x") for i in range(40)))
    assert (same, conflicts) == (10, 10)
    compact(store)
    data = b"".join(store.records(s) for s in store.segments())
    assert data == b"".join(rec(i, b"a%d" % i) for i in range(40))
