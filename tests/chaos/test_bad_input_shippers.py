"""Bad and hostile input on the shipper endpoints of one running node: OTLP,
Elasticsearch bulk, VictoriaLogs JSON lines and the Fluent forward port.

Every case gets a clear refusal (4xx with a reason, or for Fluent a closed
connection and nothing acked), the node's memory stays bounded, and afterwards
it still serves: ``/health``, and a good request on each endpoint is stored.
"""

from __future__ import annotations

import errno
import json
import os
import random
import socket
import sys
import time
import zlib
from pathlib import Path

import httpx
import msgpack
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import NodeProc, wait_for
from support import fluent_node

from oklog.ingest.otlp import _pb_varint

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

RSS_GROWTH_LIMIT = 400 << 20  # the node may grow this much over all the cases


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = fluent_node(tmp_path_factory.mktemp("badshippers"), "0.3s")
    n.start(timeout=30)
    yield n
    n.kill()


def rss(n: NodeProc) -> int:
    for line in Path(f"/proc/{n.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes gzip-compressed, built a chunk at a time."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\0" * (1 << 20)
    out = [c.compress(chunk) for _ in range(size >> 20)]
    return b"".join(out) + c.flush()


def post(n: NodeProc, path: str, body: bytes, ctype: str, gz: bool = False) -> httpx.Response:
    headers = {"Content-Type": ctype} | ({"Content-Encoding": "gzip"} if gz else {})
    return httpx.post(n.url + path, content=body, headers=headers, timeout=60)


def assert_serving(n: NodeProc) -> None:
    assert n.proc.poll() is None, f"node exited: {n.log_path.read_text()[-1500:]}"
    assert httpx.get(n.url + "/health", timeout=5).status_code == 200
    m = f"probe-{random.getrandbits(48):x}"
    otlp = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": f"{m} otlp"}}]}]}]}
    assert post(n, "/v1/logs", json.dumps(otlp).encode(), "application/json").status_code == 200
    es = b'{"index": {"_index": "probe"}}\n' + json.dumps({"message": f"{m} es"}).encode() + b"\n"
    assert post(n, "/_bulk", es, "application/x-ndjson").json()["errors"] is False
    assert post(n, "/insert/jsonline", json.dumps({"_msg": f"{m} vl"}).encode(), "application/x-ndjson").status_code == 200
    with socket.create_connection(("127.0.0.1", n.ports["fluent"]), timeout=10) as s:
        s.sendall(msgpack.packb(["probe", 1, {"log": f"{m} fluent"}, {"chunk": "p"}]))
        assert msgpack.unpackb(s.recv(100)) == {"ack": "p"}

    def stored():
        r = httpx.get(n.url + "/store/query", params={"q": m}, timeout=10)
        return r.content.count(b"\n") == 4

    wait_for(stored, timeout=20, what=f"the four probe records {m}")


def nested_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def test_otlp_bad_input(node):
    before = rss(node)
    huge_len = b"\x0a\xff\xff\xff\xff\x0f" + b"x" * 100
    deep_any = b""
    for _ in range(200_000):  # AnyValue arrays nested 200k deep, built by hand
        deep_any = b"\x2a" + _pb_varint(len(deep_any) + 2) + b"\x0a" + _pb_varint(len(deep_any)) + deep_any
        if len(deep_any) > 1 << 20:
            break
    cases = [
        (b"\x0a\x05\x12\x03\x12", "application/x-protobuf", False, 400),  # truncated
        (huge_len, "application/x-protobuf", False, 400),
        (bytes(random.Random(1).getrandbits(8) for _ in range(10_000)), "application/x-protobuf", False, 400),
        (gzip_bomb(256 << 20), "application/x-protobuf", True, 413),
        (b"[" * 200_000, "application/json", False, 400),
        (nested_json(100_000), "application/json", False, 400),
        (b'{"resourceLogs": {"x": 1}}', "application/json", False, 400),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": [1]}]}]}]}', "application/json", False, 400),
    ]
    for body, ctype, gz, status in cases:
        r = post(node, "/v1/logs", body, ctype, gz)
        assert r.status_code == status, (body[:30], r.status_code, r.text[:200])
    body = b"\x0a" + _pb_varint(len(deep_any) + 4) + b"\x12" + _pb_varint(len(deep_any) + 2) + b"\x12" + _pb_varint(len(deep_any)) + deep_any
    r = post(node, "/v1/logs", body, "application/x-protobuf")
    assert r.status_code in (200, 400), r.text  # a record too deep is rejected alone, or the request
    assert rss(node) - before < RSS_GROWTH_LIMIT
    assert_serving(node)


def test_esbulk_and_vlogs_bad_input(node):
    before = rss(node)
    for body, gz, status in [
        (b"garbage\n", False, 400),
        (b'{"index": {}}\n', False, 400),  # no source
        (b"[" * 200_000 + b"\n{}\n", False, 400),
        (b'{"index": []}\n{}\n', False, 400),
        (gzip_bomb(256 << 20), True, 413),
    ]:
        r = post(node, "/_bulk", body, "application/x-ndjson", gz)
        assert r.status_code == status, (body[:30], r.text[:200])
        assert r.json()["error"]["reason"]
    # a deep or non-object source is that item's error, not the request's
    r = post(node, "/_bulk", b'{"index": {"_index": "x"}}\n' + nested_json(100_000) + b"\n", "application/x-ndjson")
    assert r.status_code == 200 and r.json()["items"][0]["index"]["status"] == 400
    for body, gz, status in [(gzip_bomb(256 << 20), True, 413), (b"x" * (65 << 20), False, 413)]:
        assert post(node, "/insert/jsonline", body, "application/x-ndjson", gz).status_code == status
    r = post(node, "/insert/jsonline", nested_json(100_000) + b"\n", "application/x-ndjson")
    assert r.status_code in (200, 400)  # kept verbatim as a line that is not JSON, or refused
    assert rss(node) - before < RSS_GROWTH_LIMIT
    assert_serving(node)


def fluent_closes(n: NodeProc, data: bytes) -> bytes:
    """Send ``data``; what the node answers before closing the connection."""
    got = b""
    with socket.create_connection(("127.0.0.1", n.ports["fluent"]), timeout=40) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):
                got += chunk
        except OSError as e:  # the node may close first: reset, or shutdown on a closed socket
            if e.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                raise
    return got


def test_fluent_bad_input(node):
    before = rss(node)
    for data in [
        b"\xc1" * 10,
        b"\x93\xa3tag\x01\xc6\xff\xff\xff\xff" + b"x" * 1000,  # bin32 declaring 4 GiB
        b"\xdd\xff\xff\xff\xff",  # array32 declaring 4G elements
        b"\x91" * 1_000_000,  # nesting bomb
        os.urandom(1 << 20),
        msgpack.packb(["t", gzip_bomb(256 << 20), {"compressed": "gzip", "chunk": "bomb"}]),
        msgpack.packb(["t", b"\x92\x01", {"chunk": "trunc"}]),  # packed entries cut short
        msgpack.packb(["t", "not a time", {"log": "x"}, {"chunk": "wrongtype"}]),
    ]:
        reply = fluent_closes(node, data)
        assert b"ack" not in reply, (data[:20], reply)
    # a stalled message holds the node's buffer only for the partial-message timeout
    with socket.create_connection(("127.0.0.1", node.ports["fluent"]), timeout=10) as s:
        s.sendall(b"\x93\xa3tag\x01\xc6\x00\x10\x00\x00" + b"x" * 1000)  # 1 MiB declared, 1000 sent
        time.sleep(0.5)
        assert node.proc.poll() is None
    assert rss(node) - before < RSS_GROWTH_LIMIT
    assert_serving(node)
