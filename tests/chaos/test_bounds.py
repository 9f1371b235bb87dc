"""Bounds on what arrives from the network (issue 15), against real nodes on
127.0.0.1: push requests that would expand, bodies held in flight, deep JSON,
idle and excess connections, syslog framing, client ULIDs, immutable records."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from conftest import wait_for

from oklog.ingest.otlp import _pb_varint

pytestmark = pytest.mark.timeout(120)


def _state(n) -> dict:
    return httpx.get(n.url + "/cluster/state", timeout=10).json()


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.fixture
def node(node_factory):
    return node_factory("n0", ["-ingest.segment-flush-age", "0.3s", "-store.segment-target-age", "0.3s"]).start()


# -- push requests that would expand -----------------------------------------------------


def _pb_tiny_entries(n: int, labels: bytes = b'{job="x"}') -> bytes:
    """A logproto.PushRequest of one stream with ``n`` 5-byte entries (line "x", no timestamp)."""
    entry = b"\x12\x03\x12\x01x"  # StreamAdapter.entries = EntryAdapter{line: "x"}
    stream = b"\x0a" + _pb_varint(len(labels)) + labels + entry * n
    return b"\x0a" + _pb_varint(len(stream)) + stream


def test_loki_protobuf_of_tiny_entries_is_413_before_expanding(node):
    import cramjam

    # 13M entries of 5 bytes: 65 MB decompressed, a few MB on the wire.
    body = bytes(cramjam.snappy.compress_raw(_pb_tiny_entries(13_000_000)))
    base = _peak_rss_kib(node.proc.pid)
    r = httpx.post(
        node.url + "/loki/api/v1/push", content=body,
        headers={"Content-Type": "application/x-protobuf"}, timeout=60,
    )
    assert r.status_code == 413, r.text
    assert "records" in r.text
    # Before the bound this request became 13M records and 1.6 GB.
    assert _peak_rss_kib(node.proc.pid) - base < 400 * 1024
    st = _state(node)["pipeline"]["ingest"]["http"]
    assert st["records"] == 0 and st["rejected"] == 1


def test_loki_long_labels_on_tiny_entries_is_413(node):
    import cramjam

    labels = b'{job="x", pad="' + b"p" * 8000 + b'"}'
    body = bytes(cramjam.snappy.compress_raw(_pb_tiny_entries(20_000, labels)))
    r = httpx.post(
        node.url + "/loki/api/v1/push", content=body,
        headers={"Content-Type": "application/x-protobuf"}, timeout=60,
    )
    assert r.status_code == 413, r.text
    assert "bytes of records" in r.text
    streams = [{"stream": {"job": "x", "pad": "p" * 8000}, "values": [["1", "x"]] * 20_000}]
    r = httpx.post(node.url + "/loki/api/v1/push", json={"streams": streams}, timeout=60)
    assert r.status_code == 413, r.text
    # The same entries under a short label set are taken.
    streams[0]["stream"] = {"job": "x"}
    r = httpx.post(node.url + "/loki/api/v1/push", json={"streams": streams}, timeout=60)
    assert r.status_code == 204, r.text


def test_jsonline_of_empty_objects_is_413(node):
    body = b"{}\n" * (20 << 20)  # 60 MiB, 21M lines
    base = _peak_rss_kib(node.proc.pid)
    r = httpx.post(node.url + "/ingest/jsonline", content=body, timeout=60)
    assert r.status_code == 413, r.text
    assert _peak_rss_kib(node.proc.pid) - base < 400 * 1024
    assert _state(node)["pipeline"]["ingest"]["http"]["records"] == 0


def test_deep_json_line_is_that_lines_error(node):
    deep = b"[" * 100_000 + b"]" * 100_000
    body = b'{"message": "before"}\n' + deep + b'\n{"message": "after"}\n'
    r = httpx.post(node.url + "/ingest/jsonline", content=body, params={"topic": "deep"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["records"] == 3 and r.json()["invalid_json"] == 1
    wait_for(lambda: b"after" in node.query(q="after").content, 15, what="valid lines stored")
    assert b"before" in node.query(q="before").content
    # A Loki JSON body nested that deep is a 400, not a 500.
    r = httpx.post(node.url + "/loki/api/v1/push", content=deep, timeout=30)
    assert r.status_code == 400, r.text


# -- bodies in flight ------------------------------------------------------------------------


def _stalled_post(n, path: str, declared: int, send: int) -> socket.socket:
    """A POST that stops sending its body; signed as a member (the endpoint is internal)."""
    from oklog.cluster.keyring import Keyring
    from oklog.net.auth import NodeKeys

    proof = NodeKeys(Keyring.load(n.key_path)).sign("POST", path.encode())
    s = socket.create_connection(("127.0.0.1", n.ports["api"]), timeout=10)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Oklog-Node: {proof}\r\n"
              f"Content-Length: {declared}\r\n\r\n".encode())
    s.sendall(b"0" * send)
    return s


def test_stalled_replicate_bodies_are_bounded_by_the_budget(node_factory):
    n = node_factory("n0", ["-api.max-bodies-in-flight", "8MiB"]).start()
    socks = []
    try:
        # Two stalled bodies that fit hold what they sent ...
        for _ in range(2):
            socks.append(_stalled_post(n, "/store/replicate", 5 << 20, 3 << 20))
        wait_for(lambda: _state(n)["pipeline"]["http"]["bodies_in_flight_bytes"] >= 6 << 20, 20,
                 what="bodies charged")
        # ... and the next that cannot fit is refused at once, before its body is read.
        s = _stalled_post(n, "/store/replicate", 5 << 20, 0)
        socks.append(s)
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
        assert b"retry-after: 1" in reply.lower()
        # So does jsonline, which shares the budget.
        r = httpx.post(n.url + "/ingest/jsonline", content=b'{"message": "x"}\n' * 200_000, timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert httpx.get(n.url + "/health", timeout=10).status_code == 200
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: _state(n)["pipeline"]["http"]["bodies_in_flight_bytes"] == 0, 20, what="budget given back")
    r = httpx.post(n.url + "/ingest/jsonline", content=b'{"message": "x"}\n' * 200_000, timeout=30)
    assert r.status_code == 200, r.text
    assert _state(n)["pipeline"]["http"]["bodies_refused"] >= 2


def test_a_body_larger_than_the_budget_is_413(node_factory):
    n = node_factory("n0", ["-api.max-bodies-in-flight", "1MiB"]).start()
    r = httpx.post(n.url + "/ingest/jsonline", content=b'{"message": "x"}\n' * 100_000, timeout=30)
    assert r.status_code == 413, r.text
    assert json.dumps(_state(n)["pipeline"]["http"])  # reported


# -- connections -----------------------------------------------------------------------------


def _closed_by_peer(s: socket.socket, timeout: float) -> bool:
    """True once the node closes (or resets) the connection, False if it stays open."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


def _refused(port: int) -> bool:
    try:
        s = _connect(port)
    except ConnectionResetError:
        return True
    with s:
        return _closed_by_peer(s, 10)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def test_idle_connections_time_out_on_every_tcp_listener(node_factory):
    from conftest import free_port

    syslog = free_port()
    n = node_factory("n0", [
        "-ingest.idle-timeout", "1s", "-ingest.syslog", f"127.0.0.1:{syslog}",
        "-ingest.segment-flush-age", "0.3s", "-store.segment-target-age", "0.3s",
    ]).start()
    ports = [n.ports["fast"], n.ports["durable"], n.ports["bulk"], syslog]
    socks = [_connect(p) for p in ports]
    try:
        socks[0].sendall(b"idle partial line")
        for s, p in zip(socks, ports, strict=True):
            assert _closed_by_peer(s, 20), f"port {p} kept an idle connection"
    finally:
        for s in socks:
            s.close()
    ing = _state(n)["pipeline"]["ingest"]
    assert ing["idle_closed"] == 2 and ing["bulk"]["idle_closed"] == 1 and ing["syslog"]["idle_closed"] == 1
    assert ing["gate"]["open"] == 0
    # The partial line of the closed connection was kept, as on any close.
    wait_for(lambda: b"idle partial line" in n.query(q="idle partial").content, 15, what="partial line")


def test_max_connections_covers_every_tcp_listener(node_factory):
    from conftest import free_port

    syslog = free_port()
    n = node_factory("n0", ["-ingest.max-connections", "4", "-ingest.syslog", f"127.0.0.1:{syslog}"]).start()
    held = [_connect(n.ports["fast"]), _connect(n.ports["durable"]), _connect(n.ports["bulk"]), _connect(syslog)]
    try:
        wait_for(lambda: _state(n)["pipeline"]["ingest"]["gate"]["open"] == 4, 20, what="4 connections open")
        for port in (n.ports["bulk"], syslog, n.ports["fast"]):
            assert _refused(port), f"port {port} took a fifth connection"
        assert _state(n)["pipeline"]["ingest"]["gate"]["refused"] == 3
        # A closed one frees its slot: a bulk frame is taken again.
        held.pop(0).close()
        wait_for(lambda: _state(n)["pipeline"]["ingest"]["gate"]["open"] == 3, 20, what="slot freed")
        with _connect(n.ports["bulk"]) as s:
            from oklog.records.record import ULIDSource, stamp_lines

            body = stamp_lines([b"bulk after a freed slot"], ULIDSource().headers(1, b"default"))
            s.sendall(b"BULK %d\n" % len(body) + body)
            s.settimeout(30)
            assert s.recv(100).startswith(b"OK 1")
    finally:
        for s in held:
            s.close()


def test_fd_limit_is_raised_and_ingest_floods_leave_health_answering(node_factory):
    n = node_factory("n0", ["-ingest.idle-timeout", "60s"])
    inner = n.command
    n.command = lambda: ["prlimit", "--nofile=400:400", "--"] + inner()  # type: ignore[method-assign]
    n.start()
    gate = _state(n)["pipeline"]["ingest"]["gate"]
    assert gate["nofile"] == 400 and 0 < gate["fd_budget"] < 400 // 2
    socks = []
    try:
        for _ in range(450):  # more than the process has descriptors
            try:
                socks.append(_connect(n.ports["fast"]))
            except ConnectionResetError:
                pass
        for _ in range(3):
            assert httpx.get(n.url + "/health", timeout=5).status_code == 200
            r = httpx.post(n.url + "/ingest/jsonline", content=b'{"message": "during the flood"}\n', timeout=10)
            assert r.status_code == 200, r.text
        assert _state(n)["pipeline"]["ingest"]["gate"]["refused_fds"] > 0
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: b"during the flood" in n.query(q="during the flood").content, 20, what="jsonline records")


def test_fd_soft_limit_is_raised_to_the_hard_limit(node_factory):
    n = node_factory("n0")
    inner = n.command
    n.command = lambda: ["prlimit", "--nofile=300:3000", "--"] + inner()  # type: ignore[method-assign]
    n.start()
    assert _state(n)["pipeline"]["ingest"]["gate"]["nofile"] == 3000
    with open(f"/proc/{n.proc.pid}/limits") as f:
        line = next(ln for ln in f if ln.startswith("Max open files"))
    assert line.split()[3:5] == ["3000", "3000"]


def test_slow_header_api_clients_are_closed(node_factory):
    n = node_factory("n0", ["-api.idle-timeout", "1s"]).start()
    socks = [_connect(n.ports["api"]) for _ in range(20)]
    try:
        for s in socks:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        for s in socks:
            assert _closed_by_peer(s, 15), "a slow-header client kept its connection"
    finally:
        for s in socks:
            s.close()
    assert httpx.get(n.url + "/health", timeout=5).status_code == 200


# -- client ULIDs and immutable records ------------------------------------------------------


def _rec(ms: int, rand: int, text: bytes, topic: bytes = b"default") -> bytes:
    from oklog.records.record import encode_ulid

    return encode_ulid(ms, rand) + b" " + topic + b" " + text + b"\n"


def _hour_ago() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))


def _replicate(n, body: bytes) -> httpx.Response:
    return httpx.post(n.url + "/store/replicate", content=body, timeout=30, auth=n.member_auth())


def _bulk(n, body: bytes) -> bytes:
    with _connect(n.ports["bulk"]) as s:
        s.sendall(b"BULK %d\n" % len(body) + body)
        s.settimeout(30)
        return s.recv(1000)


def _metric(n, name: str) -> float:
    for line in httpx.get(n.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {name}")


def test_replicated_record_keeps_its_text_through_compaction(node):
    now = int(time.time() * 1000)
    r1, r2, r3 = (now, 1), (now, 2), (now, 3)
    assert _replicate(node, _rec(*r1, b"original text") + _rec(*r3, b"third")).status_code == 200
    r = _replicate(node, _rec(*r1, b"forged text") + _rec(*r2, b"second"))
    assert r.status_code == 200, r.text
    assert r.headers["x-oklog-conflicts"] == "1"
    # The same record again is a retry, not a conflict.
    r = _replicate(node, _rec(*r3, b"third"))
    assert r.status_code == 200 and r.headers["x-oklog-held"] == "1" and r.headers["x-oklog-conflicts"] == "0"

    def compacted() -> bool:
        st = httpx.get(node.url + "/store/segments", timeout=10, auth=node.member_auth()).json()
        return len(st["segments"]) == 1 and not st["compaction_pending"]

    wait_for(compacted, 60, what="compaction into one segment")
    body = node.query(**{"from": _hour_ago()}).content
    assert body.count(b"\n") == 3
    assert b"original text" in body and b"forged text" not in body
    assert _state(node)["pipeline"]["store"]["record_conflicts"] == 1
    assert _metric(node, "oklog_store_record_conflicts") == 1


def test_bulk_records_are_immutable_once_stored(node):
    from oklog.records.record import ULIDSource

    ulid = ULIDSource().headers(1, b"default")[0][:26]
    assert _bulk(node, ulid + b" default bulk original\n").startswith(b"OK 1")
    assert _bulk(node, ulid + b" default bulk forged\n").startswith(b"OK 1")
    wait_for(lambda: _state(node)["pipeline"]["store"]["record_conflicts"] == 1, 30, what="conflict counted")
    body = node.query(q="bulk").content
    assert b"bulk original" in body and b"forged" not in body


def test_ulids_outside_the_window_are_refused(node):
    from oklog.records.record import encode_ulid

    future = encode_ulid(int(time.time() * 1000) + 3600_000, 1)  # an hour ahead
    far_future = b"7ZZZZZZZZZZZZZZZZZZZZZZZZZ"  # year 10889
    past = encode_ulid(1000, 1)  # 1970
    for ulid in (future, far_future):
        body = ulid + b" default from the future\n"
        r = _replicate(node, body)
        assert r.status_code == 400 and "future" in r.text, r.text
        assert _bulk(node, body).startswith(b"ERR refused")
    r = _bulk(node, past + b" default from 1970\n")
    assert r.startswith(b"ERR refused") and b"retention" in r
    # Replicated records older than retention are dropped (retention would remove them).
    now = int(time.time() * 1000)
    r = _replicate(node, past + b" default from 1970\n" + _rec(now, 9, b"from now"))
    assert r.status_code == 200 and r.headers["x-oklog-expired"] == "1", r.text
    wait_for(lambda: b"from now" in node.query(**{"from": _hour_ago()}).content, 15, what="current record stored")
    assert httpx.get(node.url + "/store/segments", timeout=10, auth=node.member_auth()).json()["segments"][0]["first"] >= encode_ulid(now - 60_000, 0).decode()
    st = _state(node)["pipeline"]
    assert st["store"]["refused_future"] == 2 and st["ingest"]["bulk"]["refused_ulids"] == 3
    # Nothing from outside the window reached the store, so nothing can steer eviction.
    assert all(s["last"] < future.decode() for s in httpx.get(node.url + "/store/segments", timeout=10, auth=node.member_auth()).json()["segments"])


def test_stalled_partial_lines_and_frames_are_bounded_node_wide(node_factory):
    from conftest import free_port

    syslog = free_port()
    n = node_factory("n0", ["-ingest.syslog", f"127.0.0.1:{syslog}", "-ingest.segment-flush-age", "0.3s",
                            "-store.segment-target-age", "0.3s"]).start()
    chunk = b"s" * (900 << 10)
    socks = []
    try:
        for i in range(90):  # 90 x 900 KiB = 79 MiB of incomplete data, over the 64 MiB budget
            if i % 2:
                s = _connect(syslog)
                s.sendall(b"1000000 <13>stalled frame " + chunk)
            else:
                s = _connect(n.ports["fast"])
                s.sendall(b"stalled line " + chunk)
            socks.append(s)
        wait_for(lambda: _state(n)["pipeline"]["ingest"]["gate"]["shed"] > 0, 30, what="connections shed")
        gate = _state(n)["pipeline"]["ingest"]["gate"]
        assert gate["buffered_bytes"] <= (64 << 20) + (1 << 20)
        with _connect(syslog) as s:
            s.sendall(b"<13>syslog still served\n")
        n.send_fast(b"fast still served\n")
        wait_for(lambda: b"still served" in n.query(q="still served").content
                 and n.query(q="still served").content.count(b"\n") == 2, 20, what="new records")
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: _state(n)["pipeline"]["ingest"]["gate"]["buffered_bytes"] == 0, 20, what="buffers released")


def test_slow_header_flood_leaves_health_answering(node_factory):
    n = node_factory("n0")  # the default 30 s API idle timeout: the flood outlives it
    inner = n.command
    n.command = lambda: ["prlimit", "--nofile=400:400", "--"] + inner()  # type: ignore[method-assign]
    n.start()
    socks = []
    try:
        for _ in range(600):  # more than the process has descriptors
            try:
                s = _connect(n.ports["api"])
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: a")
                socks.append(s)
            except OSError:
                pass
        for _ in range(3):
            assert httpx.get(n.url + "/health", timeout=5).status_code == 200
        conns = _state(n)["pipeline"]["http"]["connections"]
        assert conns["evicted"] > 0 and conns["open"] <= conns["cap"] + 1
        # Requests in progress are never the ones evicted: a big body still arrives whole.
        r = httpx.post(n.url + "/ingest/jsonline", content=b'{"message": "amid slow clients"}\n' * 10_000, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        for s in socks:
            s.close()
