"""The pure decisions of the fan-out: who may hold records, who is skipped,
what a header may carry, and how the merge treats a member failing mid-stream."""

from __future__ import annotations

import pytest
import trio

from oklog.query.fanout import (
    CLOCK_SKEW_MS,
    MemberHealth,
    Observed,
    Roster,
    complete_without,
    merge_streams,
    sanitize,
)
from oklog.records.record import encode_ulid


def obs(id: str, state: str = "alive", since: float = 0.0, holds: bool = True, me: bool = False) -> Observed:
    return Observed(id, None if me else f"api-{id}", state, since, holds, 10 if holds else 0, me)


def names(absent):
    return {a.name: a.reason for a in absent}


def test_dead_suspect_left_and_forgotten_members():
    r = Roster(remember=100.0)
    r.observe(1000.0, [obs("me", me=True), obs("a"), obs("b"), obs("c"), obs("d", holds=False)])
    ask, absent = r.plan(0)
    assert [k.id for k in ask] == ["a", "b", "c", "d", "me"] and absent == []
    # a dies, b is suspect (still asked), c leaves holding data, d leaves empty (handed off)
    r.observe(1010.0, [obs("me", me=True), obs("a", "dead", 1005.0), obs("b", "suspect"),
                       obs("c", "left", 1008.0), obs("d", "left", 1008.0, holds=False)])
    ask, absent = r.plan(0)
    assert [k.id for k in ask] == ["b", "me"]
    assert names(absent) == {"a": "dead", "c": "left the cluster holding 10 bytes"}
    # gossip forgets a: this node still remembers it ...
    r.observe(1050.0, [obs("me", me=True), obs("b")])
    _, absent = r.plan(0)
    assert names(absent)["a"] == "dead (no longer in gossip)"
    # ... until `remember` seconds after it was last alive
    r.observe(1111.0, [obs("me", me=True), obs("b")])
    assert "a" not in names(r.plan(0)[1])


def test_a_member_dead_before_the_range_cannot_hold_its_records():
    r = Roster()
    r.observe(2000.0, [obs("me", me=True), obs("a")])
    r.observe(2100.0, [obs("me", me=True), obs("a", "dead", 2050.0)])
    last_alive_ms = 2000_000
    assert names(r.plan(last_alive_ms + CLOCK_SKEW_MS)[1]) == {"a": "dead"}
    assert names(r.plan(last_alive_ms + CLOCK_SKEW_MS + 1)[1]) == {}


def test_first_seen_dead_counts_from_its_death():
    r = Roster()
    r.observe(5000.0, [obs("me", me=True), obs("a", "dead", since=4000.0)])
    assert names(r.plan(4000_000 + CLOCK_SKEW_MS)[1]) == {"a": "dead"}
    assert names(r.plan(4000_000 + CLOCK_SKEW_MS + 1)[1]) == {}


def test_advertised_empty_store_still_counts_while_alive_or_dead():
    # store_bytes in gossip is up to a few seconds old: only a member that
    # left (its last word) is trusted to hold nothing.
    r = Roster()
    r.observe(10.0, [obs("me", me=True), obs("a", holds=False)])
    r.observe(20.0, [obs("me", me=True), obs("a", "dead", 15.0, holds=False)])
    assert names(r.plan(0)[1]) == {"a": "dead"}


def test_roster_is_bounded():
    r = Roster()
    r.observe(0.0, [obs(f"m{i}") for i in range(1100)])
    assert r.total() == 1024


def test_health_skips_after_repeated_failures_and_backs_off():
    h = MemberHealth(threshold=3, backoff=10.0, max_backoff=25.0)
    for t in (0.0, 1.0):
        h.failed("a", t, "boom")
        assert h.skipped("a", t) is None
    h.failed("a", 2.0, "no answer in time")
    why = h.skipped("a", 3.0)
    assert why == "skipped for 9s after 3 failed queries in a row (last: no answer in time)"
    assert h.skipped("a", 12.0) is None  # one query tries again
    h.failed("a", 12.0, "boom")
    assert h.skipped("a", 31.0) is not None and h.skipped("a", 32.0) is None  # 20 s
    h.failed("a", 32.0, "boom")
    assert h.skipped("a", 56.0) is not None and h.skipped("a", 57.0) is None  # capped at 25 s
    h.succeeded("a")
    h.failed("a", 60.0, "boom")
    assert h.skipped("a", 60.0) is None


def test_completeness_needs_assured_replication_and_fewer_missing_than_the_factor():
    assert complete_without(0, 1, False)
    assert not complete_without(1, 2, False)
    assert complete_without(1, 2, True)
    assert not complete_without(2, 2, True)
    assert complete_without(2, 3, True)


@pytest.mark.parametrize(
    "text, want",
    [
        ("a\r\nX-Evil: 1\r\n\r\nb", "a X-Evil: 1 b"),
        ("nul\x00esc\x1b[31m del\x7f", "nul esc [31m del"),
        ("caf\u00e9 \u2603", "caf? ?"),
        ("", ""),
    ],
)
def test_sanitize(text, want):
    assert sanitize(text) == want


def test_sanitize_bounds_length():
    assert sanitize("x" * 10_000, 50) == "x" * 47 + "..."


def rec(ms: int, line: bytes) -> bytes:
    return encode_ulid(ms, 0) + b" default " + line + b"\n"


async def _merge(chunks_per_stream, fail_at, on_fail):
    out: list[bytes] = []
    chans = []
    async with trio.open_nursery() as nursery:
        for i, chunks in enumerate(chunks_per_stream):
            tx, rx = trio.open_memory_channel(1)
            chans.append(rx)

            async def feed(tx=tx, chunks=chunks, i=i):
                async with tx:
                    for c in chunks:
                        await tx.send(c)

            nursery.start_soon(feed)

        class Failing:
            def __init__(self, rx, fail):
                self.rx, self.fail = rx, fail

            async def __aenter__(self):
                return self

            async def __aexit__(self, *e):
                await self.rx.aclose()

            def __aiter__(self):
                return self

            async def __anext__(self):
                try:
                    item = await self.rx.receive()
                except trio.EndOfChannel:
                    if self.fail:
                        raise RuntimeError("cut") from None
                    raise StopAsyncIteration from None
                return item

        streams = [Failing(rx, i == fail_at) for i, rx in enumerate(chans)]

        async def emit(data: bytes) -> None:
            out.append(data)

        await merge_streams(streams, emit, on_fail)  # type: ignore[arg-type]
    return b"".join(out)


def test_merge_carries_on_without_a_failed_stream_when_told_its_records_are_elsewhere():
    a = [rec(1, b"a1") + rec(3, b"a3"), rec(5, b"a5")]
    b = [rec(2, b"b2") + rec(3, b"a3")]
    failed = []
    got = trio.run(_merge, [a, b], 1, lambda i, e: failed.append(i) or True)
    assert failed == [1]
    assert got == rec(1, b"a1") + rec(2, b"b2") + rec(3, b"a3") + rec(5, b"a5")


def test_merge_aborts_when_a_failed_streams_records_may_be_lost():
    a = [rec(1, b"a1")]
    b = [rec(2, b"b2")]
    with pytest.raises(BaseException) as info:
        trio.run(_merge, [a, b], 1, lambda i, e: False)
    assert "cut" in repr(info.value)
