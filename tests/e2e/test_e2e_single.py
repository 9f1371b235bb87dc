"""The quickstart and restarts, with real `oklog` subprocesses."""

import subprocess
import time

from conftest import OKLOG, sample_lines, wait_for


def oklog(*args, input=None, timeout=30):
    return subprocess.run(OKLOG + list(args), input=input, capture_output=True, timeout=timeout)


def test_quickstart(node_factory):
    n = node_factory().start()
    fwd = oklog("forward", f"127.0.0.1:{n.ports['fast']}", input=b"Hello world!\nsomething else\n")
    assert fwd.returncode == 0, fwd.stderr

    def hello():
        r = oklog("query", "-store", n.api, "-from", "5m", "-q", "Hello")
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert wait_for(hello, what="Hello in query") == b"Hello world!\n"
    # Double-dash flags, -ulid/-time and -stats
    r = oklog("query", "--store", n.api, "--from", "5m", "--q", "else", "-ulid", "-time")
    parts = r.stdout.split(b" ")
    assert len(parts[0]) == 26 and parts[1].endswith(b"Z") and r.stdout.endswith(b"something else\n")
    r = oklog("query", "-store", n.api, "-stats")
    assert b"segments queried" in r.stdout
    bad = oklog("query", "-store", n.api, "-q", "(", "-regex")
    assert bad.returncode != 0 and b"invalid regex" in bad.stderr


def test_corpus_roundtrip_and_grep_semantics(node_factory, tmp_path):
    n = node_factory(args=["-ingest.segment-flush-age", "0.3s"]).start()
    lines = sample_lines(5000, seed=3)
    data = b"".join(ln + b"\n" for ln in lines)
    assert oklog("forward", f"127.0.0.1:{n.ports['fast']}", input=data).returncode == 0

    def all_in():
        r = oklog("query", "-store", n.api, "-from", "1h")
        return r.stdout.count(b"\n") == len(lines) and r.stdout

    out = wait_for(all_in, what="all lines queryable")
    assert out == data  # one connection: ULID order is input order
    f = tmp_path / "in.txt"
    f.write_bytes(data)
    for q, flag in [("Exception", "-F"), ("Failed password", "-F"), ("^[0-9]+ [0-9]+ INFO", "-E")]:
        want = subprocess.run(["grep", "-a", flag, "-e", q, str(f)], capture_output=True, env={"LC_ALL": "C"}).stdout
        args = ["query", "-store", n.api, "-from", "1h", "-q", q] + (["-regex"] if flag == "-E" else [])
        assert oklog(*args).stdout == want, q


def test_kill_and_restart_recovers_everything(node_factory):
    n = node_factory(args=["-ingest.segment-flush-age", "30s"]).start()
    # Durable port: acknowledged records are on disk before the ack.
    import socket

    s = socket.create_connection(("127.0.0.1", n.ports["durable"]), timeout=10)
    s.sendall(b"".join(b"durable %d\n" % i for i in range(1000)))
    acked = 0
    while acked < 1000:
        acked += sum(int(x) for x in s.recv(1000).split(b"\n")[:-1] if x)
    n.kill()  # SIGKILL: the active segment was never flushed
    s.close()
    n.start()
    r = wait_for(
        lambda: (out := n.query(q="durable").content).count(b"\n") >= 1000 and out,
        what="records after restart",
    )
    got = sorted(int(rec.rsplit(b" ", 1)[1]) for rec in r.split(b"\n")[:-1])
    assert got == list(range(1000))


def test_sigterm_drains_active_segments(node_factory):
    n = node_factory(args=["-ingest.segment-flush-age", "60s"]).start()
    n.send_fast(b"before shutdown\n")
    time.sleep(0.3)
    assert n.stop() == 0
    store = n.workdir / "store"
    from oklog.records import segfile

    data = b"".join(segfile.decode(p.read_bytes()) for p in store.glob("*.seg"))
    assert data.endswith(b" default before shutdown\n")
    assert not [p for p in (n.workdir / "ingest").iterdir()]


def test_oklog_ingeststore_alias_and_help():
    r = oklog("ingeststore", "-h")
    assert r.returncode == 0 and b"-ingest.segment-flush-size" in r.stdout
    r = oklog("run", "-api", "tcp://127.0.0.1:notaport")
    assert r.returncode != 0
    r = oklog("nosuchcommand")
    assert r.returncode == 2 and b"unknown command" in r.stderr


def test_testsvc_emits_at_rate():
    start = time.monotonic()
    r = oklog("testsvc", "-rate", "50", "-count", "20", "-id", "svc")
    assert time.monotonic() - start >= 0.3
    lines = r.stdout.split(b"\n")[:-1]
    assert len(lines) == 20 and lines[0].startswith(b"svc 0000000001")


def test_forward_reconnects_to_second_node(node_factory):
    a = node_factory("a").start()
    b = node_factory("b").start()
    a.kill()
    fwd = subprocess.Popen(
        OKLOG + ["forward", f"127.0.0.1:{a.ports['fast']}", f"127.0.0.1:{b.ports['fast']}"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    fwd.communicate(b"".join(b"n%d\n" % i for i in range(100)), timeout=30)
    assert fwd.returncode == 0
    out = wait_for(lambda: (c := b.query().content).count(b"\n") >= 100 and c, what="lines on b")
    assert sorted(int(r.rsplit(b" n", 1)[1]) for r in out.split(b"\n")[:-1]) == list(range(100))
