"""A whole node in-process on real sockets (127.0.0.1, port 0) and real files."""

import zlib

import httpx
import pytest
import trio

from oklog.node.config import Addr, NodeConfig
from oklog.node.root import open_node
from oklog.records.record import ULID_LEN, encode_ulid, now_ms


def config(tmp_path, **kw) -> NodeConfig:
    lo = "127.0.0.1"
    return NodeConfig(
        api=Addr(lo, 0),
        ingest_fast=Addr(lo, 0),
        ingest_durable=Addr(lo, 0),
        ingest_bulk=Addr(lo, 0),
        cluster=Addr(lo, 0),
        ingest_path=str(tmp_path / "ingest"),
        store_path=str(tmp_path / "store"),
        segment_flush_age=kw.pop("segment_flush_age", 0.2),
        **kw,
    )


async def send(port: int, data: bytes) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        await stream.send_eof()
        await stream.receive_some(1)


async def query_until(client, url, n_lines, **params):
    with trio.fail_after(15):
        while True:
            r = await client.get(url + "/store/query", params=params)
            assert r.status_code == 200, r.text
            if r.content.count(b"\n") >= n_lines:
                return r
            await trio.sleep(0.1)


@pytest.fixture
async def node(tmp_path, nursery):
    n = open_node(config(tmp_path))
    await nursery.start(n.run)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{n.bound.api[1]}", timeout=10) as c:
        n.client = c  # type: ignore[attr-defined]
        yield n


@pytest.mark.trio
async def test_bytes_survive_exactly(node):
    lines = [
        b"Hello world!",
        b"percent %s %d %% %!",
        b"invalid utf8 \xff\xfe\xc3",
        b"nul \x00 byte",
        b"carriage \r return\r",
        b"",
        b"tab\tsep",
        b"long " + b"x" * 300_000,
    ]
    await send(node.bound.fast[1], b"".join(ln + b"\n" for ln in lines))
    r = await query_until(node.client, "", len(lines))
    records = r.content.split(b"\n")[:-1]
    got = [rec.split(b" ", 2)[2] for rec in records]
    assert got == lines
    ulids = [rec[:ULID_LEN] for rec in records]
    assert ulids == sorted(ulids) and len(set(ulids)) == len(ulids)
    assert {rec.split(b" ", 2)[1] for rec in records} == {b"default"}


@pytest.mark.trio
async def test_final_line_without_lf_is_kept(node):
    await send(node.bound.fast[1], b"first\nno newline at end")
    r = await query_until(node.client, "", 2)
    assert [rec.split(b" ", 2)[2] for rec in r.content.split(b"\n")[:-1]] == [
        b"first",
        b"no newline at end",
    ]


@pytest.mark.trio
async def test_query_filters_and_stats(node):
    await send(node.bound.fast[1], b"alpha one\nbeta two\nalpha three\n")
    await query_until(node.client, "", 3)
    c = node.client
    r = await c.get("/store/query", params={"q": "alpha"})
    assert r.content.count(b"\n") == 2
    assert r.headers["X-Oklog-Nodes-Queried"] == "1"
    assert int(r.headers["X-Oklog-Segments-Queried"]) >= 1
    assert int(r.headers["X-Oklog-Max-Data-Set-Size"]) > 0
    assert r.headers["X-Oklog-Error-Count"] == "0"
    # regex=false means substring: the dot is literal.
    r = await c.get("/store/query", params={"q": "alph.", "regex": "false"})
    assert r.content == b""
    r = await c.get("/store/query", params={"q": "^alph. (one|three)$", "regex": "true"})
    assert r.content.count(b"\n") == 2
    h = await c.head("/store/query", params={"q": "alpha"})
    assert h.status_code == 200 and h.content == b""
    assert h.headers["X-Oklog-Max-Data-Set-Size"] == r.headers["X-Oklog-Max-Data-Set-Size"]
    # A window in the past holds nothing.
    r = await c.get("/store/query", params={"from": "2001-01-01T00:00:00Z", "to": "2001-01-02T00:00:00Z"})
    assert r.status_code == 200 and r.content == b""


@pytest.mark.trio
@pytest.mark.parametrize(
    "params, reason",
    [
        ({"from": "5 minutes ago"}, "bad time"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "after"),
        ({"q": "(", "regex": "true"}, "invalid regex"),
        ({"regex": "perhaps"}, "not a boolean"),
        ({"q": "x" * 10000}, "limit"),
    ],
)
async def test_malformed_query_is_400(node, params, reason):
    r = await node.client.get("/store/query", params=params)
    assert r.status_code == 400
    assert reason in r.text


@pytest.mark.trio
async def test_ingest_api_and_replicate(node):
    c = node.client
    assert (await c.get("/ingest/next")).status_code == 404
    assert (await c.post("/ingest/commit", params={"id": "nope"})).status_code == 404
    assert (await c.get("/ingest/pending", params={"id": "nope"})).status_code == 404
    assert (await c.get("/ingest/read")).status_code == 400
    bad = await c.post("/store/replicate", content=b"not records\n")
    assert bad.status_code == 400
    # Stamped now: records older than the 7-day retention would be trashed by
    # the node's maintenance while the test runs.
    a, b = encode_ulid(now_ms(), 1), encode_ulid(now_ms(), 2)
    unsorted = b + b" t b\n" + a + b" t a\n"
    assert (await c.post("/store/replicate", content=unsorted)).status_code == 400
    good = a + b" t a\n" + b + b" t b\n"
    r = await c.post("/store/replicate", content=good)
    assert r.status_code == 200
    # named by its bounds, its topic and the CRC-32 of its bytes (written plain;
    # compaction compresses it later under a new name)
    assert r.text.strip() == f"{a.decode()}-{b.decode()}.t~{zlib.crc32(good):08x}.seg"
    # Idempotent: replicating the same segment twice keeps one copy of each record.
    assert (await c.post("/store/replicate", content=good)).status_code == 200
    q = await c.get("/store/query")
    assert q.content == good
    st = (await c.get("/cluster/state")).json()
    assert st["members"][0]["role"] == "ingeststore"
    assert st["pipeline"]["store"]["segments"] == 1


@pytest.mark.trio
async def test_durable_port_acknowledges(node):
    stream = await trio.open_tcp_stream("127.0.0.1", node.bound.durable[1])
    async with stream:
        await stream.send_all(b"d1\nd2\n")
        with trio.fail_after(5):
            ack = await stream.receive_some(100)
        assert ack == b"+2\n"
    await query_until(node.client, "", 2)


@pytest.mark.trio
async def test_many_connections_each_their_segment(node):
    async def one(i):
        await send(node.bound.fast[1], b"".join(b"conn%d line%d\n" % (i, j) for j in range(100)))

    async with trio.open_nursery() as n:
        for i in range(20):
            n.start_soon(one, i)
    r = await query_until(node.client, "", 2000)
    got = r.content.split(b"\n")[:-1]
    assert len(got) == 2000
    assert sorted(got) == got


def test_record_over_limit_is_split(tmp_path):
    async def main():
        n = open_node(config(tmp_path, max_record_size=1000))
        async with trio.open_nursery() as nursery:
            await nursery.start(n.run)
            await send(n.bound.fast[1], b"a" * 2500 + b"\nshort\n" + b"b" * 1800)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{n.bound.api[1]}") as c:
                r = await query_until(c, "", 6)
            nursery.cancel_scope.cancel()
        return n, r

    n, r = trio.run(main)
    lines = [rec.split(b" ", 2)[2] for rec in r.content.split(b"\n")[:-1]]
    assert lines == [b"a" * 1000, b"a" * 1000, b"a" * 500, b"short", b"b" * 1000, b"b" * 800]
    assert n.ingest is not None and n.ingest.listeners.records_split == 3
