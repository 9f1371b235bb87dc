"""The pure decisions of a fan-out: status and headers, and the replicate-missing plan."""

from dataclasses import dataclass

from oklog.query.answer import errors_header, replicate_plan, verdict
from oklog.query.fanout import Absent


@dataclass
class Part:
    error: str = ""
    partial: bool = False


def test_every_member_answered_is_a_plain_200():
    v = verdict([Part(), Part()], [], factor=2, assured=True, store_members=3, skipped=1)
    assert (v.status, v.complete, v.errors) == (200, True, "")
    assert v.headers == {"X-Oklog-Store-Members": "3", "X-Oklog-Nodes-Skipped": "1"}


def test_a_missing_member_makes_the_answer_partial_and_says_who():
    v = verdict([Part(), Part("boom")], [Absent("b", "boom")], factor=1, assured=True, store_members=2, skipped=0)
    assert (v.status, v.complete) == (206, False)
    assert v.headers["X-Oklog-Errors"] == "b: boom" == v.errors
    assert v.headers["X-Oklog-Complete"] == "false"


def test_replicas_cover_a_missing_member_only_when_replication_is_enforced():
    missing = [Absent("b", "dead")]
    v = verdict([Part()], missing, factor=2, assured=True, store_members=2, skipped=0)
    assert (v.status, v.headers["X-Oklog-Complete"]) == (200, "true")
    v = verdict([Part()], missing, factor=2, assured=False, store_members=2, skipped=0)
    assert (v.status, v.headers["X-Oklog-Complete"]) == (206, "false")


def test_no_member_answering_is_a_502():
    missing = [Absent("a", "x"), Absent("b", "y")]
    v = verdict([Part("x"), Part("y")], missing, factor=3, assured=True, store_members=2, skipped=0)
    assert v.status == 502 and not v.complete


def test_errors_header_is_one_safe_line():
    text = errors_header([Absent("a\r\nX-Evil: 1", "500 broke\r\n\x00"), Absent("b", "x" * 5000)])
    assert "\r" not in text and "\n" not in text and "\x00" not in text
    assert text.startswith("a X-Evil: 1: 500 broke; b: xxx") and len(text) <= 2000


def test_plan_tops_up_records_held_too_few_times():
    holders = {b"u1": [0], b"u2": [0, 1], b"u3": [2]}
    p = replicate_plan(holders, 3, 2)
    assert p.copies == {1: [b"u1"], 0: [b"u3"]}
    assert (p.records, p.under_replicated, p.short_of_members, p.copy_count) == (3, 2, 0, 2)


def test_plan_wants_no_more_copies_than_members():
    p = replicate_plan({b"u1": [0, 0], b"u2": [1]}, 2, 3)
    # u1 is held by member 0 only (a member's repeat counts once): one copy to 1
    assert p.copies == {1: [b"u1"], 0: [b"u2"]}
    p = replicate_plan({b"u1": [0, 1]}, 2, 3)
    assert not p.copies and p.short_of_members == 1 and p.under_replicated == 0


def test_plan_lets_the_caller_choose_among_members_lacking_a_record():
    p = replicate_plan({b"u1": [1]}, 4, 3, choose=lambda lacking, n: lacking[-n:])
    assert p.copies == {2: [b"u1"], 3: [b"u1"]}


def test_members_answering_in_part_are_missing_but_not_failed():
    # Every member lacks a quarantined file: each answered with what it can
    # read, so the answer is partial (206) with their records, never a 502.
    why = "1 quarantined segment(s) overlap the range"
    parts = [Part(why, True), Part(why, True), Part(why, True)]
    missing = [Absent(f"n{i}", why) for i in range(3)]
    v = verdict(parts, missing, factor=2, assured=True, store_members=3, skipped=0)
    assert (v.status, v.complete) == (206, False)
    # one member in part, replication 2 and assured: the others hold its records
    v = verdict([Part(why, True), Part(), Part()], missing[:1], factor=2, assured=True, store_members=3, skipped=0)
    assert (v.status, v.complete) == (200, True)
    # a member in part beside members that failed is still an answer
    v = verdict([Part(why, True), Part("refused"), Part("refused")], missing, factor=2, assured=True,
                store_members=3, skipped=0)
    assert v.status == 206
