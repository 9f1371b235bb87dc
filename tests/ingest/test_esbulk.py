"""The Elasticsearch bulk endpoint: parsing, per-item answers, the handshake,
on a real socket with real segment files."""

from __future__ import annotations

import gzip
import json
import os
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import trio
from support import http_ingest_server

from oklog.ingest.esbulk import parse_bulk
from oklog.net.http import HTTPError
from oklog.records.record import split_record, ulid_ms

TIMEOUT = 20


def ndjson(*objs) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def test_parse_bulk_items_and_lines():
    ts = "2026-11-30T10:00:00.5Z"
    body = ndjson(
        {"index": {"_index": "web.logs-2026.11.30", "_id": "abc"}},
        {"@timestamp": ts, "message": "GET /", "host": {"name": "h"}, "status": 200},
        {"create": {}},
        {"msg": "from the path index"},
        {"delete": {"_index": "x", "_id": "1"}},
        {"update": {"_index": "x", "_id": "1"}},
        {"doc": {"a": 1}},
        {"index": {"_index": "x"}},
        ["not", "an", "object"],
        {"index": {"_index": "x"}},
        {"no_message": 1},
    )
    body = body.replace(b'{"no_message": 1}', b'{"no_message":  1}')  # kept byte for byte
    batch, items = parse_bulk(body + b"\n\n", "path-index", b"default")
    assert [(i.action, i.index, i.status) for i in items] == [
        ("index", "web.logs-2026.11.30", 201),
        ("create", "path-index", 201),
        ("delete", "x", 400),
        ("update", "x", 400),
        ("index", "x", 400),
        ("index", "x", 201),
    ]
    assert batch.groups == [
        (b"web_logs-2026_11_30", [b'{host="{\\"name\\":\\"h\\"}",status=200} GET /']),
        (b"path-index", [b"from the path index"]),
        (b"x", [b'{"no_message":  1}']),
    ]
    t = datetime(2026, 11, 30, 10, 0, 0, 500000, tzinfo=UTC).timestamp()
    assert batch.times == [[int(t) * 10**9 + 500_000_000], [None], [None]]


@pytest.mark.parametrize(
    "body",
    [
        b"not json\n{}\n",
        b'{"index": {}, "create": {}}\n{}\n',  # two actions in one line
        b'{"index": 5}\n{}\n',
        b'{"frobnicate": {}}\n{}\n',
        b'{"index": {"_index": "x"}}\n',  # no source line
        b"[" * 50_000 + b"\n",
    ],
)
def test_parse_bulk_rejects_malformed_actions(body):
    with pytest.raises(HTTPError) as e:
        parse_bulk(body, None, b"default")
    assert e.value.status == 400


@pytest.fixture
async def env(tmp_path, nursery):
    root = tmp_path / "ingest"
    return root, await http_ingest_server(nursery, root)


def records(root):
    out = []
    for name in sorted(os.listdir(root)):
        if name.endswith(".flushed"):
            out += [split_record(r) for r in open(os.path.join(root, name), "rb").read().split(b"\n")[:-1]]
    return out


@pytest.mark.trio
async def test_bulk_answers_per_item_and_ids_are_ulids(env):
    root, url = env
    recent = (datetime.now(UTC) - timedelta(minutes=20)).isoformat()
    body = ndjson(
        {"index": {}}, {"@timestamp": recent, "message": "a"},
        {"delete": {"_id": "1"}},
        {"create": {"_index": "other"}}, {"log": "b", "@timestamp": "1999-01-01T00:00:00Z"},
    )
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            r = await c.post("/logs/_bulk", content=body, headers={"Content-Type": "application/x-ndjson"})
            assert r.headers["x-elastic-product"] == "Elasticsearch"
            doc = r.json()
            assert doc["errors"] is True
            (a,), (d,), (b,) = (list(i.items()) for i in doc["items"])
            assert a[0] == "index" and a[1]["status"] == 201 and a[1]["_index"] == "logs"
            assert d[0] == "delete" and d[1]["status"] == 400 and "immutable" in d[1]["error"]["reason"]
            assert b[0] == "create" and b[1]["status"] == 201
            recs = {u.decode(): (t, ln) for u, t, ln in records(root)}
            assert recs[a[1]["_id"]] == (b"logs", b"a")
            # outside the event-time window: arrival time, event time kept in the line
            assert recs[b[1]["_id"]] == (b"other", b"1999-01-01T00:00:00.000000000Z b")
            want = int(datetime.fromisoformat(recent).timestamp() * 1000)
            assert abs(ulid_ms(a[1]["_id"].encode()) - want) <= 1
            assert abs(ulid_ms(b[1]["_id"].encode()) - time.time() * 1000) < 60_000
            # gzip, PUT, and an answer of HTTP 400 with an ES-shaped error for a bad action
            r = await c.put("/_bulk", content=gzip.compress(ndjson({"index": {"_index": "z"}}, {"message": "z"})),
                            headers={"Content-Encoding": "gzip"})
            assert r.status_code == 200 and r.json()["errors"] is False
            r = await c.post("/_bulk", content=b"garbage\n")
            assert r.status_code == 400 and r.json()["error"]["type"] == "illegal_argument_exception"
            assert r.headers["x-elastic-product"] == "Elasticsearch"
            for method in ("GET", "HEAD"):
                r = await c.request(method, "/")
                assert r.status_code == 200 and r.headers["x-elastic-product"] == "Elasticsearch"
            assert r.content == b""
            r = await c.get("/")
            assert r.json()["version"]["number"].startswith("8.")
    assert sorted(ln for _, _, ln in records(root)) == sorted(
        [b"a", b"1999-01-01T00:00:00.000000000Z b", b"z"]
    )
