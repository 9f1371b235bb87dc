"""Live tail across real nodes."""

import os
import re
import select
import socket
import subprocess
import time

import httpx
import pytest
from conftest import OKLOG, wait_for
from test_cluster import cluster, states

REC = re.compile(rb"([0-9A-Z]{26}) (\S+) (.*)\n")


class RawStream:
    """A GET /store/stream read with a plain socket (chunked framing ignored:
    records are found by their shape)."""

    def __init__(self, api: str, query: str = "") -> None:
        host, port = api.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(f"GET /store/stream?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.buf = b""
        self.times: dict[bytes, float] = {}

    def poll(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.sock.settimeout(0.05)
        while time.monotonic() < end:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not data:
                break
            self.buf += data
            for m in REC.finditer(data):
                self.times.setdefault(m.group(3), time.monotonic())

    def lines(self) -> list[bytes]:
        return [m.group(3) for m in REC.finditer(self.buf)]

    def close(self) -> None:
        self.sock.close()


def subscribers(n) -> int:
    return httpx.get(n.url + "/cluster/state", timeout=5).json()["pipeline"]["streams"]["subscribers"]


@pytest.mark.slow
def test_records_appear_once_within_a_second_on_another_node(node_factory):
    nodes = cluster(node_factory, 3, factor=2)
    wait_for(lambda: all(len(states(n)) == 3 for n in nodes), what="3 members")
    # Flush age is 0.3 s in these clusters; set a long one to show the tap does not wait for it.
    s = RawStream(nodes[2].api, "q=tailme")
    wait_for(lambda: s.poll(0.05) or all(subscribers(n) >= 1 for n in nodes), what="the stream follows every member")
    sent = {}
    for k in range(30):
        target = nodes[k % 3]
        line = b"tailme %d" % k
        with socket.create_connection(("127.0.0.1", target.ports["fast"])) as c:
            sent[line] = time.monotonic()
            c.sendall(line + b"\n" + b"noise %d\n" % k)
            s.poll(0.05)
    s.poll(2.0)
    s.close()
    got = s.lines()
    assert sorted(got) == sorted(sent), "each tailme record exactly once, no noise"
    delays = [s.times[ln] - sent[ln] for ln in sent]
    assert max(delays) < 1.0, f"max delay {max(delays):.2f}s"


@pytest.mark.slow
def test_stream_follows_a_node_joining(node_factory):
    a, b = cluster(node_factory, 2)
    s = RawStream(a.api)
    s.poll(1.0)
    c = node_factory("late")
    c.args = ["-peer", f"127.0.0.1:{a.ports['cluster']}", "-ingest.segment-flush-age", "30s"]
    c.start()
    wait_for(lambda: len(states(a)) == 3, what="a sees the late node")
    wait_for(lambda: s.poll(0.05) or subscribers(c) >= 1, what="the stream follows the late node")
    c.send_fast(b"from the late node\n")
    s.poll(2.0)
    s.close()
    assert b"from the late node" in s.lines()


@pytest.mark.slow
def test_slow_stream_client_is_bounded(node_factory):
    """A stream client that never reads costs the node a bounded queue: ingest
    goes on (every batch is acknowledged), the records the client cannot take
    are counted as dropped, and the node's memory does not grow with them."""
    n = node_factory(args=["-ingest.segment-flush-age", "1s"]).start()
    line = b"x" * 200 + b"\n"
    chunk = line * 5000  # 1 MB

    def ingest(mb: int) -> None:
        """Send mb MB over the fast port and wait for the node to take all of it
        (it answers once the connection's records are written)."""
        with socket.create_connection(("127.0.0.1", n.ports["fast"]), timeout=120) as c:
            for _ in range(mb):
                c.sendall(chunk)
            c.shutdown(socket.SHUT_WR)
            c.recv(1)

    def rss_kb() -> int:
        for ln in open(f"/proc/{n.proc.pid}/status"):
            if ln.startswith("RssAnon"):  # file pages of mapped segments are cache, not growth
                return int(ln.split()[1])
        return 0

    ingest(20)  # warm up
    # Control: the same ingest without a stream, so the node's own working set
    # (read buffers, consumer batches, compaction) is already in the baseline.
    ingest(100)
    base_rss = rss_kb()
    # A client that asks for everything and never reads.
    stuck = socket.create_connection(("127.0.0.1", n.ports["api"]))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"GET /store/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_for(lambda: subscribers(n) >= 1, what="the stuck stream subscribed")
    ingest(100)  # the same ingest as the control, so RSS compares like with like: it completes
    grown = rss_kb() - base_rss
    wait_for(lambda: httpx.get(n.url + "/cluster/state", timeout=5).json()["pipeline"]["streams"]["dropped"] > 0,
             what="the stuck client's records counted as dropped")
    state = httpx.get(n.url + "/cluster/state", timeout=5).json()
    assert state["pipeline"]["streams"]["subscribers"] == 1
    stuck.close()
    # The stream's queue is bounded at 4 MiB; allow for allocator noise.
    assert grown < 48_000, f"RSS grew {grown} kB with a stuck stream"


@pytest.mark.slow
def test_hundred_concurrent_streams(node_factory):
    n = node_factory().start()
    streams = [RawStream(n.api, "q=hello") for _ in range(100)]
    wait_for(
        lambda: httpx.get(n.url + "/cluster/state").json()["pipeline"]["streams"]["subscribers"] >= 100,
        what="100 subscribers",
    )
    n.send_fast(b"hello everyone\nnot this\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(s.lines() for s in streams):
        for s in streams:
            if not s.lines():
                s.poll(0.01)
    for s in streams:
        s.close()
    assert all(s.lines() == [b"hello everyone"] for s in streams)


def test_stream_cli_prints_and_rejects_bad_regex(node_factory):
    n = node_factory().start()
    bad = subprocess.run(OKLOG + ["stream", "-store", n.api, "-q", "(", "-regex"], capture_output=True, timeout=20)
    assert bad.returncode == 1 and b"invalid regex" in bad.stderr
    p = subprocess.Popen(OKLOG + ["stream", "-store", n.api, "-q", "tick"], stdout=subprocess.PIPE)
    out = b""
    try:
        wait_for(lambda: subscribers(n) >= 1, what="oklog stream subscribed")
        n.send_fast(b"tick one\ntock\n")
        deadline = time.monotonic() + 10
        while b"tick one\n" not in out and time.monotonic() < deadline:
            if select.select([p.stdout], [], [], 0.2)[0]:
                out += os.read(p.stdout.fileno(), 65536)
        time.sleep(0.5)  # anything else it would print (nothing should come)
    finally:
        p.terminate()
    rest, _ = p.communicate(timeout=10)
    assert out + rest == b"tick one\n"
