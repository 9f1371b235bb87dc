"""Which store members a query skips because they advertise holding nothing
in its range (pure decisions; the e2e test is tests/e2e/test_skip_members_e2e.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from oklog.cluster.codec import check_meta
from oklog.query.coordinator import observe_gossip, query_hi_ms
from oklog.query.fanout import SPAN_GRACE, SPAN_SLACK_MS, Observed, Roster, holds_nothing_before
from oklog.records.record import encode_ulid

HOUR = 3_600_000
T = 1_800_000_000_000  # ms: "now" in these tests


def obs(id: str, lo: int | None, state: str = "alive", since: float = 0.0, me: bool = False) -> Observed:
    return Observed(id, None if me else f"api-{id}", state, since, True, 10, me, lo)


def plan(r: Roster, lo_ms: int, hi_ms: int | None):
    ask, absent, skipped = r.plan_range(lo_ms, hi_ms)
    return [k.id for k in ask], {a.name for a in absent}, [k.id for k in skipped]


def test_overlap_needs_an_advertised_oldest_record_and_slack():
    assert not holds_nothing_before(None, T)  # unknown: may hold anything
    assert not holds_nothing_before(T, None)  # open-ended query
    assert not holds_nothing_before(T, T + HOUR)
    assert not holds_nothing_before(T, T - SPAN_SLACK_MS)  # within the slack: asked
    assert holds_nothing_before(T, T - SPAN_SLACK_MS - 1)


def test_alive_members_outside_the_range_are_skipped_not_missing():
    r = Roster()
    r.observe(T / 1000, [obs("me", T - 10 * HOUR, me=True), obs("old", T - 10 * HOUR), obs("new", T - 60_000)])
    # the range of two hours ago: "new" holds nothing that old
    assert plan(r, T - 3 * HOUR, T - 2 * HOUR) == (["me", "old"], set(), ["new"])
    # the last minute: everyone may hold it (there is no upper bound)
    assert plan(r, T - 60_000, T) == (["me", "new", "old"], set(), [])
    # every member outside the range: nobody is asked, nobody is missing
    assert plan(r, T - 30 * HOUR, T - 20 * HOUR) == ([], set(), ["me", "new", "old"])


def test_unknown_span_is_always_asked():
    r = Roster()
    r.observe(T / 1000, [obs("me", None, me=True), obs("a", None)])
    assert plan(r, 0, 1) == (["a", "me"], set(), [])


def test_dead_member_counts_as_missing_only_when_its_span_overlaps_or_is_unknown():
    r = Roster()
    r.observe(T / 1000, [obs("me", 0, me=True), obs("new", T - 60_000), obs("unknown", None), obs("old", 0)])
    r.observe(T / 1000 + 10, [obs("me", 0, me=True), obs("new", T - 60_000, "dead", T / 1000 + 5),
                              obs("unknown", None, "dead", T / 1000 + 5), obs("old", 0, "dead", T / 1000 + 5)])
    ask, absent, skipped = plan(r, T - 3 * HOUR, T - 2 * HOUR)
    assert ask == ["me"] and absent == {"unknown", "old"} and skipped == ["new"]
    ask, absent, skipped = plan(r, T - 60_000, None)
    assert absent == {"new", "unknown", "old"} and skipped == []


def test_a_lowered_advertisement_is_used_at_once():
    r = Roster()
    r.observe(T / 1000, [obs("me", 0, me=True), obs("a", T - 60_000)])
    assert plan(r, T - 3 * HOUR, T - 2 * HOUR)[2] == ["a"]
    # a was written older records (a backfill): its next advertisement says so
    r.observe(T / 1000 + 1, [obs("me", 0, me=True), obs("a", T - 5 * HOUR)])
    assert plan(r, T - 3 * HOUR, T - 2 * HOUR) == (["a", "me"], set(), [])
    # an advertisement that disappears (a restarted, older node) means unknown
    r.observe(T / 1000 + 2, [obs("me", 0, me=True), obs("a", None)])
    assert "a" in plan(r, T - 30 * HOUR, T - 20 * HOUR)[0]


def test_gone_members_last_word_only_widens_the_span():
    r = Roster()
    r.observe(T / 1000, [obs("me", 0, me=True), obs("a", T - 60_000)])
    # the dead row gossip carries shows an older record than a advertised alive
    r.observe(T / 1000 + 10, [obs("me", 0, me=True), obs("a", T - 5 * HOUR, "dead", T / 1000 + 5)])
    assert plan(r, T - 3 * HOUR, T - 2 * HOUR) == (["me"], {"a"}, [])
    # ... and a later row claiming a narrower span is not believed
    r.observe(T / 1000 + 20, [obs("me", 0, me=True), obs("a", T - 60_000, "dead", T / 1000 + 5)])
    assert plan(r, T - 3 * HOUR, T - 2 * HOUR) == (["me"], {"a"}, [])


def test_spans_are_not_trusted_for_a_while_after_a_member_leaves():
    # A leaving member hands its records off; the receivers' lowered spans
    # reach this node through gossip only later.
    r = Roster()
    now = T / 1000
    r.observe(now, [obs("me", 0, me=True), obs("new", T - 60_000), obs("leaver", 0)])
    assert plan(r, T - 3 * HOUR, T - 2 * HOUR)[2] == ["new"]
    r.observe(now + 1, [obs("me", 0, me=True), obs("new", T - 60_000), obs("leaver", 0, "left", now + 1)])
    assert plan(r, T - 3 * HOUR, T - 2 * HOUR)[2] == []
    assert "new" in plan(r, T - 3 * HOUR, T - 2 * HOUR)[0]
    r.observe(now + 1 + SPAN_GRACE, [obs("me", 0, me=True), obs("new", T - 60_000), obs("leaver", 0, "left", now + 1)])
    assert plan(r, T - 3 * HOUR, T - 2 * HOUR)[2] == ["new"]


def test_a_member_first_seen_long_gone_does_not_suspend_skipping():
    r = Roster()
    now = T / 1000
    r.observe(now, [obs("me", 0, me=True), obs("new", T - 60_000), obs("x", 0, "left", now - 2 * SPAN_GRACE)])
    assert plan(r, T - 3 * HOUR, T - 2 * HOUR)[2] == ["new"]


def test_query_upper_bound_in_ms():
    assert query_hi_ms(b"\x7f") is None
    u = encode_ulid(T, 5)
    assert query_hi_ms(u + b"\x00") == T
    assert query_hi_ms(b"~" * 26) is None  # not a ULID: open


def row(meta, me=False, state="alive"):
    return SimpleNamespace(
        id="n1", serves=lambda role: True, meta=meta, is_self=me, state=state, since=0.0,
    )


def test_gossip_meta_without_a_valid_oldest_record_means_unknown():
    base = {"api_addr": "127.0.0.1:1", "store_bytes": 10}
    assert observe_gossip([row(base | {"store_lo_ms": 1234})])[0].lo_ms == 1234
    for bad in (None, True, 1.5, "1234"):
        assert observe_gossip([row(base | {"store_lo_ms": bad})])[0].lo_ms is None
    assert observe_gossip([row(base)])[0].lo_ms is None


@pytest.mark.parametrize("bad", [-1, 2**48, 1.0, float("nan"), True, "1", None, [1]])
def test_codec_refuses_a_bad_oldest_record(bad):
    with pytest.raises(ValueError, match="store_lo_ms"):
        check_meta({"store_lo_ms": bad})


def test_codec_accepts_ulid_milliseconds():
    check_meta({"store_lo_ms": 0})
    check_meta({"store_lo_ms": 2**48 - 1})
