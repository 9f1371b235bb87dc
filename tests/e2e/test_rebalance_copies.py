"""oklog rebalance leaves every record exactly replication-factor times, counted on disk.

Three real nodes, RF 2. Records are first spread over all three (each consumer
batch to a random pair, so a store segment mixes records whose other copy is on
different members), then one node is down while more arrive (they go to the
other two only): that node is now the smallest. Rebalance must move records to
it without giving any record a third copy or leaving one with a single copy.
"""

import io
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import OKLOG, wait_for
from test_cluster import FAST, node_id, settled, states

RF = 2
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SEGMENT_ARGS = ["-store.segment-target-size", "512KiB", "-store.consume-batch-size", "16KiB"]


def segment_records(path: Path) -> bytes:
    """A store segment's records: plain files as they are; zstd frames (the
    compressed format: blocks as frames, an index in a skippable frame)
    decompressed, skippable frames ignored."""
    data = path.read_bytes()
    if not data.startswith(ZSTD_MAGIC):
        return data
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()


def copies_on_disk(nodes) -> Counter:
    """How many times each ULID is held across all nodes' live segment files
    (trash/ and quarantine/ are not served), once compaction is idle."""
    for n in nodes:
        wait_for(lambda n=n: not httpx.get(n.url + "/store/segments", timeout=5, auth=n.member_auth()).json()["compaction_pending"],
                 timeout=30, what="compaction idle")
    for _ in range(5):
        counts: Counter = Counter()
        try:
            for n in nodes:
                for p in (n.workdir / "store").glob("*.seg"):
                    counts.update(rec[:26] for rec in segment_records(p).split(b"\n")[:-1])
            return counts
        except FileNotFoundError:
            time.sleep(0.3)  # compacted between listing and reading
    raise AssertionError("segment files kept changing")


def test_segment_records_reads_zstd_frames_and_skips_skippable_ones(tmp_path):
    import struct

    import zstandard

    recs = [b"01ARZ3NDEKTSV4RRFFQ69G5FA%d t line %d\n" % (i, i) for i in range(10)]
    c = zstandard.ZstdCompressor()
    blob = c.compress(b"".join(recs[:5])) + c.compress(b"".join(recs[5:]))
    blob += struct.pack("<II", 0x184D2A5E, 8) + b"OKLI\x01\x03\x00\x00"
    (tmp_path / "a.seg").write_bytes(blob)
    (tmp_path / "b.seg").write_bytes(b"".join(recs))
    assert segment_records(tmp_path / "a.seg") == b"".join(recs)
    assert segment_records(tmp_path / "b.seg") == b"".join(recs)
    from oklog.cli.repair import segment_records as tool_reader

    assert tool_reader(blob) == b"".join(recs)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_rebalance_leaves_every_record_exactly_rf_times(node_factory):
    nodes = []
    for i in range(3):
        n = node_factory(f"n{i}")
        seed = [] if i == 0 else ["-peer", f"127.0.0.1:{nodes[0].ports['cluster']}"]
        n.args = FAST + SEGMENT_ARGS + ["-store.segment-replication-factor", str(RF)] + seed
        nodes.append(n.start())
    wait_for(lambda: all(len(states(n)) == 3 for n in nodes), what="3 members")
    total = 0
    for k in range(20):  # many small batches, each to a random pair of members
        nodes[k % 3].send_fast(b"".join(b"early %d %s\n" % (total + i, b"y" * 100) for i in range(300)))
        total += 300
        time.sleep(0.4)
    wait_for(lambda: settled(nodes), timeout=30, what="ingest drained")
    small = nodes[2]
    small.kill()
    wait_for(lambda: all(states(n)[node_id(small)][0] == "dead" for n in nodes[:2]), timeout=30, what="dead")
    for k in range(4):  # to the other two only
        nodes[k % 2].send_fast(b"".join(b"late %d %s\n" % (total + i, b"y" * 100) for i in range(2000)))
        total += 2000
    wait_for(lambda: settled(nodes[:2]), timeout=30, what="ingest drained")
    small.start()
    wait_for(lambda: all(len(states(n)) == 3 and all(s == "alive" for s, _ in states(n).values()) for n in nodes),
             what="all alive")

    before = copies_on_disk(nodes)
    assert len(before) == total and set(before.values()) == {RF}
    sizes = [httpx.get(n.url + "/store/segments", timeout=10, auth=n.member_auth()).json()["bytes"] for n in nodes]
    assert max(sizes) > 1.5 * min(sizes), sizes  # there is something to move

    # repair finds nothing to do here and says so, with progress ending at 100%.
    r = subprocess.run(OKLOG + ["repair", "-store", nodes[0].api, "-cluster.key", nodes[0].key_path, "-from", "1h"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{total} records examined, 0 under-replicated, 0 copies made (0 B)" in r.stdout.decode(), r.stdout
    pcts = [int(ln.split("%")[0].rsplit(" ", 1)[-1]) for ln in r.stderr.decode().splitlines() if "%" in ln]
    assert pcts and pcts == sorted(pcts) and pcts[-1] == 100, r.stderr

    r = subprocess.run(OKLOG + ["rebalance", "-store", nodes[0].api, "-cluster.key", nodes[0].key_path], capture_output=True, timeout=240)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == 0, out + err
    moved = int(out.split("moved ", 1)[1].split(" ", 1)[0])
    assert moved >= 1, out

    after = copies_on_disk(nodes)
    assert len(after) == total
    wrong = {u: c for u, c in after.items() if c != RF}
    assert not wrong, f"{len(wrong)} records not held exactly {RF} times: {Counter(wrong.values())}\n{out}"

    # Honest report: human sizes, a reason on every skip, progress only forward.
    assert "B)" in out and "bytes" not in out, out
    skipped = int(out.split("skipped ", 1)[1].split(",", 1)[0])
    reasons = [ln for ln in out.splitlines() if ln.strip().startswith("skipped ")]
    assert len(reasons) == skipped and all(": " in ln for ln in reasons), out
    pcts = [int(ln.split("%")[0].rsplit(" ", 1)[-1]) for ln in err.splitlines()
            if ln.startswith("rebalance:") and "%" in ln]
    assert pcts and pcts == sorted(pcts) and pcts[-1] == 100, err
    assert "Traceback" not in err
