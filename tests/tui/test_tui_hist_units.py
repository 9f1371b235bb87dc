"""The query bar's parser, the histogram's step and bucket arithmetic, and the
hits document check (pure)."""

from __future__ import annotations

import pytest

from oklog.tui.client import ApiError, QueryRequest, parse_hits
from oklog.tui.querybar import BarQuery, QueryBarError, parse_bar, tokens
from oklog.tui.widgets.histogram import Layout, bound_ms, choose_step, rfc3339_ms, step_text


@pytest.mark.parametrize("text, want", [
    ("", BarQuery()),
    ("GET /v1 200", BarQuery(q="GET /v1 200")),
    ("  status = 'open' ", BarQuery(q="status = 'open'")),  # no flags: the text as typed
    ("error -i", BarQuery(q="error", icase=True)),
    ("GET /v1 -v health -v 'GET /ping' -i", BarQuery(q="GET /v1", without=("health", "GET /ping"), icase=True)),
    ("x -where 'status>=500' -where level=error", BarQuery(q="x", where=("status>=500", "level=error"))),
    ("-q a -q \"b c\" -regex", BarQuery(q="a", more=("b c",), regex=True)),
    ("-where msg~timeout", BarQuery(where=("msg~timeout",))),
    ("-i", BarQuery(icase=True)),
    ("grep -vx foo", BarQuery(q="grep -vx foo")),  # -vx is no flag
    ("a -q '-v'", BarQuery(q="a", more=("-v",))),  # a flag's text, quoted, is a term
    ("a -v x tail words", BarQuery(q="a", more=("tail", "words"), without=("x",))),
    ('a -v "say \\"hi\\""', BarQuery(q="a", without=('say "hi"',))),
])
def test_parse_bar(text, want):
    assert parse_bar(text) == want


@pytest.mark.parametrize("text, says", [
    ("x -v", "-v needs a value"),
    ("x -where", "-where needs a condition"),
    ("x -where status", "NAME OP VALUE"),
    ("x -where 'msg~('", "invalid regex"),
    ("x -v 'open", "unterminated"),
    ("x -v ''", "empty term"),
    ("x " + " ".join(["-v y"] * 33), "the limit is 32"),
    ("x -v " + "y" * 5000, "the limit is 4096"),
])
def test_parse_bar_errors(text, says):
    with pytest.raises(QueryBarError, match=None) as e:
        parse_bar(text)
    assert says in str(e.value)


def test_tokens_mark_quoted_words():
    assert tokens("-v 'a b' c\"d e\"f") == [("-v", False), ("a b", True), ("cd ef", True)]


def test_request_params_carry_the_bar_flags():
    r = QueryRequest(q="a", more=("b",), without=("c", "d"), where=("n>1",), icase=True, from_="", to="")
    assert r.params() == {"q": ["a", "b"], "regex": "false", "i": "true", "not": ["c", "d"], "where": ["n>1"]}
    assert QueryRequest(q="a", from_="").params() == {"q": "a", "regex": "false"}


@pytest.mark.parametrize("span, most, step", [
    (3_600_000, 120, 30_000),  # an hour: 120 buckets of 30 s
    (3_600_000, 80, 60_000),
    (300_000, 120, 5_000),
    (86_400_000, 120, 900_000),
    (1, 120, 1),
])
def test_choose_step(span, most, step):
    got = choose_step(span, most)
    assert got == step and -(-span // got) <= most


def test_steps_read_back():
    assert [step_text(s) for s in (500, 30_000, 60_000, 7_200_000, 86_400_000, 1_500)] == \
        ["500ms", "30s", "1m", "2h", "1d", "1500ms"]


def test_layout_buckets_and_bounds():
    lay = Layout(lo=1_000_010_000, hi=1_000_070_000, step=30_000)  # not aligned to the step
    assert lay.first == 999_990_000
    assert lay.n == -(-(lay.hi - lay.first) // 30_000)
    assert lay.bounds(0) == (lay.lo, lay.first + 30_000)  # clipped to the range
    assert lay.bounds(0, lay.n - 1) == (lay.lo, lay.hi)
    hits = parse_hits(200, {"total": 3, "step_ms": 30_000, "complete": True,
                            "buckets": [{"ms": lay.first, "count": 2}, {"ms": lay.first + 30_000, "count": 1},
                                        {"ms": lay.first + 30_000 * 99, "count": 5}]})  # outside: not drawn
    assert lay.counts(hits)[:2] == [2, 1] and sum(lay.counts(hits)) == 3


def test_bounds_of_times_and_ulids():
    assert bound_ms("2026-11-30T10:00:00Z", upper=False) == 1_796_032_800_000
    assert bound_ms("2026-11-30T10:00:00.999Z", upper=True) == 1_796_032_801_000
    assert rfc3339_ms(1_796_032_800_123) == "2026-11-30T10:00:00.123Z"
    assert bound_ms("01M8PY1P607G6ZWH1VXDDGC23G", upper=True) == bound_ms("01M8PY1P607G6ZWH1VXDDGC23G", False) + 1


def test_hits_documents():
    h = parse_hits(206, {"total": 1, "step_ms": 5, "buckets": [{"ms": 5, "count": 1}], "complete": False,
                         "errors": "n1: refused"})
    assert not h.complete and h.errors == "n1: refused" and h.status == 206
    assert not parse_hits(206, {"total": 0, "complete": True}).complete  # a 206 is never whole
    assert not parse_hits(200, {"total": 0}).complete  # nor an answer that does not say
    for bad in ([], {"total": "3"}, {"total": 1, "buckets": [{"ms": 1}]},
                {"total": 1, "buckets": [{"ms": 1, "count": -1}]}):
        with pytest.raises(ApiError):
            parse_hits(200, bad)


def test_highlight_folds_case_with_i():
    from oklog.tui.widgets.result_log import compile_highlight

    assert compile_highlight("timeout", False, True).findall("Timeout TIMEOUT x") == ["Timeout", "TIMEOUT"]
    assert compile_highlight("time.ut", True, True).findall("TIMEOUT") == ["TIMEOUT"]
    assert compile_highlight("timeout", False).findall("Timeout") == []
