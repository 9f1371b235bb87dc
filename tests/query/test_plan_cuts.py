"""Pure decisions of the query plan and matcher: where units are cut, which
matchers the C kernels decide alone, and hostile patterns that the literal
and width analysis must decline rather than raise on."""

from __future__ import annotations

import pytest

from oklog.query import plan
from oklog.query.engine import Matcher, Query, max_width, required_literal
from oklog.store.log import Segment


def test_cuts_every_unit_bytes_never_between_equal_keys():
    u = plan.UNIT_BYTES
    events = [(b"A", u), (b"B", u), (b"B", u), (b"C", 10), (b"D", 10)]
    assert plan._cuts(events, b"0", b"~") == [b"0", b"B", b"C", b"~"]


def test_cuts_small_events_make_one_unit():
    assert plan._cuts([(b"A", 1), (b"B", 1)], b"0", b"~") == [b"0", b"~"]


def records(ulids: list[int], topic: bytes = b"t") -> bytes:
    return b"".join(b"%026d %s line %d\n" % (i, topic, i) for i in ulids)


def seg(name_first: int, buf: bytes, topic: str) -> Segment:
    return Segment(first=f"{name_first:026d}", last=f"{name_first:026d}", size=len(buf), topic=topic)


@pytest.mark.parametrize("unit_bytes", [64, 200, 1 << 20])
def test_split_group_covers_parts_in_key_order(monkeypatch, unit_bytes):
    monkeypatch.setattr(plan, "UNIT_BYTES", unit_bytes)
    a = records(list(range(0, 60, 2)), b"a")  # even ULIDs
    b = records(list(range(0, 60, 3)), b"b")  # multiples of 3: some ULIDs in both
    sa, sb = seg(0, a, "a"), seg(1, b, "b")
    bufs = {sa.name: a, sb.name: b}
    units = plan._split_group(bufs, [(sa, 0, len(a)), (sb, 0, len(b))])
    got = {sa.name: b"", sb.name: b""}
    last_max = b""
    for u in units:
        keys = []
        for s, lo, hi in u.parts:
            got[s.name] += bufs[s.name][lo:hi]
            assert hi - lo <= unit_bytes + 40  # a unit holds about UNIT_BYTES of a part (plus a record)
            keys += [r[:26] for r in bufs[s.name][lo:hi].split(b"\n")[:-1]]
        assert min(keys) > last_max  # units in ULID order; a ULID's copies in one unit
        last_max = max(keys)
    assert got == {sa.name: a, sb.name: b}
    if unit_bytes < len(a):
        assert len(units) > 1


def test_strides_are_record_aligned_and_cover(monkeypatch):
    monkeypatch.setattr(plan, "UNIT_BYTES", 50)
    buf = records(list(range(20)))
    spans = list(plan._strides(buf, 0, len(buf)))
    assert spans[0][0] == 0 and spans[-1][1] == len(buf)
    for (_, e), (s, _) in zip(spans, spans[1:], strict=False):
        assert e == s and buf[e - 1 : e] == b"\n"


def test_substring_and_plain_needle():
    assert Matcher(Query(b"abc")).substring() == (b"abc", False)
    assert Matcher(Query(b"abc")).plain_needle() == (True, b"abc")
    icase = Matcher(Query(b"abc", icase=True))
    assert icase.substring() == (b"abc", True)
    assert icase.plain_needle() == (False, None)  # zscan is exact-case
    assert Matcher(Query(b"abc+d", regex=True)).substring() is None
    assert Matcher(Query(b"abc", topic=b"t")).substring() is None
    everything = Matcher(Query(b""))
    assert everything.substring() is None
    assert everything.plain_needle() == (True, None)
    assert Matcher(Query(b"", topic=b"t")).plain_needle() == (False, None)
    assert Matcher(Query(b"a\nb")).substring() is None  # matches nothing


@pytest.mark.parametrize(
    "pattern",
    [
        b"(" * 1500 + b"abc" + b")" * 1500,  # deeper than Python's parser recursion
        b"abcd{99999999999}",  # a repeat count past Python's limit
        b"abc\\pL",  # RE2 syntax Python lacks
        b"(?P<x>abc)(?P<x>d)",
    ],
    ids=["deep", "repeat", "re2-only", "duplicate-name"],
)
def test_hostile_patterns_get_no_literal_or_width(pattern):
    assert required_literal(pattern) is None
    assert max_width(pattern) is None
