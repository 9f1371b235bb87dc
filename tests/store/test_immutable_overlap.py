"""store.api.Immutable over bodies that overlap stored data: bodies of
node-stamped records from concurrent connections (each overlapping every recent
segment) are checked exactly; a replayed ingest segment is still stored once and a conflicting
body that overlaps stored data is still counted, its stored text kept."""

from __future__ import annotations

import random
import socket
import time

import httpx
import pytest
import trio
from conftest import wait_for

from oklog.fs import RealFS
from oklog.ingest.api import LocalIngest
from oklog.ingest.log import IngestLog
from oklog.records.record import ULIDSource, encode_ulid, ulid_ms
from oklog.store.api import Immutable, LocalStore
from oklog.store.consumer import Consumer
from oklog.store.log import StoreLog

CONNS = 8


def _interleaved_segments(rounds: int = 30, per: int = 40) -> list[bytes]:
    """Ingest segments as CONNS fast-port connections write them: each its own
    ULIDSource, all on one clock, so every segment spans the same time."""
    clock = [1_700_000_000_000]
    srcs = [ULIDSource(clock=lambda: clock[0]) for _ in range(CONNS)]
    parts: list[list[bytes]] = [[] for _ in range(CONNS)]
    for r in range(rounds):
        for c in range(CONNS):
            parts[c].extend(h + b"conn %d round %d\n" % (c, r) for h in srcs[c].headers(per))
            clock[0] += 1
    # Two segments per connection: a body from either half overlaps the other connections' segments.
    half = rounds * per // 2
    return [b"".join(p[:half]) for p in parts] + [b"".join(p[half:]) for p in parts]


def _stored(store: StoreLog) -> list[bytes]:
    return [ln for s in store.segments() for ln in store.records(s).splitlines(keepends=True)]


class _LostCommit(LocalIngest):
    """This node's ingest log, whose first commit of ``seg_id`` fails after
    the records were stored (a commit reply lost): the segment is consumed again."""

    def __init__(self, log: IngestLog, seg_id: str) -> None:
        super().__init__(log)
        self.seg_id = seg_id
        self.lost = 0

    async def commit(self, seg_id: str) -> None:
        if seg_id == self.seg_id and not self.lost:
            self.lost += 1
            raise OSError("commit reply lost")
        await super().commit(seg_id)


def test_replayed_segment_after_failed_commit_is_stored_once(tmp_path):
    ingest = IngestLog(RealFS(), str(tmp_path / "ingest"), pending_timeout=0.2)
    segs = _interleaved_segments()
    ids = [ingest.add_flushed(s) for s in segs]
    replayed = ids[CONNS + 3]  # a second-half segment: it overlaps what is stored when it comes back
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    imm = Immutable(store)
    src = _LostCommit(ingest, replayed)
    consumer = Consumer(lambda: [src], lambda: [LocalStore(store, immutable=imm)], 1, batch_size=1, batch_age=60)

    async def drain() -> None:
        for _ in range(200):
            while await consumer.cycle():
                pass
            if not ingest.stats()["segments"]["pending"]:
                return
            await trio.sleep(0.1)  # the segment whose commit failed times out back to flushed
        pytest.fail("ingest log did not drain")

    trio.run(drain)
    assert src.lost == 1 and consumer.stats.commits_failed == 1
    assert ingest.timeouts == 1  # consumed twice, then committed
    sent = [ln for s in segs for ln in s.splitlines(keepends=True)]
    stored = _stored(store)
    assert sorted(stored) == sorted(sent)  # every record exactly once
    assert imm.duplicates_dropped == segs[CONNS + 3].count(b"\n") and imm.conflicts == 0


def test_conflict_in_an_overlapping_body_is_counted(tmp_path):
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    imm = Immutable(store)
    segs = _interleaved_segments()
    for s in segs:
        imm.write(s)
    assert imm.duplicates_dropped == 0
    victim = segs[2].splitlines(keepends=True)[100]
    forged = victim[:27] + b"default forged text\n"
    # Fresh ULIDs around the forged one: the body's range overlaps every stored segment.
    ms = ulid_ms(victim[:26])
    fresh = [encode_ulid(ms + d, 7) + b" default fresh %d\n" % d for d in (-3, -1, 1, 2)]
    body = b"".join(sorted(fresh + [forged]))
    written, same, conflicts = imm.write(body)
    assert (same, conflicts) == (0, 1) and imm.conflicts == 1
    stored = _stored(store)
    assert victim in stored and forged not in stored
    assert all(f in stored for f in fresh)
    assert len(stored) == sum(s.count(b"\n") for s in segs) + len(fresh)
    # The same body again: all held, the forged record a conflict again, nothing written.
    assert imm.write(body) == ([], 4, 1)



def _send(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        s.recv(100)


def test_replicated_conflict_overlapping_stored_data_is_refused(node_factory):
    n = node_factory("n0", ["-ingest.segment-flush-age", "0.2s", "-store.segment-target-age", "0.2s"]).start()
    lines = [b"imfilter conn %d line %d\n" % (c, i) for c in range(4) for i in range(2000)]
    random.Random(1).shuffle(lines)
    for rnd in range(3):  # several consumer batches, each overlapping the ones before
        chunks = [b"".join(lines[rnd * 2000 + c * 500 : rnd * 2000 + (c + 1) * 500]) for c in range(4)]
        for ch in chunks:
            _send(n.ports["fast"], ch)
    frm = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    wait_for(lambda: n.query(q="imfilter", **{"from": frm}).content.count(b"\n") == 6000, 60, what="queryable")
    got = httpx.get(n.url + "/store/query", params={"q": "imfilter", "from": frm, "format": "raw"}, timeout=30)
    recs = got.content.splitlines(keepends=True)
    assert len(recs) == 6000 and recs[0][26:27] == b" "
    victim = sorted(recs)[3000]
    ms = ulid_ms(victim[:26])
    fresh = [encode_ulid(ms + d, 11) + b" default imfilter fresh %d\n" % d for d in (-2, 1)]
    body = b"".join(sorted(fresh + [victim.split(b" ", 1)[0] + b" default imfilter forged\n"]))
    r = httpx.post(n.url + "/store/replicate", content=body, timeout=30, auth=n.member_auth())
    assert r.status_code == 200, r.text
    assert r.headers["x-oklog-conflicts"] == "1" and r.headers["x-oklog-held"] == "0"
    r = httpx.post(n.url + "/store/replicate", content=body, timeout=30, auth=n.member_auth())
    assert r.headers["x-oklog-conflicts"] == "1" and r.headers["x-oklog-held"] == "2"
    out = n.query(q="imfilter", **{"from": frm}).content
    assert out.count(b"\n") == 6002 and b"forged" not in out and victim.split(b" ", 2)[2] in out
