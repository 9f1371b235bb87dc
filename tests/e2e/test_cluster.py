"""Multi-process cluster tests: every node a real `oklog run` on 127.0.0.1."""

import signal
import subprocess
import time

import httpx
import pytest
from conftest import OKLOG, NodeProc, wait_for

from oklog.records import segfile

FAST = ["-ingest.segment-flush-age", "0.3s", "-cluster.suspicion-timeout", "2s"]


def cluster(node_factory, n, roles=None, factor=2):
    nodes = []
    for i in range(n):
        role = roles[i] if roles else "ingeststore"
        node = node_factory(f"n{i}")
        seed = [] if i == 0 else ["-peer", f"127.0.0.1:{nodes[0].ports['cluster']}"]
        node.args = FAST + ["-role", role, "-store.segment-replication-factor", str(factor)] + seed
        nodes.append(node.start())
    return nodes


def states(node: NodeProc) -> dict[str, tuple[str, int]]:
    st = httpx.get(node.url + "/cluster/state", timeout=5).json()
    return {m["id"]: (m["state"], m["incarnation"]) for m in st["members"]}


def node_id(node: NodeProc) -> str:
    return f"127.0.0.1:{node.ports['cluster']}"


def all_see(nodes, target, state):
    return all(states(n).get(node_id(target), ("?",))[0] == state for n in nodes)


def numbers(body: bytes) -> list[int]:
    return [int(rec.rsplit(b" ", 1)[1]) for rec in body.split(b"\n")[:-1]]


def settled(nodes) -> bool:
    for n in nodes:
        st = httpx.get(n.url + "/cluster/state", timeout=5).json()["pipeline"].get("ingest")
        if st and any(st["segments"].values()):
            return False
    return True


def records_on_disk(node: NodeProc) -> dict[bytes, int]:
    """ULIDs in the node's segment files, once its compaction has nothing left
    to do (a job in flight renames and removes files under the listing)."""
    wait_for(lambda: not httpx.get(node.url + "/store/segments", timeout=5, auth=node.member_auth()).json()["compaction_pending"],
             timeout=30, what="compaction idle")
    for _ in range(5):
        seen: dict[bytes, int] = {}
        try:
            for p in (node.workdir / "store").glob("*.seg"):
                for rec in segfile.decode(p.read_bytes()).split(b"\n")[:-1]:
                    seen[rec[:26]] = 1
            return seen
        except FileNotFoundError:
            time.sleep(0.2)  # compacted away between listing and reading: look again
    raise AssertionError("segment files kept changing")


@pytest.mark.slow
def test_three_nodes_survive_a_kill_midstream(node_factory):
    nodes = cluster(node_factory, 3)
    wait_for(lambda: all(len(states(n)) == 3 for n in nodes), what="3 members")
    bulk = [f"127.0.0.1:{n.ports['bulk']}" for n in nodes]
    total = 6000
    fwds = []
    for _ in range(2):
        p = subprocess.Popen(
            OKLOG + ["forward", "-mode", "bulk", "-backoff", "0.5s", *bulk],
            stdin=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        fwds.append(p)
    victim = nodes[2]
    for i in range(total):
        fwds[i % 2].stdin.write(b"line %d\n" % i)
        if i % 500 == 499:
            for f in fwds:
                f.stdin.flush()
            time.sleep(0.1)
        if i == total // 3:
            victim.kill()
        if i == 2 * total // 3:
            victim.start()
    for f in fwds:
        f.stdin.close()
    for f in fwds:
        assert f.wait(90) == 0
    wait_for(lambda: settled(nodes), timeout=30, what="ingest drained")
    for n in nodes:
        body = wait_for(lambda n=n: (b := n.query().content).count(b"\n") >= total and b, timeout=30)
        got = numbers(body)
        assert sorted(got) == list(range(total)), f"query to {n.api}"
    # Replication: after settling every record is on at least 2 nodes' disks.
    disks = [records_on_disk(n) for n in nodes]
    all_ulids = set().union(*disks)
    assert len(all_ulids) == total
    under = [u for u in all_ulids if sum(u in d for d in disks) < 2]
    assert not under, f"{len(under)} records on fewer than 2 nodes"


@pytest.mark.slow
def test_membership_join_death_and_pause(node_factory):
    a, b = cluster(node_factory, 2)
    wait_for(lambda: len(states(a)) == 2 and len(states(b)) == 2, what="2 members")
    # A late joiner is discovered by all within a few gossip rounds.
    c = node_factory("late")
    c.args = FAST + ["-peer", f"127.0.0.1:{b.ports['cluster']}"]
    c.start()
    t0 = time.monotonic()
    wait_for(lambda: all(all_see([x], c, "alive") for x in (a, b)), timeout=10, what="late joiner seen")
    assert time.monotonic() - t0 < 5
    # A paused node is suspected, then dead; after SIGCONT it is alive again
    # with a higher incarnation.
    inc0 = states(a)[node_id(c)][1]
    c.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: all_see([a, b], c, "suspect") or all_see([a, b], c, "dead"), timeout=10, what="suspect")
        wait_for(lambda: all_see([a, b], c, "dead"), timeout=15, what="dead")
    finally:
        c.signal(signal.SIGCONT)
    wait_for(lambda: all_see([a, b], c, "alive"), timeout=15, what="rejoined")
    assert states(a)[node_id(c)][1] > inc0
    # A killed node is marked dead by all.
    c.kill()
    wait_for(lambda: all_see([a, b], c, "dead"), timeout=15, what="killed node dead")


@pytest.mark.slow
def test_roles_split_and_partial_results(node_factory):
    roles = ["store", "store", "store", "ingest", "ingest"]
    nodes = cluster(node_factory, 5, roles)
    stores, ingests = nodes[:3], nodes[3:]
    wait_for(lambda: all(len(states(n)) == 5 for n in nodes), what="5 members")
    for k, ing in enumerate(ingests):
        ing.send_fast(b"".join(b"rec %d\n" % (k * 1000 + i) for i in range(1000)))
    for s in stores:
        body = wait_for(lambda s=s: (x := s.query().content).count(b"\n") >= 2000 and x, timeout=30)
        assert sorted(numbers(body)) == list(range(2000))
    # Ingest-only nodes keep no store segments and serve no queries.
    for ing in ingests:
        assert not list((ing.workdir / "store").glob("*.seg"))
        assert ing.query().status_code == 404
    # A store member that dies is reported, not a hang. Factor 2 covers the
    # loss of one, so the answer is complete (200) and still names it.
    stores[2].kill()
    t0 = time.monotonic()
    r = stores[0].query()
    assert time.monotonic() - t0 < 20
    assert r.status_code == 200 and r.headers["X-Oklog-Complete"] == "true"
    assert r.headers["X-Oklog-Error-Count"] == "1"
    assert r.headers["X-Oklog-Errors"].startswith(f"{node_id(stores[2])}: ")
    assert sorted(set(numbers(r.content))) == list(range(2000))  # factor 2 covers the loss
