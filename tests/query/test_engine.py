"""Query matching equals grep on the same lines, for the real corpus."""

import subprocess

import pytest
from conftest import corpus_lines

from oklog.query.engine import Matcher, Query, QueryError, relax_anchors
from oklog.query.format import lines_only
from oklog.query.params import parse_bound, parse_params
from oklog.records.merge import merge_dedup, seek
from oklog.records.record import ULID_LEN, ULIDSource, stamp_lines


@pytest.fixture(scope="module")
def corpus_records():
    lines = corpus_lines()
    # One ULID millisecond per 50 lines: many records share a millisecond.
    clock_values = iter(range(1_700_000_000_000, 1_800_000_000_000))
    src = ULIDSource(lambda: next(clock_values))
    chunks = []
    for i in range(0, len(lines), 50):
        batch = lines[i : i + 50]
        chunks.append(stamp_lines(batch, src.headers(len(batch), b"default")))
    return b"".join(chunks), lines


def grep(lines: list[bytes], pattern: bytes, regex: bool, tmp_path) -> list[bytes]:
    f = tmp_path / "lines.txt"
    f.write_bytes(b"".join(ln + b"\n" for ln in lines))
    args = ["grep", "-a", "-E" if regex else "-F", "-e", pattern, str(f)]
    res = subprocess.run(args, capture_output=True, env={"LC_ALL": "C"})
    assert res.returncode in (0, 1), res.stderr
    return res.stdout.split(b"\n")[:-1]


SUBSTRINGS = [
    b"blk_-6952295868487656571",
    b"error",
    b"Failed password",
    b"Exception",
    b"default",  # the topic of every record: must not match via the topic
    b" ",
    b"%",
    b"0",
]
REGEXES = [
    b"Failed password for (invalid user )?[a-z]+",
    b"^[0-9]{6} ",
    b"error$",
    b"blk_-?[0-9]+",
    b"[Ee]xception",
    b"^(INFO|WARN)",
    b"(^| )root( |$)",
    b"[^a-z]{30}",
    b"^Jun",
    b"default",
    b"root|admin",
    b"(INFO|WARN) [a-z]+",
    b"[A-Z]{26}",  # looks like a ULID: hits in the header must not count
    b"x.*y",
    b"[0-9]+ [0-9]+ INFO",
]
WINDOWS = [(0.0, 1.0), (0.25, 0.5), (0.9, 1.0), (0.0, 0.001)]


def window(records: bytes, lines, frac_lo, frac_hi):
    n = len(lines)
    i_lo, i_hi = int(n * frac_lo), int(n * frac_hi)
    recs = records.split(b"\n")[:-1]
    lo_key = recs[i_lo][:ULID_LEN]
    hi_key = recs[i_hi - 1][:ULID_LEN] + b"\x00" if i_hi > i_lo else lo_key
    s = seek(records, lo_key)
    e = seek(records, hi_key)
    return s, e, lines[i_lo:i_hi]


@pytest.mark.parametrize("frac", WINDOWS)
@pytest.mark.parametrize("pattern", SUBSTRINGS)
def test_substring_equals_grep(corpus_records, pattern, frac, tmp_path):
    records, lines = corpus_records
    s, e, wlines = window(records, lines, *frac)
    m = Matcher(Query(pattern, regex=False))
    got = lines_only(b"".join(records[a:b] for a, b in m.scan(records, s, e)))
    assert got.split(b"\n")[:-1] == grep(wlines, pattern, False, tmp_path)


@pytest.mark.parametrize("frac", WINDOWS)
@pytest.mark.parametrize("pattern", REGEXES)
def test_regex_equals_grep(corpus_records, pattern, frac, tmp_path):
    records, lines = corpus_records
    s, e, wlines = window(records, lines, *frac)
    m = Matcher(Query(pattern, regex=True))
    got = lines_only(b"".join(records[a:b] for a, b in m.scan(records, s, e)))
    assert got.split(b"\n")[:-1] == grep(wlines, pattern, True, tmp_path)


def test_match_all_and_empty_matching_regex(corpus_records):
    records, _ = corpus_records
    assert Matcher(Query(b"")).scan(records) == [(0, len(records))]
    assert Matcher(Query(b"x*", regex=True)).scan(records) == [(0, len(records))]


def test_query_with_newline_matches_nothing(corpus_records):
    records, _ = corpus_records
    assert Matcher(Query(b"a\nb")).scan(records) == []


@pytest.mark.parametrize("bad", [b"(", b"a{2,1}", b"(?P<x>a)(?P=x)", b"a\\"])
def test_invalid_regex(bad):
    with pytest.raises(QueryError):
        Matcher(Query(bad, regex=True))


def test_hostile_regex_is_linear():
    # Catastrophic for a backtracking engine; linear here.
    recs = stamp_lines([b"a" * 5000 + b"!"], ULIDSource(lambda: 1).headers(1))
    m = Matcher(Query(b"(a+)+$", regex=True))
    assert m.scan(recs) == []
    m = Matcher(Query(b"(a|aa)+b", regex=True))
    assert m.scan(recs) == []


@pytest.mark.parametrize(
    "pattern, relaxed",
    [(b"^a", b"a"), (b"[^a]", b"[^a]"), (b"\\^x", b"\\^x"), (b"[]^]x", b"[]^]x"), (b"\\Aa\\z", b"a$")],
)
def test_relax_anchors(pattern, relaxed):
    assert relax_anchors(pattern) == relaxed


def test_seek_bounds():
    src = ULIDSource(iter(range(100, 200)).__next__)
    recs = b"".join(stamp_lines([b"l%d" % i], src.headers(1)) for i in range(50))
    keys = [r[:ULID_LEN] for r in recs.split(b"\n")[:-1]]
    offsets = [0]
    for r in recs.split(b"\n")[:-1]:
        offsets.append(offsets[-1] + len(r) + 1)
    for i, k in enumerate(keys):
        assert seek(recs, k) == offsets[i]
        assert seek(recs, k + b"\x00") == offsets[i + 1]
    assert seek(recs, b"0" * 26) == 0
    assert seek(recs, b"Z" * 26) == len(recs)


def test_merge_dedup_sorts_and_drops_copies():
    a = b"01A x 1\n01C x 3\n"
    b = b"01B x 2\n01C x 3\n"
    assert merge_dedup([a, b]) == b"01A x 1\n01B x 2\n01C x 3\n"


@pytest.mark.parametrize(
    "args",
    [
        {"from": ["yesterday"]},
        {"to": ["2026-13-01T00:00:00Z"]},
        {"from": ["2026-01-02T00:00:00Z"], "to": ["2026-01-01T00:00:00Z"]},
        {"regex": ["maybe"]},
        {"q": ["x" * 5000]},
        {"from": ["01ARZ3NDEKTSV4RRFFQ69G5FA!"]},
    ],
)
def test_bad_params(args):
    with pytest.raises(QueryError):
        parse_params(args)


def test_param_bounds():
    lo = parse_bound("2026-01-01T00:00:00Z", upper=False)
    hi = parse_bound("2026-01-01T00:00:00Z", upper=True)
    assert lo < hi
    p = parse_params({"regex": ["false"], "q": ["a.b"]})
    assert p.query.regex is False
    assert parse_params({"regex": [""]}).query.regex is True


@pytest.mark.parametrize("seed", range(20))
def test_merge_dedup_randomized(seed):
    import random

    rnd = random.Random(seed)
    universe = sorted(
        {b"%026d" % rnd.randrange(10**9) + b" t line%d\n" % rnd.randrange(100) for _ in range(400)}
    )
    # Dedup by ULID: keep one record per ULID.
    by_ulid = {}
    for r in universe:
        by_ulid.setdefault(r[:ULID_LEN], r)
    universe = [by_ulid[k] for k in sorted(by_ulid)]
    runs = []
    for _ in range(rnd.randint(1, 6)):
        if runs and rnd.random() < 0.3:
            runs.append(runs[-1])  # a whole duplicated run
            continue
        pick = sorted(rnd.sample(universe, rnd.randint(0, len(universe))))
        runs.append(b"".join(pick))
    want = b"".join(sorted(set(b"".join(runs).splitlines(keepends=True))))
    assert merge_dedup(runs) == want


def test_matcher_is_safe_across_threads(corpus_records):
    from concurrent.futures import ThreadPoolExecutor

    records, _ = corpus_records
    for q, regex in [(b"error", False), (b"Failed password for [a-z]+", True)]:
        m = Matcher(Query(q, regex))
        want = m.scan(records)
        with ThreadPoolExecutor(4) as ex:
            results = list(ex.map(lambda _, m=m: m.scan(records), range(16)))
        assert all(r == want for r in results)


@pytest.mark.parametrize("q, regex", [(b"", False), (b"error", False), (b"^[0-9]+ ", True)])
def test_topic_filter(corpus_records, q, regex, tmp_path):
    records, lines = corpus_records
    # Re-stamp: alternate topics per 50-line batch.
    src = ULIDSource(iter(range(10**12, 10**13)).__next__)
    chunks, by_topic = [], {b"alpha": [], b"beta-2": []}
    for i in range(0, len(lines), 50):
        t = b"alpha" if (i // 50) % 2 else b"beta-2"
        batch = lines[i : i + 50]
        by_topic[t] += batch
        chunks.append(stamp_lines(batch, src.headers(len(batch), t)))
    buf = b"".join(chunks)
    for topic, tlines in by_topic.items():
        m = Matcher(Query(q, regex, topic))
        got = lines_only(b"".join(buf[a:b] for a, b in m.scan(buf))).split(b"\n")[:-1]
        want = grep(tlines, q, regex, tmp_path) if q else tlines
        assert got == want


@pytest.mark.parametrize(
    "pattern, trimmed",
    [(rb"Failed for \w+", rb"Failed for \w"), (rb"ab*", b"a"), (rb"x.*", b"x"), (rb"a\+", rb"a\+"), (rb"(a)+", rb"(a)+")],
)
def test_trim_tail(pattern, trimmed):
    from oklog.query.engine import _trim_tail

    assert _trim_tail(pattern) == trimmed
