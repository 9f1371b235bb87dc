"""Counts and histograms of real nodes, against plain Python over the records
the same nodes return; on replicated clusters a record counts once."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest
from conftest import OKLOG, NodeProc, sample_lines, wait_for
from support import ref_ms

FAST = ["-ingest.segment-flush-age", "0.3s", "-cluster.suspicion-timeout", "2s"]


def cluster(node_factory, n: int, factor: int) -> list[NodeProc]:
    nodes: list[NodeProc] = []
    for i in range(n):
        node = node_factory(f"n{i}")
        seed = [] if i == 0 else ["-peer", f"127.0.0.1:{nodes[0].ports['cluster']}"]
        node.args = FAST + ["-store.segment-replication-factor", str(factor), *seed]
        nodes.append(node.start())

    def members(x: NodeProc) -> int:
        return len(httpx.get(x.url + "/cluster/state", timeout=5).json()["members"])

    wait_for(lambda: all(members(x) == n for x in nodes), what=f"{n} members")
    return nodes


def hits(node: NodeProc, **params) -> httpx.Response:
    return httpx.get(node.url + "/store/hits", params=params, timeout=60)


def cli(node: NodeProc, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        OKLOG + ["query", "-store", node.api, "-from", "1h", "-timeout", "60s", *args],
        capture_output=True,
        timeout=90,
    )


def reference(records: list[bytes], term: bytes, step_ms: int) -> tuple[int, dict[int, int]]:
    got = [r for r in records if term in r.split(b" ", 2)[2]]
    buckets: dict[int, int] = {}
    for r in got:
        k = ref_ms(r) // step_ms * step_ms
        buckets[k] = buckets.get(k, 0) + 1
    return len(got), buckets


LINES = sample_lines(20_000, seed=11)
TERMS = [b"error", b"INFO", b"session opened", b"not in the corpus at all"]


def test_count_and_hist_equal_python_over_the_same_records(node_factory):
    (a,) = cluster(node_factory, 1, 1)
    a.send_fast(b"\n".join(LINES) + b"\n")
    wait_for(lambda: a.query().content.count(b"\n") == len(LINES), timeout=60, what="stored")
    records = a.query().content.splitlines()
    for term in TERMS:
        total, buckets = reference(records, term, 100)
        r = hits(a, q=term.decode(), step="100ms")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == total and body["complete"] is True
        assert {b["ms"]: b["count"] for b in body["buckets"]} == buckets
        c = cli(a, "-q", term.decode(), "-count")
        assert c.returncode == 0, c.stderr
        assert c.stdout == b"%d\n" % total
    # grep -c over the same lines is the same count
    grep = subprocess.run(["grep", "-c", "-F", "error"], input=b"\n".join(LINES) + b"\n", capture_output=True)
    assert cli(a, "-q", "error", "-count").stdout == grep.stdout
    # -i, several -q and -v go through the node's parameters the same way
    data = b"\n".join(LINES) + b"\n"
    grep_i = subprocess.run(["grep", "-ciF", "error"], input=data, capture_output=True, env={"LC_ALL": "C"})
    assert cli(a, "-q", "error", "-i", "-count").stdout == grep_i.stdout
    both = sum(1 for ln in LINES if b"INFO" in ln and b"block" in ln and b"Receiving" not in ln)
    assert cli(a, "-q", "INFO", "-q", "block", "-v", "Receiving", "-count").stdout == b"%d\n" % both
    shown = cli(a, "-q", "INFO", "-q", "block", "-v", "Receiving")
    assert shown.stdout.split(b"\n")[:-1] == [ln for ln in LINES if b"INFO" in ln and b"block" in ln and b"Receiving" not in ln]
    # piped -hist: TIME<TAB>COUNT rows summing to the total, empty buckets included
    total, _ = reference(records, b"INFO", 100)
    h = cli(a, "-q", "INFO", "-hist", "100ms")
    assert h.returncode == 0, h.stderr
    rows = [ln.split(b"\t") for ln in h.stdout.splitlines()]
    assert sum(int(c) for _, c in rows) == total
    j = cli(a, "-q", "INFO", "-hist", "100ms", "-json")
    assert json.loads(j.stdout)["total"] == total
    # regex and topic go through the same matcher
    regex_total = sum(1 for r in records if b"rror" in r.split(b" ", 2)[2])
    assert hits(a, q="e?rror", regex="true").json()["total"] == regex_total
    assert hits(a, topic="nosuchtopic").json()["total"] == 0
    # bad input: a clear 400, nothing else
    for bad in ({"step": "soon"}, {"step": "0s"}, {"q": "(", "regex": "true"}):
        r = hits(a, **bad)
        assert r.status_code == 400 and r.text.strip(), (bad, r.text)


@pytest.mark.slow
def test_replicated_records_count_once_and_partial_counts_are_flagged(node_factory):
    a, b = cluster(node_factory, 2, 2)
    b.send_fast(b"\n".join(LINES) + b"\n")
    wait_for(lambda: a.query().content.count(b"\n") == len(LINES), timeout=60, what="stored")

    def both_hold_all() -> bool:
        return all(
            httpx.get(x.url + "/store/_hits", timeout=30, auth=x.member_auth()).content.count(b"\n") == len(LINES) for x in (a, b)
        )

    wait_for(both_hold_all, timeout=60, what="both replicas")  # each member alone would count every record
    records = a.query().content.splitlines()
    for term in TERMS:
        total, buckets = reference(records, term, 250)
        for node in (a, b):
            body = hits(node, q=term.decode(), step="250ms").json()
            assert body["total"] == total
            assert {x["ms"]: x["count"] for x in body["buckets"]} == buckets
    assert cli(a, "-q", "error", "-count").stdout == b"%d\n" % reference(records, b"error", 1)[0]
    # context: neighbours merged from both replicas, once, as grep prints them
    data = b"\n".join(LINES) + b"\n"
    for flag in (["-C", "2"], ["-A", "1"], ["-B", "3"]):
        want = subprocess.run(["grep", "-F", "".join(flag).replace(" ", ""), "error"], input=data, capture_output=True).stdout
        got = cli(a, "-q", "error", *flag)
        assert got.returncode == 0 and got.stdout == want, flag
    by = hits(a, by="topic").json()  # per-value counts are deduplicated the same way
    assert by["total"] == len(LINES) and sum(v["count"] for v in by["values"]) == len(LINES)

    # One of two down with RF 2: still exact, 200, the dead member named.
    b.kill()
    total = reference(records, b"INFO", 1)[0]
    r = hits(a, q="INFO")
    assert r.status_code == 200 and r.json()["total"] == total
    assert f"127.0.0.1:{b.ports['cluster']}" in r.headers["X-Oklog-Errors"]
    c = cli(a, "-q", "INFO", "-count")
    assert c.returncode == 0 and c.stdout == b"%d\n" % total
    assert b"note: 1 of 2 store members did not answer in full" in c.stderr


@pytest.mark.slow
def test_unreplicated_member_down_is_a_partial_count(node_factory):
    a, b = cluster(node_factory, 2, 1)
    b.send_fast(b"\n".join(LINES) + b"\n")
    wait_for(lambda: a.query().content.count(b"\n") == len(LINES), timeout=60, what="stored")
    per = {x.api: httpx.get(x.url + "/store/_hits", timeout=30, auth=x.member_auth()).content.count(b"\n") for x in (a, b)}
    assert sum(per.values()) == len(LINES)
    b.kill()
    r = hits(a)
    assert r.status_code == 206
    assert r.json()["complete"] is False and r.json()["total"] == per[a.api]
    assert r.headers["X-Oklog-Complete"] == "false"
    c = cli(a, "-count")
    assert c.returncode == 3
    assert c.stdout == b"%d\n" % per[a.api]
    assert c.stderr.decode().startswith("oklog query: results may be incomplete: 1 of 2 store members did not answer in full")


def test_where_by_top_and_fields_on_a_node(node_factory):
    (a,) = cluster(node_factory, 1, 1)
    rows = []
    for i in range(3000):
        lvl = ("info", "warn", "error")[i % 3 if i % 7 else 2]
        st = (200, 404, 500, 503)[i % 4]
        rows.append((f'{{"level": "{lvl}", "status": {st}, "i": {i}}}' if i % 2 else f"level={lvl} status={st} i={i}", lvl, st))
    plain = LINES[:500] + [b"plain status %d: level error, no fields" % i for i in range(7)]
    data = b"\n".join([r[0].encode() for r in rows] + plain) + b"\n"
    a.send_fast(data)
    wait_for(lambda: a.query().content.count(b"\n") == len(rows) + len(plain), timeout=60, what="stored")
    n = sum(1 for _, lvl, st in rows if st >= 500 and lvl == "error")
    c = cli(a, "-where", "status>=500", "-where", "level=error", "-count")
    assert c.returncode == 0, c.stderr
    assert c.stdout == b"%d\n" % n
    lits = (b"status", b"level", b"error")  # the prefilter: lines holding the names and the = value
    assert not [ln for ln in plain if all(x in ln for x in lits) and b"=" in ln]
    skipped = sum(1 for ln in plain if all(x in ln for x in lits) and not ln.lstrip().startswith(b"{"))
    assert skipped >= 7
    assert hits(a, where=["status>=500", "level=error"]).json()["skipped"] == skipped
    assert c.stderr.decode().startswith(f"oklog query: {skipped} lines holding")
    counts: dict[str, int] = {}
    for _, lvl, _ in rows:
        counts[lvl] = counts.get(lvl, 0) + 1
    top2 = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:2]  # ties: by value
    by = cli(a, "-count", "-by", "level", "-top", "2")
    assert by.stdout.decode() == "".join(f"{k}\t{v}\n" for k, v in top2)
    t = cli(a, "-count", "-by", "topic")
    assert t.stdout.split(b"\t")[1] == b"%d\n" % (len(rows) + len(plain))
    f = cli(a, "-where", "status=404", "-fields", "i,status")
    assert f.stdout.decode() == "".join(f"i={i} status=404\n" for i, r in enumerate(rows) if r[2] == 404)


def test_topics_cluster_wide_with_replicas(node_factory):
    a, b = cluster(node_factory, 2, 2)
    nonblank = [ln for ln in LINES if ln.strip()]
    per = {"web": nonblank[:3000], "db": nonblank[3000:4000]}
    for topic, lines in per.items():
        with httpx.Client() as c:
            r = c.post(b.url + f"/ingest/jsonline?topic={topic}", content=b"\n".join(lines) + b"\n", timeout=30)
            assert r.status_code < 300, r.text
    total = sum(len(v) for v in per.values())
    wait_for(lambda: a.query().content.count(b"\n") == total, timeout=60, what="stored")
    records = a.query().content.split(b"\n")[:-1]
    ref = {}
    for rec in records:  # topic -> [count, bytes, first ms, last ms], from the records themselves
        t = rec.split(b" ", 2)[1].decode()
        x = ref.setdefault(t, [0, 0, ref_ms(rec), 0])
        x[0] += 1
        x[1] += len(rec) + 1
        x[3] = ref_ms(rec)
    body = httpx.get(a.url + "/store/topics", timeout=60).json()
    got = {v["value"]: v for v in body["values"]}
    assert set(got) == set(per)
    for t, (n, size, first, last) in ref.items():
        assert (got[t]["count"], got[t]["bytes"]) == (n, size) and n == len(per[t])
        assert got[t]["first"][:19] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(first // 1000))
        assert got[t]["last"][:19] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(last // 1000))
    out = subprocess.run(OKLOG + ["topics", "-store", a.api], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [ln.split() for ln in out.stdout.decode().splitlines()]
    assert rows[0] == ["TOPIC", "RECORDS", "BYTES", "FIRST", "LAST"]
    assert {r[0]: int(r[1]) for r in rows[1:]} == {"web": 3000, "db": 1000}
