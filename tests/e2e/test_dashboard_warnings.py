"""Warnings describe the present, with real nodes: a dead ingest member's failed
gathers are named as such (not "replication failing"), and the warning clears once
the member is back, well before the events would have aged out of the window."""

from __future__ import annotations

import time

import httpx
import pytest
from conftest import wait_for

from oklog.node.health import RECENT
from oklog.tui.model import parse_state, warnings

# Probes every 3 s: a killed member stays "alive" to the others for a few seconds,
# long enough that the consumer (polling every 0.25 s) surely tries to read from it.
FAST = ["-ingest.segment-flush-age", "0.3s", "-cluster.suspicion-timeout", "2s",
        "-cluster.probe-interval", "3s"]


def state(node) -> dict:
    return httpx.get(node.url + "/cluster/state", timeout=5).json()


def node_warnings(node) -> list[dict]:
    return state(node)["pipeline"]["warnings"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_warning_names_a_dead_ingest_member_and_clears_when_it_is_back(node_factory):
    roles = ["ingeststore", "ingest", "store"]
    nodes = [node_factory(f"n{i}") for i in range(3)]
    seed = ["-peer", f"127.0.0.1:{nodes[0].ports['cluster']}"]
    for i, (n, role) in enumerate(zip(nodes, roles, strict=True)):
        n.args = FAST + ["-role", role, "-store.segment-replication-factor", "2"] + (seed if i else [])
        n.start()
    a, b, _c = nodes
    b_id = f"127.0.0.1:{b.ports['cluster']}"
    wait_for(lambda: len(state(a)["members"]) == 3, 20, what="cluster formed")
    # The consumer starts after a grace of 3 probe intervals + 1 s (gossip settling).
    wait_for(lambda: state(a)["uptime_seconds"] > 3 * 3 + 2, 30, what="a's consumer running")
    b.send_fast(b"".join(b"before %d\n" % i for i in range(100)))
    wait_for(lambda: node_warnings(a) == [], 20, what="no warnings on a settled cluster")

    b.kill()
    seen: list[dict] = []

    def b_dead() -> bool:
        st = state(a)
        seen.extend(st["pipeline"]["warnings"])
        return {m["id"]: m["state"] for m in st["members"]}[b_id] == "dead"

    wait_for(b_dead, 30, interval=0.05, what="b dead")
    about_b = [w for w in seen if w["subject"] == b_id]
    assert about_b, seen  # it was tried while still thought alive, and that failed
    # Named as what it is: reading from (or, if it died mid-batch, committing to)
    # an ingest member; never replication.
    kinds = {w["kind"] for w in about_b}
    assert "gather" in kinds and kinds <= {"gather", "commit"}, about_b
    assert all("ingest member" in w["text"] for w in about_b)
    assert not any("replication" in w["text"] for w in seen), seen
    now = {w["kind"] for w in node_warnings(a)}  # current: b was not heard from since
    assert "gather" in now and now <= {"gather", "commit"}
    dash = [al.text for al in warnings(parse_state(state(a)), {}) if al.node == b_id]
    assert any(t.startswith("dead:") and "wait on its disk" in t for t in dash), dash
    assert not any("copies" in t for t in dash)  # an ingest-only member holds no store data

    b.start()
    back = time.monotonic()
    wait_for(lambda: node_warnings(a) == [], 30, what="warnings clear once b answers")
    assert time.monotonic() - back < RECENT  # cleared by b answering, not by the window
    wait_for(lambda: warnings(parse_state(state(a)), {}) == [], 20, what="dashboard clear")
