"""A query asks only the store members whose advertised oldest record is not
after its range; members that may hold records and cannot answer still make
the answer partial. Real ``oklog run`` nodes on 127.0.0.1."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from conftest import NodeProc, wait_for

from oklog.records.record import make_headers, now_ms

FAST = ["-ingest.segment-flush-age", "0.3s", "-cluster.suspicion-timeout", "2s",
        "-store.segment-replication-factor", "1"]
HOUR = 3_600_000


def cluster(node_factory, n: int) -> list[NodeProc]:
    nodes: list[NodeProc] = []
    for i in range(n):
        node = node_factory(f"n{i}")
        seed = [] if i == 0 else ["-peer", f"127.0.0.1:{nodes[0].ports['cluster']}"]
        node.args = FAST + seed
        nodes.append(node.start())
    wait_for(lambda: all(len(members(x)) == n for x in nodes), what=f"{n} members")
    return nodes


def members(node: NodeProc) -> dict[str, dict]:
    st = httpx.get(node.url + "/cluster/state", timeout=5).json()
    return {m["id"]: m for m in st["members"]}


def records(ms: int, tag: str, n: int, first: int = 0) -> bytes:
    heads = make_headers(ms, first, n, b"default")
    return b"".join(h + f"{tag} {i}".encode() + b"\n" for i, h in enumerate(heads))


def put(node: NodeProc, body: bytes) -> None:
    r = httpx.post(node.url + "/store/replicate", content=body, timeout=30, auth=node.member_auth())
    assert r.status_code < 300, r.text


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def advertised(seen_by: NodeProc, node: NodeProc) -> int | None:
    for m in members(seen_by).values():
        if m["gossip_addr"] == f"127.0.0.1:{node.ports['cluster']}":
            return m["meta"].get("store_lo_ms")
    return None


def query(node: NodeProc, lo: int, hi: int) -> httpx.Response:
    return node.query(**{"from": iso(lo), "to": iso(hi)})


def lines(r: httpx.Response) -> list[str]:
    return sorted(r.text.splitlines())


def test_queries_skip_members_with_nothing_in_range(node_factory):
    a, b, c = cluster(node_factory, 3)
    now = now_ms()
    old = now - 3 * HOUR
    # a and b hold old and recent records, c only recent ones (it joined later).
    put(a, records(old, "old-a", 50) + records(now - 30_000, "new-a", 50))
    put(b, records(old + 1, "old-b", 50) + records(now - 30_000 + 1, "new-b", 50))
    put(c, records(now - 20_000, "new-c", 50))
    wait_for(lambda: advertised(a, c) == now - 20_000 and advertised(a, b) == old + 1,
             timeout=30, what="the oldest records advertised in gossip")

    # The old range: c is not asked, and the answer is complete.
    r = query(a, old - 60_000, old + 60_000)
    assert r.status_code == 200, r.headers.get("X-Oklog-Errors")
    assert r.headers["X-Oklog-Nodes-Queried"] == "2"
    assert r.headers["X-Oklog-Nodes-Skipped"] == "1"
    assert r.headers["X-Oklog-Error-Count"] == "0"
    got = lines(r)
    assert len(got) == 100 and all(" old-" in x for x in got)
    # The same through the hits fan-out (which `oklog topics` uses too).
    h = httpx.get(a.url + "/store/hits", params={"from": iso(old - 60_000), "to": iso(old + 60_000)}, timeout=30)
    assert h.status_code == 200 and h.json()["total"] == 100
    assert h.headers["X-Oklog-Nodes-Skipped"] == "1" and h.headers["X-Oklog-Nodes-Queried"] == "2"

    # A range before anyone's oldest record: nobody is asked, nothing is missing.
    r = query(a, old - 10 * HOUR, old - HOUR)
    assert r.status_code == 200 and r.text == ""
    assert r.headers["X-Oklog-Nodes-Queried"] == "0" and r.headers["X-Oklog-Nodes-Skipped"] == "3"
    h = httpx.get(a.url + "/store/hits", params={"from": iso(old - 10 * HOUR), "to": iso(old - HOUR)}, timeout=30)
    assert h.status_code == 200 and h.json()["total"] == 0 and h.json()["complete"] is True

    # The last minute: everyone may hold it, everyone is asked.
    r = query(a, now - 60_000, now + 1000)
    assert r.status_code == 200
    assert r.headers["X-Oklog-Nodes-Queried"] == "3" and r.headers["X-Oklog-Nodes-Skipped"] == "0"
    assert len(lines(r)) == 150

    # c is written records older than it advertised (a backfill): it says so
    # in gossip, and the old range asks it from then on.
    put(c, records(old + 2, "old-c", 10))
    wait_for(lambda: advertised(a, c) == old + 2, timeout=10, what="c's lowered oldest record in gossip")
    r = query(a, old - 60_000, old + 60_000)
    assert r.status_code == 200
    assert r.headers["X-Oklog-Nodes-Queried"] == "3" and r.headers["X-Oklog-Nodes-Skipped"] == "0"
    assert len(lines(r)) == 110
    stats = httpx.get(a.url + "/cluster/state", timeout=5).json()["pipeline"]["queries"]
    assert stats["members_skipped"] >= 2


def test_a_dead_member_is_missing_only_for_ranges_it_may_hold(node_factory):
    a, b, c = cluster(node_factory, 3)
    now = now_ms()
    old = now - 3 * HOUR
    put(a, records(old, "old-a", 20))
    put(b, records(old + 1, "old-b", 20) + records(now - 30_000, "new-b", 20))
    put(c, records(now - 20_000, "new-c", 20))
    wait_for(lambda: advertised(a, c) == now - 20_000 and advertised(a, b) == old + 1,
             timeout=30, what="the oldest records advertised in gossip")

    c.kill()
    wait_for(lambda: any(m["state"] == "dead" for m in members(a).values()), timeout=30, what="c dead")
    # c advertised nothing older than 20 s ago: the old range is complete without it.
    r = query(a, old - 60_000, old + 60_000)
    assert r.status_code == 200, r.headers.get("X-Oklog-Errors")
    assert r.headers["X-Oklog-Nodes-Skipped"] == "1" and "X-Oklog-Errors" not in r.headers
    assert len(lines(r)) == 40
    # ... but it may hold the last minute: that answer is partial and says why.
    r = query(a, now - 60_000, now + 1000)
    assert r.status_code == 206
    assert r.headers["X-Oklog-Complete"] == "false" and "dead" in r.headers["X-Oklog-Errors"]
    assert len(lines(r)) == 20

    # b holds old records and dies: the old range is partial too.
    b.kill()
    wait_for(lambda: sum(m["state"] == "dead" for m in members(a).values()) == 2, timeout=30, what="b dead")
    r = query(a, old - 60_000, old + 60_000)
    assert r.status_code == 206, r.headers
    assert r.headers["X-Oklog-Nodes-Skipped"] == "1"  # c, still outside the range
    assert len(lines(r)) == 20
