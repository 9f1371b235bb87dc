"""oklog forward against a node that stops reading, and with no node at all."""

import contextlib
import signal
import socket
import subprocess
import time

import pytest
from conftest import OKLOG, wait_for


def numbers(body: bytes, word: bytes) -> set[int]:
    return {int(r.rsplit(b" ", 1)[1]) for r in body.split(b"\n")[:-1] if r.split(b" ")[2] == word}


AFTER = 100_000


def holding_all(a, b, count: int):
    """The node in use: the one holding (so having acknowledged) the whole first batch."""
    return next((x for x in (a, b) if len(numbers(x.query(q="before").content, b"before")) == count), None)


@contextlib.contextmanager
def past_a_stopped_node(node_factory, mode: str, exit_within: float):
    """Two nodes and ``oklog forward -mode mode`` to both: the first batch lands on one,
    that node is stopped (SIGSTOP), then the second batch is written and stdin closed.
    Yields (a, b, the other node, the forwarder's stderr) once it has exited 0; the
    stopped node resumes on the way out."""
    a = node_factory("a", ["-ingest.segment-flush-age", "0.3s"]).start()
    b = node_factory("b", ["-ingest.segment-flush-age", "0.3s"]).start()
    addrs = [f"127.0.0.1:{x.ports[mode]}" for x in (a, b)]
    fwd = subprocess.Popen(
        OKLOG + ["forward", "-mode", mode, "-write-timeout", "2s", "-backoff", "0.3s", *addrs],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stopped = None
    try:
        fwd.stdin.write(b"".join(b"before %d\n" % i for i in range(2000)))
        fwd.stdin.flush()
        # The node in use holds the first batch (queryable, so acknowledged).
        used = wait_for(lambda: holding_all(a, b, 2000), what="first batch on one node")
        other = b if used is a else a
        used.signal(signal.SIGSTOP)
        stopped = used
        # More than the socket buffers of a process that does not read hold: a
        # forwarder without a write timeout blocks in send() for good.
        pad = b"p" * 100
        fwd.stdin.write(b"".join(b"after %s %d\n" % (pad, i) for i in range(AFTER)))
        fwd.stdin.close()
        assert fwd.wait(exit_within) == 0, fwd.stderr.read().decode()
        yield a, b, other, fwd.stderr.read().decode()
    finally:
        if stopped is not None:
            stopped.signal(signal.SIGCONT)
        if fwd.poll() is None:
            fwd.kill()
            fwd.wait(10)


@pytest.mark.slow
def test_durable_forwarder_leaves_a_stopped_node_and_loses_nothing_acknowledged(node_factory):
    with past_a_stopped_node(node_factory, "durable", 60) as (a, b, other, err):
        # Every line acknowledged (exit 0) while the node it used is still stopped.
        assert "no acknowledgement for 2.0s" in err or "accepted no data" in err, err
        # Nothing written after the stop can have been acknowledged by the stopped
        # node: all of it is on the other one, before the stopped node resumes.
        got = wait_for(lambda: (g := numbers(other.query(q="after").content, b"after")) and len(g) == AFTER and g,
                       timeout=30, what="second batch on the other node")
        assert got == set(range(AFTER))
    before = numbers(a.query(q="before").content, b"before") | numbers(b.query(q="before").content, b"before")
    assert before == set(range(2000))
    assert "Error(" not in err and "b'" not in err


def hung_listener():
    """A TCP listener whose connections are accepted by the kernel and never read:
    a stopped process looks like this from the network."""
    srv = socket.create_server(("127.0.0.1", 0), backlog=16)
    return srv, f"127.0.0.1:{srv.getsockname()[1]}"


def free_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed: connections are refused


@pytest.mark.parametrize("mode", ["fast", "durable", "bulk"])
def test_gives_up_when_input_ended_and_no_node_is_reachable(mode):
    data = b"".join(b"undelivered line %d\n" % i for i in range(1000))
    t0 = time.monotonic()
    r = subprocess.run(
        OKLOG + ["forward", "-mode", mode, "-give-up", "2s", "-backoff", "0.2s", free_addr()],
        input=data, capture_output=True, timeout=60,
    )
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert time.monotonic() - t0 < 30
    assert f"giving up: no node accepted data for 2.0s after the input ended; {len(data)} bytes" in err, err
    assert ", 1000 lines, not delivered" in err
    assert err.count("connection refused") == 1, err  # said once, not at every retry
    assert "Error(" not in err and "[Errno" not in err


def test_gives_up_when_the_only_node_accepts_connections_but_reads_nothing():
    srv, addr = hung_listener()
    try:
        data = b"".join(b"stuck %d %s\n" % (i, b"z" * 200) for i in range(40000))  # more than socket buffers hold
        r = subprocess.run(
            OKLOG + ["forward", "-mode", "durable", "-write-timeout", "1s", "-give-up", "3s", addr],
            input=data, capture_output=True, timeout=90,
        )
    finally:
        srv.close()
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert f"{len(data)} bytes" in err and "not delivered" in err, err  # none was acknowledged
    assert "no acknowledgement for 1.0s" in err or "accepted no data for 1.0s" in err, err


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "bulk"])
def test_fast_and_bulk_forwarders_leave_a_stopped_node(node_factory, mode):
    """Fast and bulk too: the forwarder moves on instead of blocking for good.
    (Fast mode promises no more: bytes in the stopped node's buffers arrive
    only if it resumes. Bulk resends every unanswered frame.)"""
    with past_a_stopped_node(node_factory, mode, 90) as (_, _, other, err):
        assert "lost (" in err or "failed (" in err, err
        wait_for(lambda: numbers(other.query(q="after").content, b"after"), timeout=30, what="records on the other node")
        if mode == "bulk":  # nothing answered by the stopped node: all on the other
            got = wait_for(lambda: (g := numbers(other.query(q="after").content, b"after")) and len(g) == AFTER and g,
                           timeout=30, what="every frame on the other node")
            assert got == set(range(AFTER))
