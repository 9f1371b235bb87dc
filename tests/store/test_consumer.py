"""The consumer's state machine in-process, against fakes of its Protocols
(IngestSource, StoreTarget): gather, merge, replicate to N targets, commit
only when all N acknowledged, mark failed otherwise."""

from __future__ import annotations

import pytest
import trio

from oklog.node import state
from oklog.node.health import Health
from oklog.records.merge import merge_dedup
from oklog.records.record import ULIDSource, stamp_lines
from oklog.store.consumer import Consumer

_src = ULIDSource(iter(range(1, 10**9, 7)).__next__)


def batch(n: int, tag: bytes) -> bytes:
    return stamp_lines([b"%s %d" % (tag, i) for i in range(n)], _src.headers(n))


class FakeSource:
    """An ingest member holding flushed segments."""

    def __init__(self, name: str, segments: dict[str, bytes], bad_read: set[str] | None = None) -> None:
        self.name = name
        self.waiting = list(segments)
        self.segments = segments
        self.bad_read = bad_read or set()
        self.committed: list[str] = []
        self.failures: list[str] = []
        self.commit_error: Exception | None = None
        self.held: set[str] = set()  # handed out, not settled: pending
        self.pending_error: Exception | None = None

    async def next(self) -> str | None:
        await trio.lowlevel.checkpoint()
        if not self.waiting:
            return None
        seg_id = self.waiting.pop(0)
        self.held.add(seg_id)
        return seg_id

    async def pending(self, seg_id: str) -> bool:
        await trio.lowlevel.checkpoint()
        if self.pending_error is not None:
            raise self.pending_error
        return seg_id in self.held

    async def read(self, seg_id: str) -> bytes:
        await trio.lowlevel.checkpoint()
        if seg_id in self.bad_read:
            raise OSError(f"read {seg_id}: connection reset")
        return self.segments[seg_id]

    async def commit(self, seg_id: str) -> None:
        await trio.lowlevel.checkpoint()
        if self.commit_error is not None:
            raise self.commit_error
        self.held.discard(seg_id)
        self.committed.append(seg_id)

    async def failed(self, seg_id: str) -> None:
        await trio.lowlevel.checkpoint()
        self.held.discard(seg_id)
        self.failures.append(seg_id)


class FakeTarget:
    """A store member: keeps what it is sent, or refuses."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.received: list[bytes] = []

    local = False

    def takes_encoded(self) -> bool:
        return False

    async def replicate(self, data: bytes, encoded: bytes | None = None) -> int:
        await trio.lowlevel.checkpoint()
        if self.fail:
            raise ConnectionError(f"{self.name} refused")
        self.received.append(data)
        return len(data)


def consumer(sources: list[FakeSource], targets: list[FakeTarget], factor: int, strict: bool = False) -> Consumer:
    return Consumer(lambda: sources, lambda: targets, factor, batch_size=1 << 20, batch_age=30.0, strict=strict)


@pytest.mark.trio
async def test_a_cycle_gathers_every_source_and_commits_after_all_copies():
    a1, a2, b1 = batch(30, b"a1"), batch(30, b"a2"), batch(30, b"b1")
    dup = a1[: a1.index(b"\n") + 1]  # a record sent twice (a retried forward)
    sources = [FakeSource("i1", {"s1": a1, "s2": a2}), FakeSource("i2", {"s3": b1 + b"", "s4": dup})]
    targets = [FakeTarget(f"t{i}") for i in range(3)]
    c = consumer(sources, targets, 3)
    assert await c.cycle() is True
    want = merge_dedup([a1, a2, b1, dup])
    assert want.count(b"\n") == 90
    for t in targets:
        assert t.received == [want]
    assert sorted(sources[0].committed) == ["s1", "s2"] and sorted(sources[1].committed) == ["s3", "s4"]
    assert not sources[0].failures and not sources[1].failures
    st = c.stats
    assert (st.batches, st.segments_consumed, st.bytes_consumed, st.replications_ok) == (1, 4, len(want), 1)
    assert st.factor_effective == 3 and st.state == "idle"
    assert await c.cycle() is False  # nothing left


@pytest.mark.trio
async def test_one_failing_target_commits_nothing_and_marks_every_source_failed():
    sources = [FakeSource("i1", {"s1": batch(10, b"x")}), FakeSource("i2", {"s2": batch(10, b"y")})]
    targets = [FakeTarget("t0"), FakeTarget("t1", fail=True), FakeTarget("t2")]
    c = consumer(sources, targets, 3)
    events: list[tuple[str, str, bool, str]] = []
    c.on_event = lambda *e: events.append(e)
    assert await c.cycle() is True
    assert not sources[0].committed and not sources[1].committed
    assert sources[0].failures == ["s1"] and sources[1].failures == ["s2"]
    assert c.stats.replications_failed == 1 and c.stats.batches == 0 and c.stats.replications_ok == 0
    assert "t1" in c.stats.last_error
    assert ("replicate", "t1", False, "t1 refused") in events


@pytest.mark.trio
async def test_a_source_that_fails_a_read_gets_its_segment_back_and_the_rest_go_on():
    good = batch(10, b"g")
    sources = [FakeSource("i1", {"bad": batch(5, b"b")}, bad_read={"bad"}), FakeSource("i2", {"s2": good})]
    targets = [FakeTarget("t0"), FakeTarget("t1")]
    c = consumer(sources, targets, 2)
    assert await c.cycle() is True
    assert sources[0].failures == ["bad"] and not sources[0].committed
    assert sources[1].committed == ["s2"]
    assert [t.received for t in targets] == [[good], [good]]
    assert "gather from i1" in c.stats.last_error


@pytest.mark.trio
async def test_strict_with_too_few_targets_waits_and_takes_nothing():
    sources = [FakeSource("i1", {"s1": batch(5, b"w")})]
    c = consumer(sources, [FakeTarget("t0")], 2, strict=True)
    assert await c.cycle() is False
    assert c.stats.state == "waiting" and sources[0].waiting == ["s1"]
    assert "replication factor 2" in c.stats.warnings[0]


@pytest.mark.trio
async def test_a_lone_node_replicates_to_what_it_has_and_says_so():
    sources = [FakeSource("i1", {"s1": batch(5, b"l")})]
    targets = [FakeTarget("t0")]
    c = consumer(sources, targets, 2)
    assert await c.cycle() is True
    assert sources[0].committed == ["s1"] and c.stats.factor_effective == 1
    assert "only 1 store member" in c.stats.warnings[0]


@pytest.mark.trio
async def test_no_targets_fails_the_batch():
    sources = [FakeSource("i1", {"s1": batch(5, b"n")})]
    c = consumer(sources, [], 1)
    assert await c.cycle() is True
    assert sources[0].failures == ["s1"] and c.stats.replications_failed == 1


@pytest.mark.trio
async def test_a_failed_commit_is_counted_and_the_cycle_ends():
    src = FakeSource("i1", {"s1": batch(5, b"c")})
    src.commit_error = OSError("ingest node gone")
    c = consumer([src], [FakeTarget("t0")], 1)
    assert await c.cycle() is True
    assert c.stats.commits_failed == 1 and "ingest node gone" in c.stats.last_error
    assert c.stats.batches == 1  # replicated: the ingest node times the segment out and it is stored again (deduplicated)


class Watched:
    """A consumer whose events feed a node's ``Health``, on a hand-held clock."""

    def __init__(self, c: Consumer) -> None:
        self.c, self.health, self.now = c, Health(), 0.0
        c.on_event = lambda kind, subject, ok, text: self.health.report(self.now, kind, subject, ok, text)

    async def cycle(self) -> bool:
        self.now += 1.0
        return await self.c.cycle()

    def warnings(self) -> list[tuple[str, str]]:
        return [(w.kind, w.subject) for w in self.health.warnings(self.now)]


@pytest.mark.trio
async def test_a_failed_commit_stands_while_the_member_holds_the_segment_and_clears_once_it_lets_go():
    # The member dies between the read and the commit. Back, it offers the segment
    # again and another store member consumes it: this consumer never commits to
    # it again, yet its warning must clear (not wait for the window to age out).
    b = FakeSource("b", {"s1": batch(5, b"c")})
    b.commit_error = OSError("all attempts to connect failed")
    w = Watched(consumer([b], [FakeTarget("t0")], 1))
    assert await w.cycle() is True
    assert w.warnings() == [("commit", "b")] and w.c.unsettled == {"b": {"s1"}}
    b.commit_error = None  # answering again, but still holding s1 pending for us
    for _ in range(3):
        assert await w.cycle() is False
        assert w.warnings() == [("commit", "b")]  # "nothing flushed" proves nothing: no flicker
    b.held.clear()  # restarted (s1 flushed again), another member took and committed it
    assert await w.cycle() is False
    assert w.warnings() == [] and w.c.unsettled == {}
    assert await w.cycle() is False and w.warnings() == []


@pytest.mark.trio
async def test_a_segment_offered_again_is_taken_anew_and_its_commit_clears_the_warning():
    b = FakeSource("b", {"s1": batch(5, b"c")})
    b.commit_error = OSError("connection reset")
    w = Watched(consumer([b], [FakeTarget("t0")], 1))
    assert await w.cycle() is True and w.warnings() == [("commit", "b")]
    b.commit_error, b.held = None, set()  # restarted: s1 is flushed again, offered to us
    b.waiting.append("s1")
    assert await w.cycle() is True
    assert b.committed == ["s1"] and w.warnings() == [] and w.c.unsettled == {}


@pytest.mark.trio
async def test_a_failure_stands_while_it_is_not_known_whether_the_member_let_go():
    b = FakeSource("b", {"s1": batch(5, b"c"), "s2": batch(5, b"d")})
    b.commit_error = OSError("connection reset")
    w = Watched(consumer([b], [FakeTarget("t0")], 1))
    assert await w.cycle() is True
    assert w.c.unsettled == {"b": {"s1", "s2"}}
    b.commit_error, b.pending_error = None, OSError("timed out")
    b.held.clear()
    assert await w.cycle() is False
    assert w.warnings() == [("commit", "b")]  # not known: still shown, asked again
    b.pending_error = None
    b.held = {"s2"}  # let go of one of them only
    assert await w.cycle() is False
    assert w.warnings() == [("commit", "b")] and w.c.unsettled == {"b": {"s2"}}
    b.held = set()
    assert await w.cycle() is False
    assert w.warnings() == []


def test_stats_document_has_the_published_shape():
    doc = consumer([], [], 1).stats.as_dict()
    assert set(doc) == set(state.ConsumerStats.__annotations__)
