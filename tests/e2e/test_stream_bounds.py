"""Live-tail handlers are bounded by their clients: they end when the client
goes, hold bounded memory, are limited in number, and never slow ingest."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from conftest import wait_for
from test_cluster import cluster, states

# A client that asks for the whole cluster's stream and never reads it; with
# "pipeline" it also sends bytes after its request (hypercorn then stops
# reading the connection, so only the socket tells that the client went).
CLIENT = """
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.sendall(b"GET /store/stream HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
if sys.argv[2] == "pipeline":
    s.sendall(b"GET /health HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
print("ready", flush=True)
time.sleep(600)
"""


def streams(n) -> dict:
    return httpx.get(n.url + "/cluster/state", timeout=10).json()["pipeline"]["streams"]


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for ln in open(f"/proc/{pid}/status"):
        if ln.startswith(field + ":"):
            return int(ln.split()[1])
    raise AssertionError(f"no {field}")


CLIENT_ADDR = "127.0.0.2"  # the stream clients' own address, to tell their sockets apart


def held(pid: int, api_port: int, client_addr: str) -> list[str]:
    """States of the sockets the node process still holds for connections from
    ``client_addr`` (the kernel may keep closed ones a while; those don't count)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peer = f"{int.from_bytes(socket.inet_aton(client_addr), 'little'):08X}"
    out = []
    for ln in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = ln.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if int(local.split(":")[1], 16) == api_port and remote.split(":")[0] == peer and inode in inodes:
            out.append(state)
    return out


class Producer:
    """Writes numbered lines to a node's fast port from a child process."""

    def __init__(self, port: int, count: int) -> None:
        code = (
            "import socket, sys\n"
            "c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
            "for k in range(0, int(sys.argv[2]), 1000):\n"
            "    c.sendall(b''.join(b'producer line %09d padding padding padding padding\\n' % i for i in range(k, k + 1000)))\n"
            "c.shutdown(socket.SHUT_WR); c.recv(1)\n"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(port), str(count)])

    def wait(self, timeout: float = 120) -> None:
        assert self.proc.wait(timeout=timeout) == 0


@pytest.mark.slow
def test_killed_clients_end_their_streams_on_every_node(node_factory):
    a, b = cluster(node_factory, 2)
    wait_for(lambda: all(len(states(n)) == 2 for n in (a, b)), what="2 members")
    producer = Producer(b.ports["fast"], 3_000_000)
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(a.ports["api"]), "pipeline" if k % 2 else "plain"],
            stdout=subprocess.PIPE,
        )
        for k in range(20)
    ]
    try:
        for c in clients:
            assert c.stdout is not None and c.stdout.readline() == b"ready\n"
        wait_for(lambda: streams(a)["clients"] == 20, what="20 cluster streams on a")
        wait_for(lambda: streams(b)["subscribers"] >= 20, what="a follows b for each of them")
        time.sleep(1.0)
    finally:
        for c in clients:
            c.send_signal(signal.SIGKILL)
            c.wait(timeout=10)
    wait_for(lambda: streams(a)["clients"] == 0, timeout=30, what="a's cluster streams end")
    wait_for(lambda: streams(a)["subscribers"] == 0, timeout=30, what="a's tap subscribers end")
    wait_for(lambda: streams(b)["subscribers"] == 0, timeout=30, what="b's tap subscribers end")
    producer.proc.kill()
    producer.proc.wait(timeout=10)


@pytest.mark.slow
def test_idle_clients_that_vanish_leave_nothing_behind(node_factory):
    """2,000 clients connect and vanish with no records flowing."""
    n = node_factory(args=["-stream.max-subscribers", "250"]).start()

    def wave(k: int) -> list[socket.socket]:
        socks = []
        for _ in range(k):
            s = socket.create_connection(
                ("127.0.0.1", n.ports["api"]), timeout=10, source_address=(CLIENT_ADDR, 0)
            )
            s.sendall(b"GET /store/stream?q=nothing-matches HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        return socks

    before = rss_kb(n.proc.pid)
    for _ in range(8):
        socks = wave(250)
        wait_for(lambda: streams(n)["clients"] == 250, timeout=30, what="250 streams")
        for s in socks:
            s.close()
    wait_for(lambda: streams(n)["clients"] == 0, timeout=30, what="every stream ends")
    st = streams(n)
    assert st["subscribers"] == 0
    # Their connections are closed too (not left to the keep-alive timeout).
    wait_for(lambda: not held(n.proc.pid, n.ports["api"], CLIENT_ADDR), timeout=10, what="their sockets closed")
    grown = rss_kb(n.proc.pid) - before
    assert grown < 50_000, f"RSS grew {grown} kB after 2,000 streams came and went"


def test_subscribers_beyond_the_limit_are_refused_with_a_reason(node_factory):
    n = node_factory(args=["-stream.max-subscribers", "3"]).start()
    socks = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", n.ports["api"]), timeout=10)
        s.sendall(b"GET /store/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    wait_for(lambda: streams(n)["clients"] == 3, what="3 streams")
    r = httpx.get(n.url + "/store/stream", timeout=10)
    assert r.status_code == 503
    assert "limit (3)" in r.text and "-stream.max-subscribers" in r.text
    assert r.headers["retry-after"]
    r = httpx.get(n.url + "/ingest/_stream", timeout=10, auth=n.member_auth())  # internal: a member's proof
    assert r.status_code == 503 and "limit (3)" in r.text
    assert streams(n)["refused"] == 2
    for s in socks:
        s.close()
    wait_for(lambda: streams(n)["clients"] == 0, what="streams end")
    with httpx.stream("GET", n.url + "/store/stream", timeout=10) as r:
        assert r.status_code == 200


@pytest.mark.slow
def test_clients_that_never_read_cost_ingest_nothing_but_their_drops(node_factory):
    n = node_factory(args=["-ingest.segment-flush-age", "1s"]).start()
    stuck = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", n.ports["api"]), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /store/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        stuck.append(s)
    wait_for(lambda: streams(n)["subscribers"] == 200, what="200 stuck subscribers")
    # One client that reads everything as it comes.
    reader = socket.create_connection(("127.0.0.1", n.ports["api"]), timeout=10)
    reader.sendall(b"GET /store/stream?q=producer+line HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_for(lambda: streams(n)["subscribers"] == 201, what="the reader subscribed")
    total = 400_000
    records_before = httpx.get(n.url + "/cluster/state").json()["pipeline"]["ingest"]["records_in"]
    producer = Producer(n.ports["fast"], total)
    got = 0
    tail = b""
    reader.settimeout(0.2)
    deadline = time.monotonic() + 80
    while got < total and time.monotonic() < deadline:
        try:
            data = reader.recv(1 << 20)
        except TimeoutError:
            continue
        assert data, "the node ended the reader's stream"
        got += (tail + data).count(b"producer line")
        tail = data[-12:]
    producer.wait(timeout=10)
    written = (
        httpx.get(n.url + "/cluster/state").json()["pipeline"]["ingest"]["records_in"]
        - records_before
    )
    st = streams(n)
    for s in stuck:
        s.close()
    reader.close()
    assert written == total
    assert got == total, f"the reading client got {got} of {total} ({st})"
    # Each stuck client kept what the ring and its socket held and lost the
    # rest, counted (the ring holds 16 MiB: about 190,000 of these records).
    assert 200 * 100_000 < st["dropped"] <= 200 * total, st


@pytest.mark.slow
def test_a_client_that_takes_nothing_is_ended_after_the_write_timeout(node_factory):
    n = node_factory(args=["-stream.write-timeout", "2s"]).start()
    stuck = socket.create_connection(("127.0.0.1", n.ports["api"]), timeout=10, source_address=(CLIENT_ADDR, 0))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"GET /store/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_for(lambda: streams(n)["clients"] == 1, what="the stream")
    producer = Producer(n.ports["fast"], 200_000)
    # Still connected, never reading: its write blocks until the timeout ends it.
    wait_for(lambda: streams(n)["clients"] == 0, timeout=30, what="the stuck stream ended")
    producer.wait()
    assert streams(n)["subscribers"] == 0
    wait_for(lambda: not held(n.proc.pid, n.ports["api"], CLIENT_ADDR), timeout=10, what="its socket closed")
    stuck.close()
