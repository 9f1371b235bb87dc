"""``oklog stream`` against real nodes: complete at full rate, honest about
drops (on stderr, counted), and resuming on another member when its node dies."""

import collections
import os
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest
from conftest import OKLOG, sample_lines, wait_for
from test_cluster import cluster, node_id, states


def subscribers(n) -> int:
    return httpx.get(n.url + "/cluster/state", timeout=5).json()["pipeline"]["streams"]["subscribers"]


def count_lines(path, total: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n = path.read_bytes().count(b"\n")
        if n >= total:
            break
        time.sleep(0.2)
    return n


@pytest.mark.slow
def test_a_burst_streamed_to_a_file_arrives_complete(node_factory, tmp_path):
    n = node_factory().start()
    total = 400_000
    lines = [b"%d %s" % (i, ln) for i, ln in enumerate(sample_lines(total))]
    out_path = tmp_path / "out"
    with open(out_path, "wb") as out, open(tmp_path / "err", "wb") as err:
        p = subprocess.Popen(OKLOG + ["stream", "-store", n.api], stdout=out, stderr=err)
    try:
        wait_for(lambda: subscribers(n) >= 1, what="oklog stream subscribed")
        with socket.create_connection(("127.0.0.1", n.ports["fast"])) as c:
            c.sendall(b"\n".join(lines) + b"\n")
        got = count_lines(out_path, total, 90)
    finally:
        p.terminate()
        p.wait(timeout=10)
    errors = (tmp_path / "err").read_bytes()
    assert got == total, f"{got} of {total} lines; stderr: {errors[-500:]!r}"
    assert sorted(out_path.read_bytes().split(b"\n")[:-1]) == sorted(lines)
    assert b"dropped" not in errors


PAD = b"x" * 100  # 300,000 records of this size overrun the node's 16 MiB ring


@pytest.mark.slow
def test_drops_are_counted_on_stderr_never_among_the_records(node_factory, tmp_path):
    n = node_factory().start()
    total = 300_000
    p = subprocess.Popen(OKLOG + ["stream", "-store", n.api], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    try:
        wait_for(lambda: subscribers(n) >= 1, what="oklog stream subscribed")
        # Nobody reads its stdout meanwhile: it blocks, and the node drops for it.
        with socket.create_connection(("127.0.0.1", n.ports["fast"])) as c:
            c.sendall(b"".join(b"burst %d %s\n" % (i, PAD) for i in range(total)))
        wait_for(
            lambda: httpx.get(n.url + "/cluster/state").json()["pipeline"]["streams"]["dropped"] > 0,
            what="the node drops for the blocked client",
        )
        out = b""
        fd = p.stdout.fileno()
        os.set_blocking(fd, False)
        quiet_since = time.monotonic()
        deadline = time.monotonic() + 60
        while time.monotonic() - quiet_since < 3 and time.monotonic() < deadline:
            try:
                data = os.read(fd, 1 << 20)
            except BlockingIOError:
                time.sleep(0.05)
                continue
            out += data
            quiet_since = time.monotonic()
    finally:
        p.terminate()
        p.wait(timeout=10)
    err = p.stderr.read().decode()
    assert b"oklog" not in out  # no notice among the records
    got = out.count(b"\n")
    assert set(out.split(b"\n")[:-1]) <= {b"burst %d %s" % (i, PAD) for i in range(total)}
    noted = [int(ln.split(" dropped ")[1].split()[0]) for ln in err.splitlines() if " dropped " in ln]
    assert noted, err
    # Every record was either printed or counted as dropped on stderr.
    assert got + sum(noted) == total, (got, sum(noted), err)
    assert f"({sum(noted)} dropped in all)" in err


@pytest.mark.slow
def test_stream_resumes_on_another_member_without_gap_or_duplicate(node_factory, tmp_path):
    a, b, c = cluster(node_factory, 3, factor=2)
    wait_for(lambda: all(len(states(n)) == 3 for n in (a, b, c)), what="3 members")
    out_path = tmp_path / "out"
    with open(out_path, "wb") as out, open(tmp_path / "err", "wb") as err:
        p = subprocess.Popen(
            OKLOG + ["stream", "-store", a.api, "-q", "seq", "-catchup", "6s"], stdout=out, stderr=err
        )
    total = 4000
    sent = threading.Event()

    def produce() -> None:
        # Into b and c, which stay up, 40 records every 50 ms (about 5 s).
        socks = [socket.create_connection(("127.0.0.1", n.ports["fast"])) for n in (b, c)]
        for k in range(0, total, 40):
            socks[(k // 40) % 2].sendall(b"".join(b"seq %05d\n" % i for i in range(k, k + 40)))
            time.sleep(0.05)
        for s in socks:
            s.close()
        sent.set()

    try:
        wait_for(lambda: subscribers(b) >= 1 and subscribers(c) >= 1, what="the stream follows b and c")
        producer = threading.Thread(target=produce)
        producer.start()
        wait_for(lambda: out_path.read_bytes().count(b"\n") >= 1000, what="records streaming")
        a.signal(signal.SIGKILL)
        producer.join(timeout=30)
        assert sent.is_set()
        got = count_lines(out_path, total, 30)
        # The catch-up ends with what it found and what it could not know.
        wait_for(lambda: "caught up" in (tmp_path / "err").read_text(), timeout=30, what="the catch-up report")
        time.sleep(1)  # anything more it would print (nothing should come)
    finally:
        p.terminate()
        p.wait(timeout=10)
    errors = (tmp_path / "err").read_text()
    lines = out_path.read_bytes().split(b"\n")[:-1]
    counts = collections.Counter(lines)
    missing = [i for i in range(total) if counts[b"seq %05d" % i] == 0]
    assert not missing, f"{len(missing)} missing ({missing[:5]}...); got {got}; stderr: {errors}"
    assert max(counts.values()) == 1, f"duplicates: {[k for k, v in counts.items() if v > 1][:5]}"
    assert len(lines) == total
    assert "resumed from" in errors
    # a (an ingest member) is down: what it had not handed to the store is named.
    assert f"records {node_id(a)} (" in errors and "missing until it is back" in errors, errors


def test_window_is_seconds_or_a_go_duration(node_factory):
    """The original OK Log client sends ``window`` as Go's Duration.String()."""
    n = node_factory().start()
    for window in ("3s", "500ms", "1m30s", "1h0m0s", "0s", "3", "2.5"):
        query = {"q": "tick", "regex": "false", "window": window}
        with httpx.stream("GET", n.url + "/store/stream", params=query, timeout=10) as r:
            assert r.status_code == 200, (window, r.read())
    for bad in ("3x", "s", "-1s", "2h"):
        r = httpx.get(n.url + "/store/stream", params={"window": bad}, timeout=10)
        assert r.status_code == 400 and "window" in r.text, (bad, r.text)
    # Records flow with a Go-duration window.
    with httpx.stream("GET", n.url + "/store/stream", params={"q": "tick", "window": "3s"}, timeout=10) as r:
        wait_for(lambda: subscribers(n) >= 1, what="subscribed")
        n.send_fast(b"tick one\ntock\n")
        for chunk in r.iter_raw():
            assert chunk.endswith(b" default tick one\n"), chunk
            break
