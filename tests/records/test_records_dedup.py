"""The ULID dedup window of cluster streams (oklog.records.dedup), on its own clock."""

from oklog.records.dedup import DedupWindow, drop_seen


def rec(i: int, line: str = "x") -> bytes:
    return b"%026d t %s\n" % (i, line.encode())


def test_drop_seen_keeps_first_copy_and_grows_the_set() -> None:
    seen = {b"%026d" % 1}
    out, fresh = drop_seen(rec(1) + rec(2, "a") + rec(2, "b") + rec(3), seen)
    assert out == rec(2, "a") + rec(3)
    assert fresh == {b"%026d" % 2, b"%026d" % 3}
    assert seen == {b"%026d" % i for i in (1, 2, 3)}
    assert drop_seen(rec(1), seen) == (b"", set())


def test_window_drops_copies_seen_within_it() -> None:
    d = DedupWindow(3.0)
    assert d.filter(rec(1) + rec(2), now=10.0) == rec(1) + rec(2)
    # A replica's copy a second later is dropped; a new record passes.
    assert d.filter(rec(2) + rec(3), now=11.0) == rec(3)
    assert d.filter(rec(1), now=12.0) == b""
    assert len(d) == 3


def test_window_drops_copies_inside_one_batch() -> None:
    d = DedupWindow(3.0)
    assert d.filter(rec(5, "a") + rec(5, "b") + rec(6), now=0.0) == rec(5, "a") + rec(6)
    assert d.filter(rec(6), now=1.0) == b""


def test_window_forgets_after_its_span() -> None:
    d = DedupWindow(3.0)
    d.filter(rec(1), now=0.0)
    assert d.filter(rec(1), now=3.0) == b""  # still inside (3 s is not more than 3 s)
    assert d.filter(rec(1), now=7.5) == rec(1)  # both batches older than 3 s: forgotten


def test_window_is_bounded_in_count() -> None:
    d = DedupWindow(3600.0, limit=4)
    for i in range(10):
        d.filter(rec(i), now=float(i))
    assert len(d) <= 5  # the oldest are forgotten early, not kept for the whole window
    assert d.filter(rec(0), now=11.0) == rec(0)
    assert d.filter(rec(9), now=11.0) == b""


def test_zero_window_keeps_everything() -> None:
    d = DedupWindow(0.0)
    assert d.filter(rec(1) + rec(1), now=0.0) == rec(1) + rec(1)
    assert len(d) == 0
