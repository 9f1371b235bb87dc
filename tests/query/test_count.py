"""Counting and bucketing matches (oklog.query.count), against plain Python over
the same records (loghub lines stamped with ULIDs spread over an hour)."""

from __future__ import annotations

import random

import pytest
from conftest import corpus_lines
from support import ref_ms

from oklog.query.count import Tally, filled, render_bars, render_tsv, ulid_lines
from oklog.records.record import encode_ulid


def records(n: int, seed: int = 3) -> list[bytes]:
    lines = corpus_lines()
    rnd = random.Random(seed)
    t0 = 1_764_000_000_000
    ms = sorted(t0 + rnd.randrange(3_600_000) for _ in range(n))
    return [encode_ulid(m, rnd.getrandbits(80)) + b" logs " + rnd.choice(lines) + b"\n" for m in ms]


def test_ulid_lines_are_each_records_ulid():
    recs = records(5000)
    out = ulid_lines(b"".join(recs))
    assert out == b"".join(r[:26] + b"\n" for r in recs)
    assert ulid_lines(b"") == b""


@pytest.mark.parametrize("term", [b"error", b"INFO", b"session", b"no such term at all"])
@pytest.mark.parametrize("step_ms", [1000, 60_000, 7 * 60_000])
def test_tally_equals_python_reference(term, step_ms):
    recs = [r for r in records(20_000) if term in r[32:]]
    ref: dict[int, int] = {}
    for r in recs:
        k = ref_ms(r) // step_ms * step_ms
        ref[k] = ref.get(k, 0) + 1
    t = Tally(step_ms)
    data = ulid_lines(b"".join(recs))
    cut = (len(data) // 27 // 3) * 27  # in pieces, as the merge hands them over
    t.add(data[:cut])
    t.add(data[cut:])
    assert t.total == len(recs)
    assert t.buckets == ref
    d = t.as_dict()
    assert [b["count"] for b in d["buckets"]] == [ref[k] for k in sorted(ref)]


def test_total_only_and_bad_input():
    t = Tally()
    t.add(ulid_lines(b"".join(records(100))))
    assert t.as_dict() == {"total": 100}
    with pytest.raises(ValueError):
        t.add(b"0123\n")


def test_filled_and_rendering():
    buckets = [{"time": "a", "ms": 60_000, "count": 3}, {"time": "b", "ms": 240_000, "count": 6}]
    rows = filled(buckets, 60_000)
    assert [c for _, c in rows] == [3, 0, 0, 6]
    assert rows[0][0] == "1970-01-01T00:01:00Z"
    assert render_tsv(rows).splitlines()[1] == "1970-01-01T00:02:00Z\t0"
    bars = render_bars(rows, 40).splitlines()
    assert len(bars) == 4
    assert bars[3].count("█") == 2 * bars[0].count("█") > 0
    assert "█" not in bars[1]
