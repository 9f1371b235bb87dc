"""Durability modes and the forwarder, against real nodes."""

import os
import select
import socket
import subprocess
import time

import httpx
from conftest import OKLOG, wait_for


def numbers(body: bytes) -> list[int]:
    return [int(r.rsplit(b" ", 1)[1]) for r in body.split(b"\n")[:-1]]


def test_durable_acknowledged_records_survive_kill_9(node_factory):
    n = node_factory(args=["-ingest.segment-flush-age", "60s"]).start()
    s = socket.create_connection(("127.0.0.1", n.ports["durable"]), timeout=10)
    s.setblocking(False)
    acked = 0
    sent = 0
    out = b""
    buf = b""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if len(out) < 65536:
            out += b"".join(b"dur %d\n" % i for i in range(sent, sent + 200))
            sent += 200
        try:
            out = out[s.send(out) :]
        except BlockingIOError:
            pass
        try:
            buf += s.recv(65536)
        except BlockingIOError:
            pass
        *lines, buf = buf.split(b"\n")
        acked += sum(int(x[1:]) for x in lines if x.startswith(b"+"))
    n.kill()  # mid-write: the client has seen `acked` records accepted
    s.close()
    assert acked > 1000
    n.start()
    body = wait_for(lambda: (b := n.query(q="dur ").content).count(b"\n") >= acked and b, timeout=30)
    got = set(numbers(body))
    assert set(range(acked)) <= got  # every acknowledged record (acks are in order)


def test_bulk_ack_only_after_queryable(node_factory):
    n = node_factory(args=["-ingest.segment-flush-age", "0.2s"]).start()
    from oklog.records.record import ULIDSource, stamp_lines

    body = stamp_lines([b"bulk %d" % i for i in range(500)], ULIDSource().headers(500, b"bulky"))
    with socket.create_connection(("127.0.0.1", n.ports["bulk"]), timeout=30) as s:
        s.sendall(b"BULK %d\n" % len(body) + body)
        reply = s.makefile("rb").readline()
        assert reply == b"OK 500\n"
        # Acknowledged means replicated: queryable right now, no waiting.
        r = n.query(q="bulk ")
        assert numbers(r.content) == list(range(500))
        assert {rec.split(b" ")[1] for rec in r.content.split(b"\n")[:-1]} == {b"bulky"}
        # A retried frame (same ULIDs) does not duplicate anything.
        s.sendall(b"BULK %d\n" % len(body) + body)
        assert s.makefile("rb").readline() == b"OK 500\n"
    assert numbers(n.query(q="bulk ").content) == list(range(500))
    with socket.create_connection(("127.0.0.1", n.ports["bulk"]), timeout=10) as s:
        s.sendall(b"BULK 5\nnope\n")
        assert s.makefile("rb").readline().startswith(b"ERR bad segment")


def test_bulk_frames_are_pipelined_and_answered_in_order(node_factory):
    n = node_factory(args=["-ingest.segment-flush-age", "0.2s"]).start()
    from oklog.records.record import ULIDSource, stamp_lines

    src = ULIDSource()
    frames = []
    for k in range(6):
        body = stamp_lines([b"pipe %d" % (k * 1000 + i) for i in range(100 + k)], src.headers(100 + k))
        frames.append(b"BULK %d\n" % len(body) + body)
    bad = b"BULK 5\nnope\n"
    with socket.create_connection(("127.0.0.1", n.ports["bulk"]), timeout=30) as s:
        # All frames before any reply; a bad one in the middle is answered in its place.
        s.sendall(b"".join(frames[:3]) + bad + b"".join(frames[3:]) + b"BULK x\n")
        f = s.makefile("rb")
        replies = [f.readline() for _ in range(8)]
        assert f.readline() == b""  # closed after the malformed header's ERR
    assert replies[:3] == [b"OK 100\n", b"OK 101\n", b"OK 102\n"]
    assert replies[3].startswith(b"ERR bad segment")
    assert replies[4:7] == [b"OK 103\n", b"OK 104\n", b"OK 105\n"]
    assert replies[7].startswith(b"ERR expected")
    # Every OK means queryable at that moment: all six frames are.
    got = numbers(n.query(q="pipe ").content)
    assert len(got) == sum(100 + k for k in range(6)) == len(set(got))


def test_forwarder_failover_loses_no_line(node_factory):
    a = node_factory("a", ["-ingest.segment-flush-age", "0.3s"]).start()
    b = node_factory("b", ["-ingest.segment-flush-age", "0.3s"]).start()
    addrs = [f"127.0.0.1:{x.ports['bulk']}" for x in (a, b)]
    fwd = subprocess.Popen(
        OKLOG + ["forward", "-mode", "bulk", "-backoff", "0.3s", *addrs],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    total = 4000
    for i in range(total):
        fwd.stdin.write(b"num %d\n" % i)
        if i % 400 == 399:
            fwd.stdin.flush()
            time.sleep(0.15)
        if i == total // 2:
            a.kill()
    fwd.stdin.close()
    assert fwd.wait(60) == 0
    a.start()

    def all_numbers():
        got = []
        for x in (a, b):
            got += numbers(x.query(q="num ").content)
        return got

    got = wait_for(lambda: (g := all_numbers()) and set(g) == set(range(total)) and g, timeout=30)
    # Duplicates only with identical ULIDs: a query per node returns each ULID once.
    for x in (a, b):
        recs = x.query(q="num ").content.split(b"\n")[:-1]
        assert len({r[:26] for r in recs}) == len(recs)
    assert set(got) == set(range(total))


def test_forwarder_fast_and_durable_modes_and_drop_policy(node_factory):
    n = node_factory(args=["-ingest.segment-flush-age", "0.2s"]).start()
    for mode, port in (("fast", "fast"), ("durable", "durable")):
        data = b"".join(b"%s %d\n" % (mode.encode(), i) for i in range(3000))
        r = subprocess.run(OKLOG + ["forward", "-mode", mode, f"127.0.0.1:{n.ports[port]}"], input=data, timeout=60)
        assert r.returncode == 0
        body = wait_for(lambda m=mode: (b := n.query(q=m + " ").content).count(b"\n") >= 3000 and b, timeout=20)
        assert sorted(numbers(body)) == list(range(3000))
    # Nobody listening and a tiny buffer with -policy drop: counted and reported, no hang.
    dead = f"127.0.0.1:{n.ports['cluster']}"
    p = subprocess.Popen(
        OKLOG + ["forward", "-buffer", "1k", "-policy", "drop", dead],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    err = b""
    try:
        p.stdin.write(b"".join(b"line %d\n" % i for i in range(20000)))
        p.stdin.close()
        deadline = time.monotonic() + 20
        while b"connection refused" not in err and time.monotonic() < deadline:
            if select.select([p.stderr], [], [], 0.5)[0]:
                err += os.read(p.stderr.fileno(), 65536)
    finally:
        p.kill()
        p.wait(10)
    assert b"connection refused" in err


def test_topics_in_every_mode_and_the_listener_default(node_factory):
    n = node_factory(args=["-ingest.segment-flush-age", "0.2s", "-ingest.topic", "edge"]).start()
    for mode in ("fast", "durable", "bulk"):
        data = b"".join(b"tp-%s %d\n" % (mode.encode(), i) for i in range(500))
        cmd = OKLOG + ["forward", "-mode", mode, "-topic", f"app-{mode}", f"127.0.0.1:{n.ports[mode]}"]
        assert subprocess.run(cmd, input=data, timeout=60).returncode == 0
    assert subprocess.run(OKLOG + ["forward", f"127.0.0.1:{n.ports['fast']}"], input=b"tp-none 0\n", timeout=60).returncode == 0
    want = {"app-fast": b"tp-fast", "app-durable": b"tp-durable", "app-bulk": b"tp-bulk", "edge": b"tp-none"}
    for topic, prefix in want.items():
        count = 1 if topic == "edge" else 500
        body = wait_for(lambda t=topic, c=count: (b := n.query(topic=t).content).count(b"\n") >= c and b, timeout=20)
        recs = body.split(b"\n")[:-1]
        assert len(recs) == count
        assert {r.split(b" ")[1] for r in recs} == {topic.encode()}
        assert {r.split(b" ")[2] for r in recs} == {prefix}, topic
    r = subprocess.run(OKLOG + ["forward", "-topic", "no good", "127.0.0.1:1"], input=b"", capture_output=True, timeout=30)
    assert r.returncode == 2 and b"invalid topic" in r.stderr


def test_load_shedding_moves_forwarders(node_factory):
    busy = node_factory("busy", ["-ingest.max-connections", "1"]).start()
    free = node_factory("free").start()
    hog = socket.create_connection(("127.0.0.1", busy.ports["fast"]))
    wait_for(
        lambda: httpx.get(busy.url + "/cluster/state").json()["pipeline"]["ingest"]["connections"] == 1,
        what="hog connected",
    )
    addrs = [f"127.0.0.1:{x.ports['fast']}" for x in (busy, free)]

    def refused() -> int:
        return httpx.get(busy.url + "/cluster/state").json()["pipeline"]["ingest"]["connections_refused"]

    # Each forwarder picks one of the two at random: go on until one tried busy
    # (at least 6 runs; 6 that all pick free happen once in 64).
    k = 0
    while k < 6 or not refused():
        assert k < 40, "no forwarder tried the busy node"
        r = subprocess.run(OKLOG + ["forward", *addrs], input=b"shed %d\n" % k, capture_output=True, timeout=30)
        assert r.returncode == 0
        k += 1
    hog.close()
    body = wait_for(lambda: (b := free.query(q="shed").content).count(b"\n") >= k and b, timeout=20)
    assert sorted(numbers(body)) == list(range(k))  # every line, refused ones included, on free


def test_fast_mode_resends_the_last_chunk_when_reset_at_the_end():
    """A node that drops a connection after the forwarder's data went out (as one
    shedding load late does): the forwarder sees the reset when it closes and
    sends the last chunk again, on a new connection."""
    import struct
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(20)
    got: list[bytes] = []

    def serve():
        c, _ = srv.accept()  # the first: read a little, then reset
        c.recv(10)
        time.sleep(0.3)  # past the forwarder's immediate-refusal probe
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        c, _ = srv.accept()  # the second: take everything, close cleanly
        data = b""
        while chunk := c.recv(65536):
            data += chunk
        got.append(data)
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    port = srv.getsockname()[1]
    r = subprocess.run(OKLOG + ["forward", f"127.0.0.1:{port}"], input=b"only line\n", capture_output=True, timeout=30)
    t.join(20)
    srv.close()
    assert r.returncode == 0, r.stderr
    assert got == [b"only line\n"], r.stderr
    assert b"resending the last chunk" in r.stderr
