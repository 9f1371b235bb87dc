"""oklog._fast (the C loops of the query path) against plain-Python references."""

from __future__ import annotations

import mmap
import random

import numpy as np
import pytest
import re2
from conftest import sample_lines

import oklog._fast as fast
from oklog.query.engine import (
    MODE_CANDIDATES,
    MODE_LINES,
    MODE_RAW,
    MODE_ULID,
    Matcher,
    Query,
    required_literal,
)

ULID = b"01ARZ3NDEKTSV4RRFFQ69G5FAV"


def rec(line: bytes, topic: bytes = b"t", ulid: bytes = ULID) -> bytes:
    return ulid + b" " + topic + b" " + line + b"\n"


def split(buf: bytes) -> list[tuple[int, int, int]]:
    """(record start, line start, end) of every record, the slow way."""
    out, pos = [], 0
    while pos < len(buf):
        end = buf.index(b"\n", pos) + 1
        ls = buf.index(b" ", pos + 27) + 1
        out.append((pos, ls, end))
        pos = end
    return out


def shape(buf: bytes, rs: int, ls: int, e: int, mode: int) -> bytes:
    return {MODE_RAW: buf[rs:e], MODE_LINES: buf[ls:e], MODE_ULID: buf[rs : rs + 27] + buf[ls:e]}[mode]


def ref_grep(buf: bytes, needle: bytes, mode: int, start: int = 0, end: int | None = None) -> bytes:
    end = len(buf) if end is None else end
    return b"".join(
        shape(buf, rs, ls, e, mode) for rs, ls, e in split(buf[:end]) if rs >= start and needle in buf[ls : e - 1]
    )


MODES = (MODE_RAW, MODE_LINES, MODE_ULID)


@pytest.mark.parametrize("mode", MODES)
def test_grep_edges(mode):
    buf = b"".join(
        [
            rec(b"needle at start"),
            rec(b"no match here", topic=b"needle"),  # only in the topic: not a match
            rec(b"ends with needle"),
            rec(b"needle twice needle"),
            rec(b""),
            rec(b"x"),
            rec(b"needleneedle", topic=b"needle"),
            rec(b"nee dle"),
        ]
    )
    for needle in (b"needle", b"n", b"e", b"ee", b"needle twice needle", b"dle\x00"):
        assert fast.grep(buf, 0, len(buf), needle, mode) == ref_grep(buf, needle, mode), needle


def test_grep_hit_in_ulid_is_not_a_match():
    buf = rec(b"line", ulid=b"0" * 26) + rec(b"0000", ulid=b"1" * 26)
    assert fast.grep(buf, 0, len(buf), b"00", MODE_LINES) == b"0000\n"


def test_grep_window_and_candidates():
    lines = sample_lines(3000, seed=3)
    buf = b"".join(rec(x) for x in lines)
    recs = split(buf)
    start, end = recs[100][0], recs[2000][2]
    got = fast.grep(buf, start, end, b"a", MODE_CANDIDATES)
    want = [t for t in recs[100:2001] if b"a" in buf[t[1] : t[2] - 1]]
    assert np.frombuffer(got, dtype=np.int64).reshape(-1, 3).tolist() == [list(t) for t in want]
    keep = bytes(random.Random(1).choice((0, 1)) for _ in want)
    picked = fast.pick(buf, got, keep, MODE_LINES)
    assert picked == b"".join(buf[ls:e] for (_, ls, e), k in zip(want, keep, strict=True) if k)


@pytest.mark.parametrize("mode", MODES)
def test_grep_and_format_on_corpus_and_mmap(tmp_path, mode):
    lines = sample_lines(20000, seed=5)
    topics = [b"a", b"svc", b"longer-topic"]
    buf = b"".join(rec(x, topics[i % 3]) for i, x in enumerate(lines))
    path = tmp_path / "seg"
    path.write_bytes(buf)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        for needle in (b"error", b"blk_", b"ERROR", b"user", b"1", b"Failed password for"):
            assert fast.grep(m, 0, len(m), needle, mode) == ref_grep(buf, needle, mode)
        assert fast.format(m, 0, len(m), mode) == b"".join(shape(buf, *t, mode) for t in split(buf))


def test_arguments_are_checked():
    buf = rec(b"abc")
    with pytest.raises(ValueError):
        fast.grep(buf, 0, len(buf), b"", MODE_RAW)
    with pytest.raises(ValueError):
        fast.grep(buf, 0, len(buf), b"a\nb", MODE_RAW)
    with pytest.raises(ValueError):
        fast.format(buf, 5, 2, MODE_RAW)
    with pytest.raises(ValueError):
        fast.format(buf, 0, len(buf), 7)
    with pytest.raises(ValueError):
        fast.pick(buf, b"\x00" * 24, b"", MODE_RAW)  # keep length differs
    bad = (0).to_bytes(8, "little") + (0).to_bytes(8, "little") + (10**6).to_bytes(8, "little")
    with pytest.raises(ValueError):
        fast.pick(buf, bad, b"\x01", MODE_RAW)
    assert fast.format(buf, 0, 10**9, MODE_LINES) == b"abc\n"  # end clamps to the buffer


def ref_time(ulid: bytes) -> bytes:
    from datetime import UTC, datetime, timedelta

    from oklog.records.record import ALPHABET

    ms = 0
    for c in ulid[:10]:
        ms = (ms << 5) | max(ALPHABET.find(bytes([c])), 0)
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S").encode() + b".%03dZ " % (t.microsecond // 1000)


def test_format_time_modes_against_datetime():
    from oklog.records.record import encode_ulid

    rnd = random.Random(5)
    day = 86_400_000
    stamps = [0, 1, 999, 1000, day - 1, 951_782_400_000, 951_868_800_000 - 1, 4_107_542_400_000]  # 2000-02-29, 2100-03-01
    stamps += [rnd.randrange(253_402_300_800_000) for _ in range(3000)]  # up to year 9999
    stamps += [stamps[-1]] * 3 + [stamps[-1] + 1]  # same second (the cached date) and the next ms
    ulids = [encode_ulid(ms, rnd.getrandbits(80)) for ms in stamps]
    buf = b"".join(rec(b"line %d" % i, b"topic%d" % (i % 3), u) for i, u in enumerate(ulids))
    buf += b"01ARZ3NDEK short\n" + b"\n" + b"no newline at the end"  # malformed: ULID cut, empty, unterminated
    want_t, want_ut = [], []
    for rs, ls, e in split(buf[: buf.index(b"01ARZ3NDEK short")]):
        want_t.append(ref_time(buf[rs:]) + buf[ls:e])
        want_ut.append(buf[rs : rs + 27] + ref_time(buf[rs:]) + buf[ls:e])
    got_t = fast.format(buf, 0, len(buf), 4)
    got_ut = fast.format(buf, 0, len(buf), 5)
    n = len(b"".join(want_t))
    assert got_t[:n] == b"".join(want_t)
    assert got_ut[: len(b"".join(want_ut))] == b"".join(want_ut)
    tail = got_t[n:].split(b"\n")
    assert len(tail) == 3 and tail[1].endswith(b"Z ") and tail[2].endswith(b"Z ")  # a time each, no crash
    # 48-bit stamps reach year 10889: a five-digit year, nothing overrun.
    top = rec(b"far", ulid=encode_ulid((1 << 48) - 1, 0))
    assert fast.format(top, 0, len(top), 4) == b"10889-08-02T05:31:50.655Z far\n"
    with pytest.raises(ValueError):
        fast.grep(buf, 0, len(buf), b"line", 4)  # time modes are format()'s alone


def ref_json(record: bytes) -> bytes:
    import json

    rs, ls, e = split(record)[0]
    obj = {
        "ulid": record[:26].decode(),
        "time": ref_time(record)[:-1].decode(),
        "topic": record[27 : ls - 1].decode("latin-1"),
        "line": record[ls : e - 1].decode("utf-8", "replace"),
    }
    return json.dumps(obj).encode() + b"\n"


def test_format_json_is_json_dumps_byte_for_byte():
    from oklog.records.record import encode_ulid

    rnd = random.Random(9)
    tricky = [
        b"", b"plain", b'quote " and \\ backslash', b"\t\r\x08\x0c\x00\x01\x1f\x7f", "caf\u00e9 \u20ac \U0001f600".encode(),
        b"\xff", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xed\xa0\x80", b"\xe0\x80\x80", b"\xf4\x90\x80\x80",
        b"\xc0\xaf", b"\xf0\x80\x80\x80", b"ok \xe2\x82 then \xe2\x82\xac", b"\x80\xbf",
    ]
    lines = tricky + [bytes(rnd.randrange(256) for _ in range(rnd.randrange(40))).replace(b"\n", b"") for _ in range(3000)]
    lines += [bytes(rnd.choice(b"ab\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"\\") for _ in range(20)) for _ in range(2000)]
    recs = [
        rec(ln, b"topic-%d" % (i % 4) if i % 7 else b"t\xe9", encode_ulid(rnd.randrange(1 << 45), rnd.getrandbits(80)))
        for i, ln in enumerate(lines)
    ]
    buf = b"".join(recs)
    assert fast.format(buf, 0, len(buf), 6) == b"".join(ref_json(r) for r in recs)
    # Malformed records and a missing final LF: no crash, one object per record.
    odd = b"01ARZ3NDEK short\n" + b"\n" + rec(b"last")[:-1]
    out = fast.format(odd, 0, len(odd), 6).split(b"\n")
    assert len(out) == 4 and out[-1] == b"" and out[2].endswith(b'"line": "last"}')


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        (rb"Failed password for (invalid user )?\w+", b"Failed password for "),
        (rb"a|bcd", None),  # alternation at the top: no literal is required
        (rb"(?i)error", None),  # case folding
        (rb"ab*cdef", b"cdef"),
        (rb"x\d+ yz", b" yz"),
        (rb"\Qabc\E", None),  # RE2-only syntax: no literal rather than a wrong one
        (rb"ab", None),  # too short to pay
    ],
)
def test_required_literal(pattern, literal):
    assert required_literal(pattern) == literal


def test_regex_via_literal_equals_regex_everywhere():
    lines = sample_lines(20000, seed=9)
    buf = b"".join(rec(x) for x in lines)
    for pattern in (rb"Failed password for (invalid user )?\w+", rb"user \w+ from \d", rb"PacketResponder \d+ for"):
        m = Matcher(Query(q=pattern, regex=True))
        assert m._lit is not None
        r = re2.compile(pattern)
        want = b"".join(buf[ls:e] for _, ls, e in split(buf) if r.search(buf[ls : e - 1]))
        assert m.scan_format(buf, 0, len(buf), MODE_LINES) == want
        want_raw = b"".join(buf[rs:e] for rs, ls, e in split(buf) if r.search(buf[ls : e - 1]))
        assert b"".join(buf[s:e] for s, e in m.scan(buf, 0, len(buf))) == want_raw


def test_split_topics_against_python():
    rnd = random.Random(11)
    for n_topics in (1, 2, 5, 64, 65):
        topics = [b"t%d" % i for i in range(n_topics)]
        recs = [rec(b"line %d" % i, rnd.choice(topics)) for i in range(3000)]
        if n_topics > 1:
            recs[0], recs[1] = rec(b"first", topics[0]), rec(b"second", topics[1])
        buf = b"".join(recs)
        groups: dict[bytes, list[bytes]] = {}
        for r in recs:
            groups.setdefault(r.split(b" ")[1], []).append(r)
        got = fast.split_topics(buf, 64)
        if len(groups) == 1:
            assert got is None
        elif len(groups) > 64:
            assert got == []  # too many to keep apart
        else:
            assert got == [(t, b"".join(rs)) for t, rs in groups.items()]  # in order of first appearance
    assert fast.split_topics(b"", 4) is None
    with pytest.raises(ValueError):
        fast.split_topics(b"", 0)


def test_merge_of_buffers_in_runs_against_the_python_merge():
    """Buffers that take turns in long runs (topics' segments interleaved in
    time): merge copies a run without comparing each record with every head,
    and still drops the copies other buffers hold."""
    from oklog.records.merge import iter_merge
    from oklog.records.record import encode_ulid

    rnd = random.Random(7)
    for _trial in range(80):
        pool = sorted({encode_ulid(rnd.randrange(1 << 24), rnd.getrandbits(8)) for _ in range(rnd.randrange(1, 600))})
        k = rnd.randrange(1, 12)
        bufs: list[list[bytes]] = [[] for _ in range(k)]
        i = 0
        while i < len(pool):  # a run of consecutive ULIDs to one buffer, sometimes to two (copies)
            n = rnd.randrange(1, 80)
            owners = rnd.sample(range(k), min(k, rnd.choice([1, 1, 1, 2])))
            for u in pool[i : i + n]:
                r = rec(b"line " + u[-6:], b"t", u)
                for o in owners:
                    bufs[o].append(r)
            i += n
        runs = [b"".join(b) for b in bufs]
        want = b"".join(iter_merge([r for r in runs if r]))
        assert fast.merge(runs, MODE_RAW) == want
        assert fast.merge(runs, MODE_LINES) == fast.format(want, 0, len(want), MODE_LINES)


def test_merge_against_the_python_merge():
    from oklog.records.merge import iter_merge
    from oklog.records.record import encode_ulid

    rnd = random.Random(12)
    for trial in range(60):
        pool = sorted({encode_ulid(rnd.randrange(1 << 20), rnd.getrandbits(8)) for _ in range(rnd.randrange(1, 400))})
        recs = {u: rec(b"line %d" % i, rnd.choice([b"a", b"bb"]), u) for i, u in enumerate(pool)}
        runs = []
        for _ in range(rnd.randrange(1, 6)):  # overlapping samples: many ULIDs in several runs
            runs.append(b"".join(recs[u] for u in sorted(rnd.sample(pool, rnd.randrange(len(pool) + 1)))))
        if trial % 7 == 0:
            runs.append(b"")
        want = b"".join(iter_merge([r for r in runs if r]))  # the streamed Python merge compaction uses
        assert fast.merge(runs, MODE_RAW) == want
        assert fast.merge(runs, MODE_LINES) == fast.format(want, 0, len(want), MODE_LINES)
        assert fast.merge(runs, MODE_ULID) == fast.format(want, 0, len(want), MODE_ULID)
    assert fast.merge([], MODE_RAW) == b""
    # A last record without LF, and memoryviews and mmaps as input.
    a, b = rec(b"x", ulid=encode_ulid(1, 1)), rec(b"y", ulid=encode_ulid(2, 1))[:-1]
    assert fast.merge([memoryview(b), a], MODE_LINES) == b"x\ny"
    with pytest.raises(ValueError):
        fast.merge([a], MODE_CANDIDATES)
    with pytest.raises(TypeError):
        fast.merge([a, 5], MODE_RAW)
