"""A slow ``format=json`` reader holds a bounded amount of a node's memory.

The node holds about 230 MB of records; a client asks for all of them as JSON
(nearly twice as large) and then stops reading. Formatting happens a piece
at a time as the response is sent, so the scan waits for the reader instead of
formatting ahead into memory. Measured: the node's anonymous resident memory
(the heap: mapped segment pages are page cache, shared and reclaimable).
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from conftest import NodeProc, wait_for

from oklog.fs import RealFS
from oklog.records.record import make_headers, now_ms, stamp_lines
from oklog.store.log import StoreLog

BOUND_MB = 64  # the scan-ahead (4 units of 8 MiB) plus a formatted piece and buffers
LINE = b'say "quoted" \\ x ' * 80  # quotes and backslashes double in JSON
SEGMENTS, PER_SEGMENT = 6, 20_000


def rss_anon_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no RssAnon")


def fill_store(node: NodeProc) -> None:
    store = StoreLog(RealFS(), str(node.workdir / "store"))
    (node.workdir / "store").mkdir(parents=True, exist_ok=True)
    t0 = now_ms() - 600_000
    for k in range(SEGMENTS):
        headers = make_headers(t0 + k * 1000, 0, PER_SEGMENT, b"default")
        store.write(stamp_lines([LINE] * PER_SEGMENT, headers), False)


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [1, 2], ids=["one node", "fanned out"])
def test_slow_json_reader_holds_bounded_memory(node_factory, nodes):
    ns: list[NodeProc] = []
    for i in range(nodes):
        n = node_factory(f"n{i}")
        if i == 0:
            fill_store(n)
        n.args = ["-store.segment-replication-factor", "1"] + (
            ["-peer", f"127.0.0.1:{ns[0].ports['cluster']}"] if ns else []
        )
        ns.append(n.start())
    wait_for(lambda: all(len(httpx.get(n.url + "/cluster/state", timeout=5).json()["members"]) == nodes for n in ns))
    node = ns[0]
    assert node.proc is not None
    # Compaction rewrites the plain segments compressed after start: its buffers
    # are not the reader's, so the baseline is taken once it has nothing to do.
    wait_for(lambda: not httpx.get(node.url + "/store/segments", timeout=5, auth=node.member_auth()).json()["compaction_pending"],
             timeout=60, what="compaction idle")
    time.sleep(1)  # start-up allocations settle
    base = rss_anon_mb(node.proc.pid)
    with socket.create_connection(("127.0.0.1", node.ports["api"]), timeout=30) as s:
        s.sendall(b"GET /store/query?format=json HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        peak = base
        for _ in range(16):  # the node runs as far ahead as it will, then waits
            time.sleep(0.5)
            peak = max(peak, rss_anon_mb(node.proc.pid))
        # The reader is slow, not gone: the rest of the answer still comes.
        s.settimeout(60)
        got = len(first)
        while got < 1 << 20:
            chunk = s.recv(1 << 20)
            assert chunk
            got += len(chunk)
    assert peak - base < BOUND_MB, f"{peak - base} MB held for a slow reader (bound {BOUND_MB})"
