"""The node's warnings (oklog/node/health.py): a window of recent events, each warning
naming its cause and clearing when the cause has gone. Pure, on a hand-held clock."""

from __future__ import annotations

from oklog.node.health import RECENT, STALL_AFTER, Health, IngestWatch, RecentEvents


def texts(h: Health, now: float, consumer: list[str] | None = None) -> list[tuple[str, str, str]]:
    return [(w.level, w.kind, w.text) for w in h.warnings(now, consumer or [])]


def test_replication_failure_warns_names_the_target_and_clears_on_success():
    h = Health()
    h.report(100.0, "replicate", "s2", False, "connection refused")
    h.report(101.0, "replicate", "s2", False, "connection refused")
    h.report(101.0, "replicate", "s3", True)
    [(level, kind, text)] = texts(h, 102.0)
    assert level == "error" and kind == "replicate"
    assert "replication to store member s2 failing" in text and "2 failures" in text
    assert "connection refused" in text and "s3" not in text
    h.report(103.0, "replicate", "s2", True)  # it answers again: the cause has gone
    assert texts(h, 103.5) == []


def test_failure_without_a_later_attempt_expires_after_the_window():
    h = Health()
    h.report(0.0, "replicate", "s2", False, "timed out")
    assert texts(h, RECENT - 1)
    assert texts(h, RECENT + 1) == []  # nothing failed for a while: not the present any more
    assert h.figures(RECENT + 1)["failures_5m"]["replicate"] == 1  # the figure still counts it
    assert h.figures(RECENT + 1)["failures"]["replicate"] == 0


def test_gather_from_an_ingest_member_is_not_called_replication():
    h = Health()
    h.report(10.0, "gather", "i1", False, "All connection attempts failed")
    [(level, kind, text)] = texts(h, 11.0)
    assert kind == "gather" and level == "warning"
    assert "replication" not in text
    assert "cannot read from ingest member i1" in text and "All connection attempts failed" in text
    h.report(12.0, "gather", "i1", True)
    assert texts(h, 12.0) == []


def test_no_store_member_then_members_back():
    h = Health()
    h.report(1.0, "replicate", "", False, "no store members to replicate to")
    [(_, _, text)] = texts(h, 2.0)
    assert "no store member to replicate to" in text
    h.report(3.0, "replicate", "", True)
    assert texts(h, 3.0) == []


def test_consumer_warnings_pass_through():
    h = Health()
    assert texts(h, 0.0, ["waiting: replication factor 2 but 1 live store member(s)"]) == [
        ("warning", "consumer", "waiting: replication factor 2 but 1 live store member(s)")]


def test_ingest_stall_needs_connections_and_silence():
    w = IngestWatch()
    w.observe(0.0, 100, 0)
    assert w.stalled_for(STALL_AFTER * 3) is None  # nobody connected: idle, not stalled
    w.observe(100.0, 100, 2)  # producers connect; their silence starts now
    assert w.stalled_for(100.0 + STALL_AFTER - 1) is None
    w.observe(100.0 + STALL_AFTER + 5, 100, 2)
    assert w.stalled_for(100.0 + STALL_AFTER + 5) == STALL_AFTER + 5
    h = Health()
    h.ingest = w
    [(level, kind, text)] = texts(h, 100.0 + STALL_AFTER + 5)
    assert kind == "ingest_stall" and "2 producer connections open, nothing written for 35s" in text
    w.observe(200.0, 150, 2)  # records written again: cleared
    assert w.stalled_for(200.0) is None and texts(h, 200.0) == []
    w.observe(300.0, 150, 0)  # producers gone: cleared
    assert w.stalled_for(400.0) is None


def test_events_are_bounded():
    ev = RecentEvents(cap=10)
    for i in range(1000):
        ev.add(float(i) / 100, "replicate", f"s{i % 3}", False, "x")
    assert len(ev.events) == 10
    assert {f.subject for f in ev.failing(10.0)} == {"s0", "s1", "s2"}
