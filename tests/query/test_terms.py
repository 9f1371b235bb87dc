"""-i, several -q terms and -v terms (oklog.query.terms) on loghub records,
against plain Python and grep over the same lines."""

from __future__ import annotations

import subprocess

import pytest
from conftest import sample_lines

from oklog.query.engine import MODE_LINES, MODE_RAW, QueryError
from oklog.query.params import parse_params
from oklog.query.plan import query_literal
from oklog.query.terms import build_matcher
from oklog.records.record import encode_ulid

LINES = sample_lines(30_000, seed=5)
TOPICS = [b"a", b"b"]
BUF = b"".join(encode_ulid(1_764_000_000_000 + i, i) + b" " + TOPICS[i % 2] + b" " + ln + b"\n" for i, ln in enumerate(LINES))


def run(terms, regex=False, icase=False, without=(), topic=None) -> list[bytes]:
    m = build_matcher([t.encode() for t in terms], regex, icase, [t.encode() for t in without], topic)
    return lines(m.scan_format(BUF, 0, len(BUF), MODE_LINES))


def lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def grep(*args: str, data: bytes | None = None) -> list[bytes]:
    r = subprocess.run(["grep", *args], input=b"\n".join(LINES) + b"\n" if data is None else data, capture_output=True, env={"LC_ALL": "C"})
    return lines(r.stdout)


@pytest.mark.parametrize("term", ["error", "INFO", "Session", "pam_unix(sshd:auth)", "x.y"])
def test_icase_substring_equals_grep_iF(term):
    got = run([term], icase=True)
    assert got == grep("-iF", term)
    assert got == [ln for ln in LINES if term.lower().encode() in ln.lower()]


@pytest.mark.parametrize("pattern", ["err(or)?", "^info", "fail(ed|ure)", "[a-z]+exception"])
def test_icase_regex_equals_grep_iE(pattern):
    assert run([pattern], regex=True, icase=True) == grep("-iE", pattern)


def test_all_terms_must_match_and_v_terms_must_not():
    ref = [ln for ln in LINES if b"INFO" in ln and b"block" in ln and b"Receiving" not in ln and b"blk_-" not in ln]
    assert ref  # the corpus has such lines
    assert run(["INFO", "block"], without=["Receiving", "blk_-"]) == ref
    assert run([], without=["INFO"]) == grep("-vF", "INFO")
    # -i applies to -v terms too
    assert run(["session"], icase=True, without=["ROOT"]) == [
        ln for ln in LINES if b"session" in ln.lower() and b"root" not in ln.lower()
    ]
    # and the topic still filters
    m = build_matcher([b"INFO", b"block"], False, False, [b"Receiving"], b"a")
    raw = lines(m.scan_format(BUF, 0, len(BUF), MODE_RAW))
    assert [r.split(b" ", 2)[2] for r in raw] == [
        r.split(b" ", 2)[2]
        for r in lines(BUF)
        if r.split(b" ", 2)[1] == b"a" and b"INFO" in r.split(b" ", 2)[2] and b"block" in r and b"Receiving" not in r
    ]


def test_params_and_bloom_literal():
    p = parse_params({"q": ["Error", "x"], "not": ["y"], "i": ["true"]})
    assert p.terms == (b"Error", b"x") and p.without == (b"y",) and p.icase
    assert query_literal(p.query) is None  # blooms hold the bytes as they are: no skipping under -i
    assert query_literal(parse_params({"q": ["Error"]}).query) == b"Error"
    with pytest.raises(QueryError):
        parse_params({"q": ["x"] * 33})
    with pytest.raises(QueryError):
        build_matcher([b"("], True, True, [], None)
