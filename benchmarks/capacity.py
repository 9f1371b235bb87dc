"""Coefficients of the capacity model (docs/capacity.md), measured on one real node.

    python -m benchmarks.capacity [--mib 16] [--requests 1000]

- **store bytes per raw byte**: ``--mib`` of loghub lines sent to the fast port;
  once all are stored, the size of the store's segment files over the bytes sent
  (ULID and topic added per record, zstd blocks, the index frame);
- **CPU per idle consumer poll**: a ``GET /ingest/next`` answered 404 (what every
  store member's consumer sends every ingest member four times a second when
  there is nothing to take), in CPU milliseconds of the node process;
- **CPU per empty sub-query**: a ``/store/_query`` for a time range holding
  nothing (what a coordinator sends every store member for every query).

CPU is read from ``/proc/PID/stat`` (user + system) of the node we started, over
a keep-alive connection, so the figures include HTTP parsing but not connection
set-up. Only the node started here is stopped, by its PID.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import shutil
import socket
import tempfile
import time

from benchmarks.node import HOST, Node

CORPUS = "/work/shared/corpus/loghub"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lines(mib: int) -> bytes:
    want = mib << 20
    out: list[bytes] = []
    size = 0
    for path in sorted(glob.glob(os.path.join(CORPUS, "*.log"))):
        with open(path, "rb") as f:
            for line in f:
                line = line.rstrip(b"\r\n")
                if not line:
                    continue
                out.append(line + b"\n")
                size += len(line) + 1
                if size >= want:
                    return b"".join(out)
    return b"".join(out)


def _store_bytes(node: Node) -> int:
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(node.store_path, "**", "*.seg"), recursive=True))


def _count(node: Node) -> int:
    status, _, body = node.request("GET", "/store/query?from=2000-01-01T00:00:00Z", timeout=60)
    return body.count(b"\n") if status == 200 else -1


def _per_request_cpu(node: Node, path: str, n: int) -> float:
    assert node.proc is not None
    conn = http.client.HTTPConnection(HOST, node.ports["api"], timeout=10)
    try:
        before = _cpu_seconds(node.proc.pid)
        for _ in range(n):
            conn.request("GET", path)
            conn.getresponse().read()
        return (_cpu_seconds(node.proc.pid) - before) / n * 1000
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__.split("\n")[0])
    p.add_argument("--mib", type=int, default=16, help="MiB of corpus lines to store, at most the whole corpus (default 16)")
    p.add_argument("--requests", type=int, default=1000, help="requests per CPU figure (default 1000)")
    args = p.parse_args(argv)
    oklog = shutil.which("oklog") or os.path.join(os.path.dirname(os.sys.executable), "oklog")
    work = tempfile.mkdtemp(prefix="oklog-capacity-")
    node = Node(oklog, work, "cap", log=lambda *_: None)
    try:
        node.start()
        data = _lines(args.mib)
        records = data.count(b"\n")
        with socket.create_connection(node.fast, timeout=30) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            s.recv(1)
        deadline = time.monotonic() + 300
        while _count(node) < records:
            if time.monotonic() > deadline:
                raise SystemExit("records did not all become queryable within 300 s")
            time.sleep(0.5)
        time.sleep(2)  # compaction settles
        ratio = _store_bytes(node) / len(data)
        poll = _per_request_cpu(node, "/ingest/next", args.requests)
        empty = _per_request_cpu(node, "/store/_query?from=2001-01-01T00:00:00Z&to=2001-01-01T00:00:01Z", args.requests)
        out = {
            "raw_bytes": len(data),
            "records": records,
            "store_bytes_per_raw_byte": round(ratio, 3),
            "cpu_ms_per_idle_poll": round(poll, 3),
            "cpu_ms_per_empty_subquery": round(empty, 3),
            "cpus": os.cpu_count(),
            "load_1min": os.getloadavg()[0],
        }
        print(json.dumps(out, indent=1))
        return 0
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
