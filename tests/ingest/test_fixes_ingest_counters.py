"""IngestLog's counters, updated from writer threads, are updated under its lock."""

import threading

from oklog.fs import RealFS
from oklog.ingest.log import IngestLog


def test_note_written_waits_for_the_log_lock(tmp_path) -> None:
    # CPython's GIL rarely shows a lost `+=`, so check the guard itself: while
    # another thread holds the lock, a writer's update must wait for it.
    ilog = IngestLog(RealFS(), str(tmp_path / "ingest"))
    done = threading.Event()

    def writer() -> None:
        ilog.note_written(10, 2)
        done.set()

    with ilog._lock:
        t = threading.Thread(target=writer)
        t.start()
        assert not done.wait(0.2), "note_written updated the counters without the lock"
        assert ilog.records_in == 0
    t.join(10)
    assert done.is_set()
    assert (ilog.records_in, ilog.bytes_in) == (2, 10)
