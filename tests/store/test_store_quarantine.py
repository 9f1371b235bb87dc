"""A store segment's stamp is not its content, and a quarantined segment's
records are missing until the operator says they are restored.

- A file whose (size, mtime) changed but whose bytes still match the CRC-32 in
  its name (``touch``, a backup tool restoring times) is re-stamped and served.
- While a file in ``quarantine/`` overlaps a query's range, this node's answers
  say they lack records (206 / complete=false naming the file) until the file
  is moved or deleted from there (after ``oklog repair``)."""

from __future__ import annotations

import os
import time

import httpx
from conftest import wait_for
from test_segfile import body

from oklog.fs import RealFS
from oklog.query.params import parse_params
from oklog.query.plan import plan_query
from oklog.store.log import StoreLog


def _touch(path: str) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000_000))


def _plan(store: StoreLog, **params: str):
    plan = plan_query(store, parse_params({k: [v] for k, v in params.items()}))
    plan.close()
    return plan


def _flip(path: str, offset: int) -> None:
    raw = bytearray(open(path, "rb").read())
    raw[offset] ^= 0x40
    with open(path, "r+b") as f:  # in place: the stamp changes, the name does not
        f.write(raw)


def test_a_touched_segment_is_restamped_and_served(tmp_path):
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    store.write(body(300, 1))
    (seg,) = store.segments()
    _touch(store.path(seg))
    assert not store.modified(seg)
    assert store.segments() == [seg]
    plan = _plan(store)
    assert plan.unreadable == 0 and plan.unserved() is None and plan.segments == 1
    assert store.scrub(seg) and store.segments() == [seg] and not store.quarantined


def test_a_touched_plain_segment_is_kept_too(tmp_path):
    from oklog.records import segfile

    store = StoreLog(RealFS(), str(tmp_path / "store"))
    store.level = segfile.RAW_LEVEL
    store.write(body(300, 2))
    (seg,) = store.segments()
    _touch(store.path(seg))
    assert not store.modified(seg)
    assert store.scrub(seg) and not store.quarantined


def test_changed_bytes_are_still_caught_after_a_touch(tmp_path):
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    store.write(body(300, 3))
    (seg,) = store.segments()
    _flip(store.path(seg), seg.size // 2)
    assert store.modified(seg)
    assert _plan(store).unreadable == 1


def test_a_quarantined_segment_overlapping_the_range_is_named(tmp_path):
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    store.write(body(300, 4))
    store.write(body(300, 5))
    a, b = store.segments()
    store.quarantine(a.name, "test")
    plan = _plan(store)
    assert plan.quarantined == [a.name] and plan.unreadable == 1
    assert a.name in (plan.unserved() or "")
    # A range after the quarantined file's: whole.
    after = _plan(store, **{"from": b.first, "to": b.last})
    assert after.quarantined == [] and after.unserved() is None
    # Another topic's quarantined file does not touch a query for one topic.
    assert _plan(store, topic="other").quarantined == []
    assert _plan(store, topic="default").quarantined == [a.name]
    # A restart still knows; the operator removing the file ends it.
    store = StoreLog(RealFS(), store.root)
    assert _plan(store).quarantined == [a.name]
    os.remove(os.path.join(store.quarantine_dir, a.name))
    assert _plan(store).unserved() is None


# -- a real node -------------------------------------------------------------------


def _records(n) -> int:
    r = n.query()
    return r.text.count("\n") if r.status_code == 200 else -1


def _hits(n) -> httpx.Response:
    return httpx.get(n.url + "/store/hits", timeout=30)


def _segment_files(n) -> list[str]:
    root = n.workdir / "store"
    return sorted(str(root / f) for f in os.listdir(root) if f.endswith(".seg"))


def test_node_touch_keeps_every_record_and_corruption_is_never_a_short_200(node_factory):
    n = node_factory(args=["-ingest.segment-flush-age", "0.2s", "-store.segment-target-age", "0.2s"]).start()
    n.send_fast(b"".join(b"first batch %d\n" % i for i in range(100)))
    wait_for(lambda: _records(n) == 100, what="first 100 records")
    n.send_fast(b"".join(b"second batch %d\n" % i for i in range(100)))
    wait_for(lambda: _records(n) == 200, what="200 records")
    files = _segment_files(n)
    assert files
    _touch(files[0])
    for _ in range(3):
        r = n.query()
        assert r.status_code == 200 and r.text.count("\n") == 200, (r.status_code, r.headers.get("x-oklog-errors"), _segment_files(n))
        h = _hits(n)
        assert h.status_code == 200 and h.json()["total"] == 200 and h.json()["complete"] is True, h.text
    time.sleep(1.5)  # the scrubber's pass (it would quarantine a file it distrusts)
    assert _records(n) == 200
    assert not os.listdir(n.workdir / "store" / "quarantine") if (n.workdir / "store" / "quarantine").exists() else True

    # A byte changed at rest: never a 200 that lacks records.
    victim = _segment_files(n)[0]
    _flip(victim, os.path.getsize(victim) // 2)
    name = os.path.basename(victim)
    qdir = n.workdir / "store" / "quarantine"

    def honest() -> bool:
        r = n.query()
        if r.status_code == 200:
            assert r.text.count("\n") == 200, "a 200 missing records"
            return False
        assert r.status_code == 206, r.status_code
        h = _hits(n)
        if h.status_code == 200:
            assert h.json()["total"] == 200 and h.json()["complete"] is True, "a 200 missing records"
            return False
        # While the segment is distrusted but not yet quarantined: 502 (no
        # member answered whole); once quarantined, 206 with the rest counted.
        assert h.status_code in (206, 502), h.status_code
        quarantined = qdir.exists() and name in os.listdir(qdir)
        if not (quarantined and name in r.headers.get("X-Oklog-Errors", "")):
            return False
        assert h.status_code == 206, h.text
        body = h.json()
        assert body["complete"] is False and name in body["errors"] and body["total"] <= 200  # a damaged block's records are gone
        return True

    wait_for(honest, what="the quarantined segment named")
    t = httpx.get(n.url + "/store/topics", timeout=30)
    assert t.status_code == 206 and t.json()["complete"] is False and name in t.json()["errors"], t.text

    # The operator restores (here: accepts) the range by moving the file out.
    os.rename(qdir / name, n.workdir / name)
    r = n.query()
    assert r.status_code == 200, r.headers
    h = _hits(n)
    assert h.status_code == 200 and h.json()["complete"] is True
