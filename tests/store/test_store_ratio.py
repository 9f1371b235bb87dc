"""Store bytes on the loghub corpus, through a real node, against zstd -3."""

import httpx
import zstandard
from conftest import wait_for
from test_segfile import corpus_dir


def test_loghub_store_bytes_at_most_zstd3_of_the_raw_lines(node_factory):
    # Every line of every file, each ending in LF (most files lack a final LF,
    # so plain `cat` would join lines across files).
    raw = b"".join(d if d.endswith(b"\n") else d + b"\n" for d in (f.read_bytes() for f in sorted(corpus_dir().glob("*.log"))))
    n_lines = raw.count(b"\n")
    zstd3 = len(zstandard.ZstdCompressor(level=3).compress(raw))
    # Cold from the start (cold-age 0): the node recompresses settled
    # segments at the cold level as soon as it is idle.
    node = node_factory("n0", ["-store.cold-age", "0s", "-store.segment-target-age", "0.2s"]).start()
    node.send_fast(raw)

    def all_there() -> bool:
        r = node.query(**{"from": "2000-01-01T00:00:00Z"}, format="lines")
        return r.status_code == 200 and r.content.count(b"\n") == n_lines

    wait_for(all_there, timeout=60, what="every line queryable")

    def settled() -> dict | None:
        st = httpx.get(node.url + "/store/segments", timeout=10, auth=node.member_auth()).json()
        return None if st["compaction_pending"] else st

    wait_for(lambda: settled() is not None and settled() is not None, timeout=120, what="compaction settled")
    st = settled()
    assert st is not None
    got = node.query(**{"from": "2000-01-01T00:00:00Z"}, format="lines").content
    assert sorted(got.splitlines()) == sorted(raw.splitlines())  # nothing lost or changed
    store = st["file_bytes"]  # on disk ("bytes": the records, uncompressed)
    print(f"loghub: raw {len(raw)} B, zstd -3 {zstd3} B, store {store} B in {len(st['segments'])} segments: "
          f"{len(raw) / store:.2f}x smaller than raw, {store / zstd3:.3f}x zstd -3")
    assert store <= zstd3
