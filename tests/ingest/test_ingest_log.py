"""The ingest segment state machine, on a real directory and in memory."""

import pytest

from oklog.fs import MemFS, RealFS, join
from oklog.ingest.log import IngestLog


@pytest.fixture(params=["real", "mem"])
def fsroot(request, tmp_path):
    if request.param == "real":
        return RealFS(), str(tmp_path / "ingest")
    return MemFS(), "data/ingest"


def states(fs, root):
    return sorted(n.rpartition(".")[2] for n in fs.listdir(root))


def test_lifecycle(fsroot):
    fs, root = fsroot
    log = IngestLog(fs, root)
    seg = log.new_segment()
    seg.write(b"A default one\n", 1)
    assert states(fs, root) == ["active"]
    assert log.next() is None  # active segments are not handed out
    assert seg.flush()
    assert states(fs, root) == ["flushed"]
    seg_id = log.next()
    assert seg_id == seg.id
    assert states(fs, root) == ["pending"]
    assert log.read(seg_id) == b"A default one\n"
    assert log.next() is None
    log.failed(seg_id)
    assert states(fs, root) == ["flushed"]
    seg_id = log.next()
    log.commit(seg_id)
    assert states(fs, root) == []
    with pytest.raises(KeyError):
        log.commit(seg_id)


def test_pending_says_whether_a_segment_is_handed_out_and_unsettled(fsroot, monkeypatch):
    fs, root = fsroot
    log = IngestLog(fs, root, pending_timeout=10)
    segs = [log.new_segment() for _ in range(2)]
    for s in segs:
        s.write(b"x\n", 1)
        s.flush()
    assert not log.pending(segs[0].id) and not log.pending("nope")  # flushed, unknown
    import oklog.ingest.log as mod

    now = [1000.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: now[0])
    a, b = log.next(), log.next()
    assert log.pending(a) and log.pending(b)
    log.commit(a)
    assert not log.pending(a)  # committed: gone
    now[0] += 11
    assert not log.pending(b)  # timed out: flushed again, offered to the next consumer
    assert log.next() == b and log.pending(b)
    log.failed(b)
    assert not log.pending(b)


def test_empty_segment_is_dropped(fsroot):
    fs, root = fsroot
    log = IngestLog(fs, root)
    assert not log.new_segment().flush()
    assert fs.listdir(root) == []


def test_next_returns_oldest_first(fsroot):
    fs, root = fsroot
    log = IngestLog(fs, root)
    segs = [log.new_segment() for _ in range(3)]
    for s in reversed(segs):
        s.write(b"x\n", 1)
        s.flush()
    assert [log.next() for _ in range(3)] == [s.id for s in segs]


def test_pending_timeout(fsroot, monkeypatch):
    fs, root = fsroot
    log = IngestLog(fs, root, pending_timeout=10)
    seg = log.new_segment()
    seg.write(b"x\n", 1)
    seg.flush()
    import oklog.ingest.log as mod

    now = [1000.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: now[0])
    assert log.next() == seg.id
    now[0] += 5
    assert log.expire_pending() == 0
    now[0] += 6
    assert log.expire_pending() == 1
    assert states(fs, root) == ["flushed"]
    assert log.next() == seg.id  # consumable again


def test_recovery_reactivates_and_cuts_torn_line(fsroot):
    fs, root = fsroot
    log = IngestLog(fs, root)
    a = log.new_segment()
    a.write(b"rec one\nrec two\ntorn rec", 3)  # crash mid-write: no flush
    b = log.new_segment()
    b.write(b"b1\n", 1)
    b.flush()
    assert log.next() == b.id  # pending at crash time
    c = log.new_segment()
    c.write(b"partial only", 1)  # nothing complete: dropped

    log2 = IngestLog(fs, root)
    report = log2.recover()
    assert report.reactivated == 2
    assert report.torn_bytes == len(b"torn rec") + len(b"partial only")
    assert states(fs, root) == ["flushed", "flushed"]
    ids = [log2.next(), log2.next()]
    assert sorted(ids) == sorted([a.id, b.id])
    assert log2.read(a.id) == b"rec one\nrec two\n"
    assert log2.read(b.id) == b"b1\n"


def test_recovery_ignores_foreign_files(fsroot):
    fs, root = fsroot
    IngestLog(fs, root)
    f = fs.create(join(root, "notes.txt"))
    f.write(b"hi")
    log = IngestLog(fs, root)
    log.recover()
    assert log.next() is None
    assert "notes.txt" in fs.listdir(root)


def test_stats(fsroot):
    fs, root = fsroot
    log = IngestLog(fs, root)
    s = log.new_segment()
    s.write(b"a\nb\n", 2)
    st = log.stats()
    assert st["segments"]["active"] == 1
    assert st["records_in"] == 2
    s.flush()
    st = log.stats()
    assert st["segments"]["flushed"] == 1 and st["bytes"]["flushed"] == 4


def test_add_flushed_commit_waiter_fires_when_a_woken_consumer_commits_at_once(fsroot):
    # The consumer is woken by the flush and may commit the segment before
    # add_flushed returns (a bulk frame's acknowledgement then never came).
    fs, root = fsroot
    log = IngestLog(fs, root)
    committed = []

    def consume_now() -> None:
        seg_id = log.next()
        log.read(seg_id)
        log.commit(seg_id)

    log.on_flushed = consume_now
    seg_id = log.add_flushed(b"01HF7YAT0100000000000000A0 t x\n", lambda: committed.append(1))
    assert committed == [1] and seg_id not in log.commit_waiters


def test_a_bulk_segment_whose_write_fails_leaves_nothing_behind(tmp_path):
    """A full disk (here: RLIMIT_FSIZE 0, as `make chaos` does to a node) fails
    the write of a bulk frame's segment: the frame is not acknowledged, and
    no ``.active`` segment may stay behind (it was never flushed, never
    consumed, and the node looked busy with ingest work forever)."""
    import errno
    import resource

    fs, root = RealFS(), str(tmp_path / "ingest")
    log = IngestLog(fs, root)
    fired = []
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, old[1]))
    try:
        with pytest.raises(OSError) as e:
            log.add_flushed(b"a\nb\n", on_commit=lambda: fired.append(1))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
    assert e.value.errno == errno.EFBIG
    assert fs.listdir(root) == []
    assert log.stats()["segments"] == {"active": 0, "flushed": 0, "pending": 0}
    assert log.commit_waiters == {} and not fired
    seg_id = log.add_flushed(b"c\n")  # the disk has room again
    assert states(fs, root) == ["flushed"] and log.next() == seg_id
