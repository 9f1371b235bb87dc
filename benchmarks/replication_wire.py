"""Bytes on the wire for replication: one ingest node and two store nodes
(replication factor 2) take a bench data set; reports the store consumers'
records bytes sent to the other store, the bytes that took on the wire, and
the time from the last byte sent until every batch is replicated, and the CPU
seconds of the store processes until compaction is idle.

    PYTHONPATH=. python -m benchmarks.replication_wire [SIZE] [--tree DIR]

``--tree DIR`` runs the nodes from another copy of the package (e.g. an older
commit: ``git archive COMMIT oklog | tar -x -C DIR`` plus its built _fast);
nodes before ``replicate_segfile`` publish no wire figure: their replication
bodies are the records themselves (``bytes_consumed``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time

from benchmarks.dataset import generate, human, parse_size
from benchmarks.node import Node


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def state(n: Node) -> dict:
    _, _, body = n.request("GET", "/cluster/state")
    return json.loads(body)


def drained(nodes: list[Node]) -> bool:
    """No ingest segment left to consume: every batch is replicated (queryable)."""
    for n in nodes:
        p = state(n)["pipeline"]
        if any(p.get("ingest", {}).get("segments", {}).values()):
            return False
        if p.get("consumer", {}).get("state", "idle") != "idle":
            return False
    return True


def idle(nodes: list[Node]) -> bool:
    for n in nodes:
        p = state(n)["pipeline"]
        if any(p.get("ingest", {}).get("segments", {}).values()):
            return False
        _, _, body = n.request("GET", "/store/segments")
        if "store" in p and json.loads(body)["compaction_pending"]:
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("size", nargs="?", default="32MB")
    ap.add_argument("--tree", default="")
    args = ap.parse_args()
    if args.tree:
        os.environ["PYTHONPATH"] = os.path.abspath(args.tree)
    oklog = os.path.join(os.path.dirname(sys.executable), "oklog")
    work = tempfile.mkdtemp(prefix="oklog-repl-wire-")
    ds = generate(work, parse_size(args.size), 1)
    common = ("-insecure", "-store.segment-replication-factor", "2", "-ingest.segment-flush-age", "0.5s")
    ing = Node(oklog, work, "ing", extra_args=(*common, "-role", "ingest"))
    ing.start()
    peer = ("-peer", f"127.0.0.1:{ing.ports['cluster']}")
    stores = [Node(oklog, work, f"s{i}", extra_args=(*common, "-role", "store", *peer)) for i in range(2)]
    nodes = [ing, *stores]
    try:
        for s in stores:
            s.start()
        deadline = time.monotonic() + 60
        while not all(len(state(n)["members"]) == 3 for n in nodes):
            if time.monotonic() > deadline:
                raise SystemExit("members did not find each other")
            time.sleep(0.2)
        time.sleep(3)  # gossip carries every member's meta
        cpu0 = [cpu_seconds(s.proc.pid) for s in stores if s.proc]
        with socket.create_connection(ing.fast) as c, open(ds.path, "rb") as f:
            while chunk := f.read(1 << 20):
                c.sendall(chunk)
        sent = time.monotonic()
        deadline = sent + 600
        while not drained(nodes):
            if time.monotonic() > deadline:
                raise SystemExit("not drained after 600 s")
            time.sleep(0.05)
        queryable = time.monotonic() - sent
        while not idle(nodes):
            if time.monotonic() > deadline:
                raise SystemExit("not idle after 600 s")
            time.sleep(0.5)
        cpu = sum(cpu_seconds(s.proc.pid) for s in stores if s.proc) - sum(cpu0)
        cons = [state(s)["pipeline"]["consumer"] for s in stores]
        consumed = sum(c["bytes_consumed"] for c in cons)
        rec = sum(c.get("replicated_bytes", 0) for c in cons)
        wire = sum(c.get("replicated_wire_bytes", 0) for c in cons)
        disk = sum(state(s)["pipeline"]["store"]["bytes"] for s in stores)
        print(f"data set {human(ds.nbytes)}; batches' records {human(consumed)}; store bytes (both) {human(disk)}")
        if "replicated_wire_bytes" in cons[0]:
            print(f"replicated records {human(rec)} -> on the wire {human(wire)} ({wire / max(rec, 1):.3f}x)")
        else:
            print(f"replicated records on the wire as they are: {human(consumed)} (no wire figure in this version)")
        print(f"last byte -> ingest tier drained (every batch replicated): {queryable:.2f} s")
        print(f"store processes' CPU until idle: {cpu:.1f} s")
    finally:
        for n in nodes:
            n.stop()
            n.cleanup()


if __name__ == "__main__":
    main()
