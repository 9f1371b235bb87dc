"""The query result spool: every record kept on disk, read back by record number."""

from __future__ import annotations

import random

from oklog.tui.spool import ResultSpool


def fill(spool: ResultSpool, recs: list[bytes], seed: int = 1) -> None:
    rnd = random.Random(seed)
    i = 0
    while i < len(recs):
        k = rnd.randint(1, 37)
        chunk = recs[i : i + k]
        spool.add(b"".join(r + b"\n" for r in chunk), len(chunk))
        i += k


def test_any_range_of_records_reads_back_exactly():
    recs = [b"record %d" % i for i in range(1000)]
    s = ResultSpool()
    fill(s, recs)
    assert s.kept == s.records == 1000 and not s.truncated
    for a, b in [(0, 10), (5, 6), (990, 1000), (0, 1000), (333, 777), (999, 2000), (-5, 3), (7, 7)]:
        assert s.read(a, b) == recs[max(0, a) : min(b, 1000)], (a, b)
    assert b"".join(s.buffers()) == b"".join(r + b"\n" for r in recs)
    s.close()


def test_a_save_started_before_the_spool_closes_reads_to_the_end():
    recs = [b"r%d" % i for i in range(5000)]
    s = ResultSpool()
    fill(s, recs)
    size = s.size
    fill(s, [b"later"] * 10)  # arrived after the dialog opened: not saved
    blocks = s.buffers(size)
    s.close()  # a new query replaced the result
    assert b"".join(blocks) == b"".join(r + b"\n" for r in recs)


def test_past_the_limit_records_are_counted_not_kept():
    s = ResultSpool(limit=100)
    for _ in range(20):
        s.add(b"0123456789\n", 1)
    assert s.kept == 9 and s.records == 20 and s.truncated  # 9 * 11 bytes fit in 100
    assert s.read(0, 100) == [b"0123456789"] * 9
    s.close()
