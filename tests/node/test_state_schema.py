"""The node-state document has one definition (oklog/node/state.py): real nodes
of every role send exactly its fields, and docs/state.md is generated from it."""

from pathlib import Path

import httpx
from conftest import wait_for

from oklog.node.state import schema_markdown, unknown_keys

DOCS = Path(__file__).resolve().parents[2] / "docs" / "state.md"


def test_docs_are_generated_from_the_definition():
    assert DOCS.read_text() == schema_markdown(), "run: python -m oklog.node.state > docs/state.md"


def test_unknown_keys_finds_strays_and_gaps():
    doc = {"self": "a", "role": "store", "uptime_seconds": 1.0, "members": [{"id": "x"}], "pipeline": {}}
    found = unknown_keys(doc)
    assert ".replication_factor: missing from the document" in found
    assert ".members[0].state: missing from the document" in found
    assert ".pipeline.time: missing from the document" in found
    assert unknown_keys(doc | {"extra": 1})[0] == ".extra: not in NodeState"


def test_every_role_sends_the_defined_document(node_factory):
    seed = node_factory("seed", ["-role", "ingeststore"]).start()
    peer = ["-peer", f"127.0.0.1:{seed.ports['cluster']}"]
    nodes = [seed] + [node_factory(r, ["-role", r, *peer]).start() for r in ("ingest", "store")]

    def everyone_sees_three():
        return all(len(httpx.get(n.url + "/cluster/state", timeout=5).json()["members"]) == 3 for n in nodes)

    wait_for(everyone_sees_three, timeout=30, what="three members")
    for n in nodes:
        st = httpx.get(n.url + "/cluster/state", timeout=5).json()
        assert unknown_keys(st) == [], (st["role"], unknown_keys(st))
        assert ("ingest" in st["pipeline"]) == (st["role"] != "store")
        assert ("store" in st["pipeline"]) == (st["role"] != "ingest")
