"""Replication sends the compressed bytes: real nodes, real HTTP.

Store members advertise ``replicate_segfile``; a consumer compresses a batch
once and sends the segment file to members that advertise it, plain records
to the others. Nodes of two earlier versions (built from git history: before
segment files, and before block CRCs) and a new one replicate to each other."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, NodeProc, corpus_lines, wait_for
from test_cluster import FAST, settled

from oklog.records import segfile

# Nodes of versions before, built from git history, and the index version each advertises.
OLD_COMMITS = {
    "82b4c0d": None,  # the last commit before replication sent segment files: none
    "dbd66e4": 1,  # the last commit before block CRCs (index version 2): version 1
}
RF2 = ["-store.segment-replication-factor", "2"]


def store_state(n: NodeProc) -> dict:
    return httpx.get(n.url + "/cluster/state", timeout=5).json()


def stored(n: NodeProc) -> list[bytes]:
    """Every record in the node's own store, as its files hold them (copies
    included), once compaction has nothing left to do."""
    wait_for(lambda: not httpx.get(n.url + "/store/segments", timeout=5, auth=n.member_auth()).json()["compaction_pending"],
             timeout=60, what="compaction idle")
    for _ in range(5):
        try:
            out: list[bytes] = []
            for p in sorted((n.workdir / "store").glob("*.seg")):
                out += segfile.decode(p.read_bytes()).split(b"\n")[:-1]
            return out
        except FileNotFoundError:
            continue  # compacted under the listing
    raise AssertionError("store kept changing")


def local_ulids(n: NodeProc) -> set[bytes]:
    data = httpx.get(n.url + "/store/_query", timeout=60, auth=n.member_auth()).content
    return {r[:26] for r in data.split(b"\n")[:-1]}


def lines(count: int, tag: str) -> list[bytes]:
    src = corpus_lines()
    return [b"%s %d %s" % (tag.encode(), i, src[(i * 7919) % len(src)].rstrip(b"\r")) for i in range(count)]


def meta_of(seen_by: NodeProc, node: NodeProc) -> dict:
    for m in store_state(seen_by)["members"]:
        if m["gossip_addr"] == f"127.0.0.1:{node.ports['cluster']}":
            return m["meta"]
    return {}


def test_two_stores_get_the_batch_compressed_once(node_factory):
    ing = node_factory("ing")
    ing.args = FAST + RF2 + ["-role", "ingest"]
    ing.start()
    peer = ["-peer", f"127.0.0.1:{ing.ports['cluster']}"]
    stores = [node_factory(f"s{i}", FAST + RF2 + ["-role", "store", *peer]).start() for i in range(2)]
    nodes = [ing, *stores]
    wait_for(lambda: all(len(store_state(n)["members"]) == 3 for n in nodes), what="3 members")
    wait_for(lambda: meta_of(stores[0], stores[1]).get("replicate_segfile") == segfile.INDEX_VERSION
             and meta_of(stores[1], stores[0]).get("replicate_segfile") == segfile.INDEX_VERSION,
             what="stores advertise that they take segment files")
    sent = lines(30_000, "two")
    ing.send_fast(b"\n".join(sent) + b"\n")
    wait_for(lambda: settled(nodes) and all(len(local_ulids(s)) == len(sent) for s in stores),
             timeout=60, what="every record on both stores")

    for s in stores:
        recs = stored(s)
        assert len(recs) == len(sent) == len({r[:26] for r in recs})  # exactly once on each
        assert sorted(r.split(b" ", 2)[2] for r in recs) == sorted(sent)
        for p in (s.workdir / "store").glob("*.seg"):
            assert segfile.is_compressed(p.read_bytes()[:4]), p.name
        # Kept as received (and as its own consumer encoded it): compaction had nothing to compress.
        assert store_state(s)["pipeline"]["compaction"]["recompressions"] == 0
    cons = [store_state(s)["pipeline"]["consumer"] for s in stores]
    records_bytes = sum(c["replicated_bytes"] for c in cons)
    wire = sum(c["replicated_wire_bytes"] for c in cons)
    assert records_bytes >= sum(len(x) + 1 for x in sent)  # every batch went to the other store once
    assert 0 < wire < records_bytes / 3, (wire, records_bytes)
    metrics = httpx.get(stores[0].url + "/metrics", timeout=5).text
    assert f"oklog_consumer_replicated_wire_bytes_total {float(cons[0]['replicated_wire_bytes'])}" in metrics


# -- a node of the version before, from git history --------------------------------


@pytest.fixture(scope="module", params=sorted(OLD_COMMITS))
def old_tree(request, tmp_path_factory) -> tuple[str, Path]:
    """The ``oklog`` package as of an old commit, with its C helper built as setup.py does."""
    commit = request.param
    if shutil.which("git") is None or subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True
    ).returncode != 0:
        pytest.skip(f"commit {commit} is not in this checkout's history")
    d = tmp_path_factory.mktemp("oklog-old")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "oklog"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(d)], input=archive.stdout, check=True)
    subprocess.run(
        [sys.executable, "-c", "from setuptools import setup, Extension; setup(ext_modules=[Extension("
         "'oklog._fast', ['oklog/_fast.c'], extra_compile_args=['-O2'])])", "build_ext", "--inplace", "-q"],
        cwd=d, check=True, capture_output=True, timeout=300,
    )
    assert list((d / "oklog").glob("_fast*.so"))
    return commit, d


@dataclass
class OldNode(NodeProc):
    tree: Path = Path()

    def command(self) -> list[str]:
        return ["env", f"PYTHONPATH={self.tree}", *super().command()]


def test_old_and_new_nodes_replicate_to_each_other(node_factory, old_tree, tmp_path):
    """Each side sends the other plain records (neither takes the other's
    index version) and every record ends up on both, exactly once."""
    commit, tree = old_tree
    advertised = OLD_COMMITS[commit]
    new = node_factory("new", FAST + RF2).start()
    old = OldNode(tmp_path / "old", FAST + RF2 + ["-peer", f"127.0.0.1:{new.ports['cluster']}"], tree=tree)
    try:
        old.start()
        nodes = [new, old]
        wait_for(lambda: all(len(store_state(n)["members"]) == 2 for n in nodes), what="2 members")
        if advertised is None:  # code before compressed replication: no such figure; the new key passes through
            assert "replicated_wire_bytes" not in store_state(old)["pipeline"]["consumer"]
        wait_for(lambda: meta_of(old, new).get("replicate_segfile") == segfile.INDEX_VERSION, what="new meta seen by old")
        assert meta_of(new, old).get("replicate_segfile") == advertised != segfile.INDEX_VERSION
        # Either consumer may take either node's ingest segments; a node's
        # consumer is woken by its own flushes, so rounds of writes to both
        # soon have each node's consumer replicating to the other.
        every: list[bytes] = []
        for k in range(20):
            to_new, to_old = lines(1_000, f"to-new-{k}"), lines(1_000, f"to-old-{k}")
            new.send_fast(b"\n".join(to_new) + b"\n")
            old.send_fast(b"\n".join(to_old) + b"\n")
            every += to_new + to_old
            wait_for(lambda: settled(nodes), timeout=30, what="ingest drained")
            if k >= 2 and all(store_state(n)["pipeline"]["store"]["replications_received"] for n in nodes):
                break
        every.sort()
        wait_for(lambda: all(len(local_ulids(n)) == len(every) for n in nodes), timeout=60, what="every record on both nodes")
        for n in nodes:
            recs = stored(n)
            assert len(recs) == len(every) == len({r[:26] for r in recs}), n.workdir.name
            assert sorted(r.split(b" ", 2)[2] for r in recs) == every
            assert store_state(n)["pipeline"]["store"]["replications_received"] > 0
        c = store_state(new)["pipeline"]["consumer"]
        assert c["replicated_bytes"] > 0
        assert c["replicated_wire_bytes"] == c["replicated_bytes"]  # plain records to the old node
        if advertised is not None:
            c = store_state(old)["pipeline"]["consumer"]
            assert c["replicated_bytes"] > 0
            assert c["replicated_wire_bytes"] == c["replicated_bytes"]  # and plain from it
    finally:
        old.kill()
