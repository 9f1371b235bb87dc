"""Hostile gossip datagrams against real nodes (subprocesses on 127.0.0.1).

Each datagram is one an attacker on the network could send: a member whose meta
has the wrong types, NaN, incarnations at and beyond every bound, forged "left"
and "alive elsewhere" rumours about a real member. The nodes keep serving, the
bad updates are counted, and a forged rumour about a member is refuted by it.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from conftest import free_port, wait_for
from support import cluster_state, node_id

from oklog.cluster.swim import HEARSAY_MAX

pytestmark = pytest.mark.timeout(120)

# Plain gossip (no cluster key): these datagrams must reach the decoder to test it.
FAST = ["-ingest.segment-flush-age", "0.3s", "-store.segment-target-age", "0.3s",
        "-cluster.suspicion-timeout", "2s", "-insecure"]


def send(n, obj_or_bytes) -> None:
    data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", n.ports["cluster"]))


def bcast(*rows, sender: str = "evil", kind: str = "bcast") -> dict:
    return {"v": 1, "t": kind, "s": sender, "i": 0, "u": list(rows)}


def members(n) -> dict[str, dict]:
    return {m["id"]: m for m in cluster_state(n)["members"]}


def assert_serving(n, marker: str) -> None:
    assert n.proc.poll() is None, n.log_path.read_text()[-3000:]
    st = cluster_state(n)
    assert all("error" not in m for m in st["members"]), st["members"]
    metrics = httpx.get(n.url + "/metrics", timeout=5).text
    for family in ("oklog_cluster_members", "oklog_node_info", "oklog_uptime_seconds",
                   "oklog_gossip_bad_updates_total", "oklog_consumer_batches_total"):
        assert family in metrics, family
    assert "oklog_state_error 0.0" in metrics
    n.send_fast(f"{marker}\n".encode())
    wait_for(lambda: marker.encode() in n.query(q=marker).content, 20, what=f"record {marker}")


@pytest.fixture
def pair(node_factory):
    a = node_factory("a", FAST).start()
    b = node_factory("b", FAST + ["-peer", node_id(a)]).start()
    wait_for(lambda: all(len(cluster_state(n)["members"]) == 2 for n in (a, b)), 20, what="two members")
    return a, b


def mallory(meta: dict, inc: int = 0, mid: str = "mallory") -> list:
    """An alive ingest+store member nobody runs, announced with ``meta``."""
    return [mid, "ingeststore", "127.0.0.1", free_port(), "alive", inc, meta]


def test_bad_member_updates_are_dropped_counted_and_the_nodes_keep_serving(pair):
    a, b = pair
    api = f"127.0.0.1:{free_port()}"
    bad = [
        mallory({"api_addr": [api]}, mid="m-list"),  # crashed the consumer (TypeError)
        mallory({"api_addr": api, "started": "x"}, mid="m-started"),  # /cluster/state 500
        mallory({"api_addr": api, "started": 1e308}, mid="m-huge"),
        mallory({"api_addr": {"host": "127.0.0.1"}}, mid="m-dict"),
        mallory({"api_addr": "127.0.0.1:1\r\nX-Evil: 1"}, mid="m-crlf"),
        mallory({"api_addr": api}, inc=2**63, mid="m-inc"),
        mallory({"api_addr": api, "nested": {"a": [1]}}, mid="m-nested"),
    ]
    for row in bad:
        send(a, bcast(row))
        send(a, bcast(row, kind="join"))
    # NaN and Infinity are not JSON, but Python's reader takes them unless told not to.
    nan_row = json.dumps(mallory({"api_addr": api})).replace('"api_addr"', '"load": NaN, "api_addr"')
    inf_row = json.dumps(mallory({"api_addr": api})).replace('"api_addr"', '"started": Infinity, "api_addr"')
    for text in (nan_row, inf_row):
        send(a, f'{{"v":1,"t":"bcast","s":"evil","i":0,"u":[{text}]}}'.encode())
    # A forged "left" at 2^63 about a real member: beyond every bound, refused.
    send(a, bcast([node_id(b), "ingeststore", "127.0.0.1", b.ports["cluster"], "left", 2**63, {}]))
    wait_for(lambda: cluster_state(a)["pipeline"]["gossip"]["malformed"] >= 2, 10, what="malformed counted")
    wait_for(lambda: cluster_state(a)["pipeline"]["gossip"]["bad_updates"] >= 2 * len(bad) + 1, 10, what="bad updates counted")
    time.sleep(1.0)  # a probe round or two: anything accepted would have spread by now
    for n in (a, b):
        view = members(n)
        assert set(view) == {node_id(a), node_id(b)}, view
        assert all(m["state"] == "alive" for m in view.values()), view
    assert_serving(a, "after-bad-gossip-a")
    assert_serving(b, "after-bad-gossip-b")
    metrics = httpx.get(a.url + "/metrics", timeout=5).text
    assert "oklog_gossip_bad_updates_total" in metrics
    counts = cluster_state(a)["pipeline"]["errors"]
    assert counts == {"consumer": 0, "coordinator": 0, "stream": 0, "gossip": 0, "state": 0}


def test_forged_rumours_about_a_member_are_refuted(pair):
    a, b = pair
    bid, bport = node_id(b), b.ports["cluster"]
    true_api = members(a)[bid]["api_addr"]
    elsewhere = f"127.0.0.1:{free_port()}"
    # "alive, at other addresses", just below the cap: would redirect b's replication.
    send(a, bcast([bid, "ingeststore", "127.0.0.1", free_port(), "alive", HEARSAY_MAX - 5,
                   {"api_addr": elsewhere, "started": 1.0}]))
    wait_for(lambda: members(a)[bid]["incarnation"] > HEARSAY_MAX - 5
             and members(a)[bid]["api_addr"] == true_api
             and members(a)[bid]["gossip_addr"] == bid, 15, what="alive-elsewhere refuted")
    # "left" at the highest incarnation a second-hand rumour may carry.
    send(a, bcast([bid, "ingeststore", "127.0.0.1", bport, "left", HEARSAY_MAX, {}]))
    wait_for(lambda: members(a)[bid]["state"] == "alive"
             and members(a)[bid]["incarnation"] == HEARSAY_MAX + 1, 15, what="left refuted")
    # Above the cap, second-hand: refused and counted, nothing changes.
    send(a, bcast([bid, "ingeststore", "127.0.0.1", bport, "left", HEARSAY_MAX + 7, {}]))
    wait_for(lambda: cluster_state(a)["pipeline"]["gossip"]["refused_updates"] >= 1, 10, what="refused counted")
    time.sleep(1.0)
    assert members(a)[bid]["state"] == "alive"
    assert members(b)[node_id(a)]["state"] == "alive"
    assert cluster_state(b)["pipeline"]["gossip"]["refutations"] >= 2
    # Replication still reaches b at its true address.
    a.send_fast(b"refuted-and-replicated\n")
    wait_for(lambda: b"refuted-and-replicated" in b.query(q="refuted-and-replicated").content, 20, what="record")
    assert_serving(b, "after-forgery-b")


def test_members_table_fields(pair):
    a, b = pair
    for i in range(2):  # two load-figure (meta) updates: records_in changes
        b.send_fast(f"meta-change-{i}\n".encode())
        time.sleep(5.5)
    row = members(a)[node_id(b)]
    now = time.time()
    assert row["incarnation"] == 0, row  # meta updates do not bump it
    assert row["meta_version"] >= 2, row
    assert row["last_heard"] is not None and now - row["last_heard"] < 3, row
    assert row["state_since"] < now - 9, row  # joined before the sleep, no change since
    assert row["uptime_seconds"] > 9, row
    b.kill()
    wait_for(lambda: members(a)[node_id(b)]["state"] == "dead", 20, what="b dead")
    dead = members(a)[node_id(b)]
    time.sleep(2.0)
    again = members(a)[node_id(b)]
    assert again["uptime_seconds"] == dead["uptime_seconds"]  # stopped at the last word heard
    assert again["last_heard"] == dead["last_heard"] < dead["state_since"]
