"""Compaction and retention on a real directory and in memory."""

import os
import random
import zlib

import pytest
import trio

from oklog.fs import MemFS, RealFS, join
from oklog.records.merge import merge_dedup
from oklog.records.record import ULID_LEN, ULIDSource, encode_ulid, stamp_lines
from oklog.store import compact as C
from oklog.store.compact import CompactStats, Maintenance, plan, run_job
from oklog.store.log import Segment, StoreLog, group_overlapping


@pytest.fixture(params=["real", "mem"])
def store(request, tmp_path):
    if request.param == "real":
        return StoreLog(RealFS(), str(tmp_path / "store"))
    return StoreLog(MemFS(), "data/store")


def make_segments(rnd, n_segs=6, per=300, dup_p=0.3):
    """Overlapping sorted segments; some records appear in several."""
    clock = iter(range(10_000, 10_000_000, 3)).__next__
    src = ULIDSource(clock)
    pool = []
    for _ in range(n_segs * per // 50):
        lines = [b"line %d %s" % (rnd.randrange(10**6), b"x" * rnd.randrange(80)) for _ in range(50)]
        pool += stamp_lines(lines, src.headers(50)).splitlines(keepends=True)
    segs = []
    for _ in range(n_segs):
        pick = sorted(rnd.sample(pool, per))
        segs.append(b"".join(pick))
    if dup_p:
        segs.append(segs[0])  # a whole replicated copy
    return segs


def all_records(store):
    out = []
    for s in store.segments():
        out += store.records(s).splitlines(keepends=True)
    return out


def check_invariants(store, want_set, target):
    segs = store.segments()
    assert all(len(g) == 1 for g in group_overlapping(segs)), "segments still overlap"
    recs = all_records(store)
    assert len(recs) == len(set(recs)), "duplicates remain"
    assert set(recs) == want_set
    for s in segs:
        data = store.records(s)
        lines = data.splitlines()
        assert lines == sorted(lines)
        assert data[:ULID_LEN].decode() == s.first
        assert lines[-1][:ULID_LEN].decode() == s.last


@pytest.mark.parametrize("seed", range(4))
def test_compaction_converges(store, seed):
    rnd = random.Random(seed)
    bodies = make_segments(rnd)
    want = set()
    for b in bodies:
        store.write(b)
        want |= set(b.splitlines(keepends=True))
    target = 20_000
    stats = CompactStats()
    for _ in range(100):
        jobs = plan(store.segments(), target)
        if not jobs:
            break
        run_job(store, jobs[0], target, stats)
    else:
        pytest.fail("compaction did not converge")
    check_invariants(store, want, target)
    assert stats.merges >= 1 and stats.duplicates_dropped_bytes > 0
    # Split to target: no segment is much larger than the target.
    assert max(s.size for s in store.segments()) < target + 4096


def test_small_sequential_segments_are_concatenated(store):
    src = ULIDSource(iter(range(1, 10**6)).__next__)
    for i in range(10):
        store.write(stamp_lines([b"r%d" % i], src.headers(1)))
    jobs = plan(store.segments(), 1 << 20)
    assert [j.kind for j in jobs] == ["concat"]
    run_job(store, jobs[0], 1 << 20, CompactStats())
    assert len(store.segments()) == 1
    assert plan(store.segments(), 1 << 20) == []


def test_pending_until_maintenance_has_nothing_left(store):
    """/store/segments reports this; rebalance waits for it before reading sizes."""
    m = Maintenance(store, 20_000, retain=10**12, purge=10**9, limiter=trio.CapacityLimiter(1))
    assert not m.pending()
    for b in make_segments(random.Random(7)):
        store.write(b)
    assert m.pending()
    steps = 0
    while m.pending():
        assert trio.run(m.step), "pending but a pass found nothing to do"
        steps += 1
        assert steps < 100
    assert not trio.run(m.step)
    assert all(len(g) == 1 for g in group_overlapping(store.segments()))


@pytest.mark.parametrize("crash_at", ["after_first_output", "before_remove", "mid_remove"])
def test_crash_at_each_step_loses_nothing(tmp_path, monkeypatch, crash_at):
    fs = RealFS()
    root = str(tmp_path / "store")
    store = StoreLog(fs, root)
    rnd = random.Random(1)
    want = set()
    for b in make_segments(rnd, n_segs=4, per=200):
        store.write(b)
        want |= set(b.splitlines(keepends=True))

    class Crash(Exception):
        pass

    calls = {"adopt": 0, "remove": 0}
    real_adopt, real_remove = StoreLog.adopt, StoreLog.remove

    def adopt(self, *a):
        seg = real_adopt(self, *a)
        calls["adopt"] += 1
        if crash_at == "after_first_output" and calls["adopt"] == 1:
            raise Crash
        return seg

    def remove(self, seg):
        calls["remove"] += 1
        if crash_at == "before_remove" or (crash_at == "mid_remove" and calls["remove"] == 2):
            raise Crash
        real_remove(self, seg)

    monkeypatch.setattr(StoreLog, "adopt", adopt)
    monkeypatch.setattr(StoreLog, "remove", remove)
    job = plan(store.segments(), 5_000)[0]
    with pytest.raises(Crash):
        run_job(store, job, 5_000, CompactStats())
    monkeypatch.undo()
    # "Restart": a new StoreLog over the same directory sees every record.
    store2 = StoreLog(fs, root)
    assert set(all_records(store2)) >= want
    assert not [n for n in fs.listdir(root) if n.endswith(".tmp")]
    # Queries deduplicate meanwhile; compaction then converges.
    merged = merge_dedup([store2.records(s) for s in store2.segments()])
    assert set(merged.splitlines(keepends=True)) == want
    stats = CompactStats()
    while jobs := plan(store2.segments(), 5_000):
        run_job(store2, jobs[0], 5_000, stats)
    check_invariants(store2, want, 5_000)


def test_retention_and_purge(store):

    now = 2_000_000.0  # seconds
    day = 86400

    def seg_at(seconds):
        ms = int(seconds * 1000)
        return encode_ulid(ms, 1) + b" default x\n"

    (old,) = store.write(seg_at(now - 8 * day))
    (edge,) = store.write(seg_at(now - 7 * day + 60))
    (new,) = store.write(seg_at(now - 10))
    m = Maintenance(store, 1 << 20, retain=7 * day, purge=day, limiter=trio.CapacityLimiter(1))
    m.retention(now)
    assert store.segments() == sorted([edge, new])
    trash = store.fs.listdir(m.trash_dir)
    assert trash == [f"{int(now * 1000)}-{old.name}"]
    m.retention(now + 30)
    assert m.stats.purged == 0 and m.stats.trash_segments == 1
    later = now + day + 1  # old is purged; edge has now expired and is trashed
    m.retention(later)
    assert m.stats.purged == 1
    assert store.fs.listdir(m.trash_dir) == [f"{int(later * 1000)}-{edge.name}"]
    assert store.segments() == [new]


def test_disk_cap_trashes_oldest_first(store):

    segs = [store.write(encode_ulid(1000 + i, 1) + b" default %d\n" % i)[0] for i in range(5)]
    m = Maintenance(store, 1 << 20, retain=10**12, purge=10**9, limiter=trio.CapacityLimiter(1))
    m.max_disk = sum(s.size for s in segs[3:])
    m.retention(2000.0)
    assert store.segments() == segs[3:]


def test_plan_bounds_fan_in():
    segs = [Segment(encode_ulid(1, i).decode(), encode_ulid(5, i).decode(), 10) for i in range(40)]
    jobs = plan(segs, 1000, max_inputs=16)
    assert len(jobs) == 1 and len(jobs[0].inputs) == 16
    assert C.PIECE > 0 and join("a", "b") == "a/b"


def test_query_planned_before_compaction_reads_consistently(tmp_path):
    from oklog.query.engine import Matcher, Query
    from oklog.query.params import parse_params
    from oklog.query.plan import plan_query, run_unit

    store = StoreLog(RealFS(), str(tmp_path / "store"))
    rnd = random.Random(5)
    want = set()
    for b in make_segments(rnd, n_segs=5, per=300):
        store.write(b)
        want |= set(b.splitlines(keepends=True))
    qplan = plan_query(store, parse_params({}))
    stats = CompactStats()
    while jobs := plan(store.segments(), 4_000):
        run_job(store, jobs[0], 4_000, stats)  # renames over and removes planned files
    assert stats.runs > 0
    m = Matcher(Query(b""))
    got = b"".join(run_unit(qplan, m, u) for u in qplan.units)
    qplan.close()
    recs = got.splitlines(keepends=True)
    assert len(recs) == len(set(recs)) and set(recs) == want


def test_big_segment_is_split_and_a_huge_record_is_left_alone(store):
    src = ULIDSource(iter(range(1, 10**6)).__next__)
    store.write(stamp_lines([b"r%04d" % i + b"z" * 100 for i in range(200)], src.headers(200)))
    jobs = plan(store.segments(), 2_000)
    assert [j.kind for j in jobs] == ["split"]
    out = run_job(store, jobs[0], 2_000, CompactStats())
    assert len(out) > 5 and all(s.size < 2_000 + 200 for s in out)
    assert plan(store.segments(), 2_000) == [] or all(j.kind == "concat" for j in plan(store.segments(), 2_000))
    (big,) = store.write(stamp_lines([b"x" * 10_000], src.headers(1)))
    jobs = [j for j in plan(store.segments(), 2_000) if big in j.inputs]
    assert [j.kind for j in jobs] == ["split"]
    out = run_job(store, jobs[0], 2_000, CompactStats())
    assert len(out) == 1
    assert not [j for j in plan(store.segments(), 2_000, unsplittable={out[0].name}) if out[0] in j.inputs]


def test_check_and_salvage_damaged_segments(store):
    from oklog.store.log import check_segment, salvage

    src = ULIDSource(iter(range(1, 10**6)).__next__)
    good = stamp_lines([b"rec %d" % i for i in range(50)], src.headers(50))
    assert check_segment(good) is None
    recs = good.splitlines(keepends=True)
    flipped = bytearray(good)
    # A damaged ULID sorts last: its time part's last character (the clock's
    # first millisecond, "...1") becomes Z. (A character of the random part
    # could be Z already: this test failed 1 run in 32 that way.)
    assert recs[20][9:10] == b"1"
    flipped[good.index(recs[20]) + 9] = ord("Z")
    assert check_segment(bytes(flipped)) == "records out of order or duplicated"
    kept, dropped = salvage(bytes(flipped))
    assert dropped == 1 and kept == b"".join(recs[:20] + recs[21:])
    torn = good[:-5]
    assert check_segment(torn).startswith("truncated")
    kept, dropped = salvage(torn)
    assert kept == b"".join(recs[:49]) and dropped == 1
    # Damaged before this node loaded it (e.g. found at start-up): quarantined,
    # reported, and the good records come back as a segment.
    (seg,) = store.write(good)
    store.fs.write_atomic(store.path(seg), torn)
    reloaded = StoreLog(store.fs, store.root)
    assert reloaded.scrub(reloaded.segments()[0]) is False
    assert reloaded.stats()["quarantined"] and reloaded.salvaged_records == 49
    assert all_records(reloaded) == recs[:49]


def test_payload_flipped_at_rest_is_caught_by_the_checksum(store):
    """A byte of a line changed while the node was down: every record still
    parses, only the CRC-32 in the file's name tells. Quarantined, not served.
    Plain segments (the format before compression; a flip in a compressed one
    fails its block's checksum: test_segfile)."""
    from oklog.query.params import parse_params
    from oklog.query.plan import plan_query

    store.level = 0
    src = ULIDSource(iter(range(1, 10**6)).__next__)
    (seg,) = store.write(stamp_lines([b"rec %d" % i for i in range(50)], src.headers(50)))
    (other,) = store.write(stamp_lines([b"other %d" % i for i in range(5)], src.headers(5, b"t2")))
    data = store.fs.read(store.path(seg))
    store.fs.write_atomic(store.path(seg), data.replace(b"rec 7\n", b"rXc 7\n"))
    reloaded = StoreLog(store.fs, store.root)  # a restart: sizes and stamps look fine
    assert {s.name for s in reloaded.unvalidated()} == {seg.name, other.name}
    assert reloaded.scrub(seg) is False and reloaded.scrub(other) is True
    assert "checksum mismatch" in reloaded.stats()["quarantined"][0]
    assert reloaded.segments() == [other] and reloaded.salvaged_records == 0
    assert store.fs.exists(join(reloaded.quarantine_dir, seg.name))  # kept for an operator
    plan = plan_query(reloaded, parse_params({}))
    try:
        assert plan.segments == 1
    finally:
        plan.close()
    # As the only copy (replication factor 1) the records come back, the
    # damaged one included, and the report says so.
    lone = StoreLog(store.fs, store.root)
    lone.sole_copy = True
    lone.level = 0
    (other2,) = lone.write(stamp_lines([b"lone %d" % i for i in range(4)], src.headers(4, b"t3")))
    flipped = lone.fs.read(lone.path(other2)).replace(b"lone 2", b"lXne 2")
    lone.fs.write_atomic(lone.path(other2), flipped)
    lone = StoreLog(lone.fs, lone.root)
    lone.sole_copy = True
    lone.level = 0
    (again,) = [s for s in lone.segments() if s.topic == "t3"]
    assert lone.scrub(again) is False
    assert "only copy" in lone.stats()["quarantined"][-1] and lone.salvaged_records == 4
    (back,) = [s for s in lone.segments() if s.topic == "t3"]
    assert back.name != again.name and lone.fs.read(lone.path(back)) == flipped
    reloaded = StoreLog(lone.fs, lone.root)
    # Compaction outputs carry their checksum too.
    for i in range(3):
        reloaded.write(stamp_lines([b"c%d" % i], src.headers(1, b"t2")))
    while jobs := plan_compact(reloaded):
        run_job(reloaded, jobs[0], 1 << 20, CompactStats())
    (merged,) = [s for s in reloaded.segments() if s.topic == "t2"]
    assert merged.crc == f"{zlib.crc32(reloaded.fs.read(reloaded.path(merged))):08x}"
    assert reloaded.scrub(merged) is True


def plan_compact(store):
    return plan(store.segments(), 1 << 20)


def test_segment_modified_while_running_is_never_served(store):
    from oklog.query.params import parse_params
    from oklog.query.plan import plan_query

    src = ULIDSource(iter(range(1, 10**6)).__next__)
    (seg,) = store.write(stamp_lines([b"rec %d" % i for i in range(50)], src.headers(50)))
    data = store.fs.read(store.path(seg))
    # A payload flip (in a compressed segment "rec 7" is not in the bytes as
    # such: one byte of the middle changes; same bytes rewritten are not a change).
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x04
    assert bytes(flipped) != data
    store.fs.write_atomic(store.path(seg), bytes(flipped))
    plan = plan_query(store, parse_params({}))
    assert plan.units == []  # not served
    plan.close()
    assert store.scrub(seg) is False
    assert "modified on disk" in store.stats()["quarantined"][0]
    assert store.segments() == []


# -- topics kept apart -------------------------------------------------------------


def topic_body(rnd, src, topics, n=400):
    lines = [b"line %d %s" % (rnd.randrange(10**6), b"x" * rnd.randrange(60)) for _ in range(n)]
    return b"".join(
        stamp_lines([ln], src.headers(1, rnd.choice(topics))) for ln in lines
    )


def test_write_keeps_topics_apart(store):
    rnd = random.Random(3)
    src = ULIDSource(iter(range(10_000, 10**9, 7)).__next__)
    body = topic_body(rnd, src, [b"web", b"db", b"default"])
    segs = store.write(body)
    assert sorted(s.topic for s in segs) == ["db", "default", "web"]
    for s in segs:
        assert s.name.endswith(f".{s.topic}~{zlib.crc32(store.fs.read(store.path(s))):08x}.seg")
        data = store.records(s)
        assert {r.split(b" ")[1] for r in data.splitlines()} == {s.topic.encode()}
        assert data.splitlines() == sorted(data.splitlines())
    assert sorted(all_records(store)) == sorted(body.splitlines(keepends=True))
    assert store.write(body) == segs  # idempotent
    # Names survive a restart.
    again = StoreLog(store.fs, store.root)
    assert again.segments() == store.segments()
    # One topic: one segment named by it. Too many topics, or one that is not a
    # valid topic name: one segment of any topics.
    (one,) = store.write(topic_body(rnd, src, [b"solo"], 10))
    assert one.topic == "solo"
    from oklog.store.log import MAX_TOPIC_SPLIT

    many = [b"t%d" % i for i in range(MAX_TOPIC_SPLIT + 1)]
    lines = [b"m %d" % i for i in range(len(many))]
    mixed = b"".join(stamp_lines([ln], src.headers(1, t)) for ln, t in zip(lines, many, strict=True))
    (m,) = store.write(mixed)
    assert m.topic == "" and m.name.count(".") == 1 and "~" in m.name
    weird = encode_ulid(10**9, 1) + b" ../x line\n"
    (w,) = store.write(weird)
    assert w.topic == "" and "/" not in w.name


def test_compaction_never_mixes_topics_and_a_topic_query_reads_only_its_segments(store):
    from oklog.query.engine import Matcher
    from oklog.query.params import parse_params
    from oklog.query.plan import plan_query, run_unit

    rnd = random.Random(4)
    src = ULIDSource(iter(range(10_000, 10**9, 3)).__next__)
    want = set()
    pool = topic_body(rnd, src, [b"web", b"db", b"cron"], 1500).splitlines(keepends=True)
    # Bodies drawn from one time span (like batches replicated from several
    # consumers): every topic's segments overlap; one body arrives twice.
    bodies = [b"".join(sorted(rnd.sample(pool, 400))) for _ in range(5)]
    bodies.append(bodies[1])
    for b in bodies:
        store.write(b)
        want |= set(b.splitlines(keepends=True))
    stats = CompactStats()
    for _ in range(200):
        jobs = plan(store.segments(), 8_000)
        if not jobs:
            break
        run_job(store, jobs[0], 8_000, stats)
    else:
        pytest.fail("compaction did not converge")
    assert stats.merges >= 1
    recs = all_records(store)
    assert len(recs) == len(set(recs)) and set(recs) == want
    by_topic: dict[str, list] = {}
    for s in store.segments():
        data = store.records(s)
        assert {r.split(b" ")[1] for r in data.splitlines()} == {s.topic.encode()}
        by_topic.setdefault(s.topic, []).append(s)
    for segs in by_topic.values():
        assert all(len(g) == 1 for g in group_overlapping(segs)), "segments of one topic still overlap"
    # A topic query plans (and would scan) that topic's bytes only.
    for topic, segs in by_topic.items():
        qp = plan_query(store, parse_params({"topic": [topic]}))
        try:
            assert qp.segments == len(segs) and qp.bytes == sum(s.raw_size for s in segs)
            out = b"".join(run_unit(qp, Matcher(qp_query(topic)), u) for u in qp.units)
        finally:
            qp.close()
        assert sorted(out.splitlines(keepends=True)) == sorted(r for r in want if r.split(b" ")[1] == topic.encode())
    full = plan_query(store, parse_params({}))
    full.close()
    assert full.bytes == sum(s.raw_size for s in store.segments())
    # A segment of any topics (more than MAX_TOPIC_SPLIT in one body) is still
    # read by a topic query, and filtered: only that topic's records come back.
    from oklog.store.log import MAX_TOPIC_SPLIT

    names = [b"web"] + [b"x%d" % i for i in range(MAX_TOPIC_SPLIT)]
    mixed = b"".join(stamp_lines([b"mixed %d" % i], src.headers(1, t)) for i, t in enumerate(names))
    (m,) = store.write(mixed)
    assert m.topic == ""
    qp = plan_query(store, parse_params({"topic": ["web"]}))
    try:
        out = b"".join(run_unit(qp, Matcher(qp_query("web")), u) for u in qp.units)
    finally:
        qp.close()
    web = sorted(r for r in want if r.split(b" ")[1] == b"web") + [mixed.splitlines(keepends=True)[0]]
    assert sorted(out.splitlines(keepends=True)) == sorted(web)


def qp_query(topic: str):
    from oklog.query.engine import Query

    return Query(b"", False, topic.encode())


def test_overlapping_topic_segments_are_scanned_in_bounded_units(store, monkeypatch):
    """A quiet topic's segment spans the busy topic's whole time range, so
    segments overlap for good: the query still cuts them into bounded units in
    ULID order, and copies of a record (same ULID) meet in one unit."""
    from oklog.query import plan as Q
    from oklog.query.engine import Matcher, Query
    from oklog.query.params import parse_params
    from oklog.query.plan import plan_query
    from oklog.records import segfile

    monkeypatch.setattr(Q, "UNIT_BYTES", 4096)
    monkeypatch.setattr(segfile, "BLOCK_SIZE", 1024)
    rnd = random.Random(6)
    src = ULIDSource(iter(range(10_000, 10**9, 5)).__next__)
    want: set[bytes] = set()
    for _ in range(12):
        body = topic_body(rnd, src, [b"busy"] * 20 + [b"quiet"], 300)
        store.write(body)
        want |= set(body.splitlines(keepends=True))
    while jobs := plan(store.segments(), 60_000):
        run_job(store, jobs[0], 60_000, CompactStats())
    assert [s.topic for s in store.segments()].count("quiet") == 1  # one segment over the whole span
    store.write(b"".join(sorted(rnd.sample(sorted(want), 200))))  # copies overlapping everything
    qp = plan_query(store, parse_params({}))
    try:
        assert len(qp.units) > 10
        for u in qp.units:
            assert all(hi - lo <= 4096 + 2048 for _, lo, hi in u.parts), u.parts
            # compressed parts: the blocks starting in the unit, and one before
            assert all(sum(b.rawlen for b in blks) <= 4096 + 3 * 1024 for _, blks in u.blocks), u.blocks
        out = b"".join(Q.run_unit(qp, Matcher(Query(b"")), u) for u in qp.units)
    finally:
        qp.close()
    recs = out.splitlines(keepends=True)
    assert recs == sorted(want)  # every record once, in ULID order



def test_a_block_damaged_during_a_concatenation_ends_the_job_not_the_node(tmp_path, monkeypatch):
    """A concatenation copies compressed blocks as they are, checking each
    once. A block damaged after the job checked its inputs (a byte flipped in
    place, seen through the mapping) makes the job give up: the output is
    removed, the inputs stay and are marked for the scrubber, and nothing is
    raised to the node (it used to end the node with zstd's error)."""
    store = StoreLog(RealFS(), str(tmp_path / "store"))
    src = ULIDSource(iter(range(1, 10**6)).__next__)
    rnd = random.Random(5)
    for i in range(4):
        lines = [b"seg %d rec %d %s" % (i, j, b"%x" % rnd.getrandbits(64)) for j in range(300)]
        store.write(stamp_lines(lines, src.headers(len(lines))))
    (job,) = plan(store.segments(), 1 << 20)
    assert job.kind == "concat"
    job.level = 1  # the inputs' blocks are copied as they are
    victim = job.inputs[1]
    path = store.path(victim)
    blk = store.index(victim).blocks[0]
    data = bytearray(open(path, "rb").read())
    data[blk.offset + blk.clen // 2] ^= 0x10
    monkeypatch.setattr(C, "_changed_inputs", lambda *_: [])  # flipped after the job's check
    with open(path, "r+b") as f:
        f.write(data)
    suspects = []
    monkeypatch.setattr(store, "suspect", suspects.append)
    stats = CompactStats()
    assert run_job(store, job, 1 << 20, stats) == []
    assert victim in suspects and stats.last_error
    assert sorted(s.name for s in store.segments()) == sorted(s.name for s in job.inputs)
    assert not [n for n in os.listdir(store.root) if n.endswith(".tmp")]


def test_a_range_read_of_a_damaged_block_marks_the_segment_for_the_scrubber(tmp_path):
    """Replication's range reads decompress blocks too: one found damaged is
    an error for that request, and the segment is re-checked (then
    quarantined and salvaged) instead of failing every request until the
    next scrub."""
    from oklog.store.log import DamagedSegment

    store = StoreLog(RealFS(), str(tmp_path / "store"))
    src = ULIDSource(iter(range(1, 10**6)).__next__)
    (seg,) = store.write(stamp_lines([b"rec %d %x" % (i, i * 7919) for i in range(500)], src.headers(500)))
    store.validated.add(seg.name)
    blk = store.index(seg).blocks[0]
    path = store.path(seg)
    data = bytearray(open(path, "rb").read())
    data[blk.offset + blk.clen // 2] ^= 0x10
    with open(path, "r+b") as f:
        f.write(data)
    with pytest.raises(DamagedSegment, match="damaged block"):
        store.read_range(seg, b"0" * 26, b"~")
    assert seg.name not in store.validated
    store.validated.add(seg.name)
    with pytest.raises(DamagedSegment, match=seg.name):
        store.records(seg)
    assert seg.name not in store.validated
