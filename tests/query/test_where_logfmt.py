"""-where NAME=VALUE decided by the C helper for logfmt lines (oklog.query.fields
with _fast.logfmt_eq) keeps exactly the records the parser keeps, and counts
the same skipped lines."""

from __future__ import annotations

import pytest
from conftest import sample_lines

from oklog.query.fields import WhereFilter, parse_condition
from tests.fast.test_fast_count import LOGFMT_LINES, records


@pytest.mark.parametrize("cond", ["uid=0", "uid=10", "status=0200", "level=nan", "level=info", "msg=ok", "k=v", "a.b=1", "status=200", "uid=\"0\"", "msg=two words"])
def test_fast_where_equals_the_parser(cond):
    lines = LOGFMT_LINES + [
        b'ts=1 level=info msg=ok status=200 uid=0',
        b'{"a": {"b": 1}, "uid": 0, "level": "info"}',
        b"a.b=1 a=2",
        b"x=1 k=v",
        b'msg="two words" uid="0"',
        b"status=200.0 level=INFO",
    ]
    lines += [ln.rstrip(b"\r") for ln in sample_lines(4000, seed=11)]
    buf = records(lines)
    fast = WhereFilter([parse_condition(cond)])
    slow = WhereFilter([parse_condition(cond)])
    slow._logfmt = None
    assert (fast._logfmt is not None) == (cond not in ("a.b=1", "msg=two words"))
    got, want = fast.apply(buf), slow.apply(buf)
    assert got == want
    assert fast.skipped == slow.skipped
    assert want
