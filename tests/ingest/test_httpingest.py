"""HTTP ingest (NDJSON and Loki push) on a real socket and real segment files."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import time

import httpx
import pytest
import trio

from oklog.fs import RealFS
from oklog.ingest.httpingest import (
    HTTPIngestStats,
    decode_body,
    httpingest_router,
    labels_prefix,
    parse_jsonlines,
    parse_loki,
    sanitize_topic,
)
from oklog.ingest.listener import IngestSettings
from oklog.ingest.log import IngestLog
from oklog.net.http import serve_http
from oklog.records.record import ULID_LEN, split_record, ulid_ms

TIMEOUT = 20


def flushed_records(root) -> list[tuple[bytes, bytes, bytes]]:
    """(ulid, topic, line) of every record in .flushed segments, segment order."""
    out = []
    for name in sorted(os.listdir(root)):
        assert not name.endswith(".active"), f"segment left active: {name}"
        if name.endswith(".flushed"):
            data = open(os.path.join(root, name), "rb").read()
            assert data.endswith(b"\n")
            out += [split_record(r) for r in data.split(b"\n")[:-1]]
    return out


class Env:
    def __init__(self, root, url, stats, ilog):
        self.root = root
        self.url = url
        self.stats = stats
        self.log = ilog

    def records(self):
        return flushed_records(self.root)

    def lines(self, topic=None):
        return [ln for _, t, ln in self.records() if topic is None or t == topic]


@pytest.fixture
async def env(tmp_path, nursery):
    root = tmp_path / "ingest"
    ilog = IngestLog(RealFS(), str(root))
    stats = HTTPIngestStats()
    settings = IngestSettings(flush_size=1 << 20, flush_age=1.0, max_record_size=64)
    router = httpingest_router(ilog, settings, stats, max_body=1 << 16)
    host, port = await nursery.start(serve_http, router, "127.0.0.1", 0)
    return Env(root, f"http://127.0.0.1:{port}", stats, ilog)


async def post(env, path, body: bytes, params=None, headers=None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=env.url, timeout=10) as c:
        return await c.post(path, content=body, params=params, headers=headers or {})


# -- pure parsing -------------------------------------------------------------------------


def test_parse_jsonlines_fields_and_fallbacks():
    body = b"\n".join(
        [
            b'{"message": "hello", "level": "info"}',
            b'{"msg": "from msg"}',
            b'{"log": "from log\\n"}',
            b'{"line": 42}',
            b'{"other": 1, "x": [1, 2]}',
            b"not json at all",
            b'"a bare string"',
            b"[1,2]",
            b"   ",
            b'{"message": {"nested": "obj\\nx"}}\r',
            b'{"message": "caf\xc3\xa9 multi\\nline"}',
            b'{"message": "bad utf8 \xff"}',
        ]
    )
    lines, invalid = parse_jsonlines(body)
    assert lines == [
        b"hello",
        b"from msg",
        b"from log\\n",
        b"42",
        b'{"other": 1, "x": [1, 2]}',
        b"not json at all",
        b"a bare string",
        b"[1,2]",
        b'{"nested":"obj\\nx"}',
        b"caf\xc3\xa9 multi\\nline",
        b'{"message": "bad utf8 \xff"}',
    ]
    assert invalid == 2


def test_parse_jsonlines_custom_field_and_time():
    body = b'{"text": "t1", "ts": "2024-01-01T00:00:00Z", "message": "m"}\n{"message": "m2"}\n'
    lines, invalid = parse_jsonlines(body, message_field="text", time_field="ts")
    assert lines == [b"2024-01-01T00:00:00Z t1", b"m2"]
    assert invalid == 0


def test_loki_topic_and_prefix():
    assert sanitize_topic("my app/v1") == b"my_app_v1"
    assert sanitize_topic("/var/log") == b"var_log"
    assert sanitize_topic("///") is None
    assert labels_prefix({}) == b""
    assert labels_prefix({"job": "nginx", "host": "a b", "q": 'x"y'}) == (
        b'{host="a b",job=nginx,q="x\\"y"} '
    )
    body = json.dumps(
        {
            "streams": [
                {"stream": {"job": "nginx", "app": "web"}, "values": [["1", "a"], ["2", "b\nc"]]},
                {"stream": {"app": "web!"}, "values": [["3", "c", {"trace": "1"}]]},
                {"stream": {"service": "pay", "job": "j"}, "values": [["4", "d"]]},
                {"stream": {}, "values": [["5", "e"]]},
                {"stream": {"job": "--"}, "values": []},
            ]
        }
    ).encode()
    b = parse_loki(body, None, b"default")
    assert b.groups == [
        (b"nginx", [b"{app=web,job=nginx} a", b"{app=web,job=nginx} b\\nc"]),
        (b"web_", [b"{app=web!} c"]),
        (b"j", [b"{job=j,service=pay} d"]),
        (b"default", [b"e"]),
    ]
    b = parse_loki(body, "service", b"default")
    assert b.groups[2][0] == b"pay"


@pytest.mark.parametrize(
    "body",
    [
        b"nope",
        b"[]",
        b'{"streams": {}}',
        b'{"streams": [1]}',
        b'{"streams": [{"stream": {"a": 1}, "values": []}]}',
        b'{"streams": [{"stream": {}, "values": [[1, "x"]]}]}',
        b'{"streams": [{"stream": {}, "values": [["12x", "x"]]}]}',
        b'{"streams": [{"stream": {}, "values": [["1"]]}]}',
    ],
)
def test_parse_loki_rejects(body):
    from oklog.net.http import HTTPError

    with pytest.raises(HTTPError) as e:
        parse_loki(body, None, b"default")
    assert e.value.status == 400


def test_decode_body_bounds():
    from oklog.net.http import HTTPError

    data = b"x" * 1000
    assert decode_body(gzip.compress(data), "gzip", 1000) == data
    assert decode_body(gzip.compress(b"a") + gzip.compress(b"b"), "gzip", 10) == b"ab"
    with pytest.raises(HTTPError) as e:
        decode_body(gzip.compress(data), "gzip", 999)
    assert e.value.status == 413
    with pytest.raises(HTTPError) as e:
        decode_body(b"not gzip", "gzip", 999)
    assert e.value.status == 400
    with pytest.raises(HTTPError) as e:
        decode_body(data, "br", 999)
    assert e.value.status == 415


# -- over HTTP ----------------------------------------------------------------------------


@pytest.mark.trio
async def test_jsonline_lands_flushed_byte_exact(env):
    body = (
        b'{"message": "one", "level": "info"}\n'
        b"raw \xff\x00 bytes\r\n"
        b'{"msg": "two\\nlines"}\n'
        b'{"no": "message"}\n'
    )
    with trio.fail_after(TIMEOUT):
        r = await post(env, "/ingest/jsonline", body, params={"topic": "app-1"})
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary["records"] == 4 and summary["invalid_json"] == 1
    assert len(summary["segments"]) == 1
    # Acknowledged means flushed: the segment is already .flushed, nothing active.
    assert sorted(os.listdir(env.root)) == [summary["segments"][0] + ".flushed"]
    recs = env.records()
    assert [t for _, t, _ in recs] == [b"app-1"] * 4
    assert [ln for _, _, ln in recs] == [
        b"one",
        b"raw \xff\x00 bytes",
        b"two\\nlines",
        b'{"no": "message"}',
    ]
    ulids = [u for u, _, _ in recs]
    assert ulids == sorted(ulids) and len(set(ulids)) == 4 and len(ulids[0]) == ULID_LEN
    assert env.stats.invalid_json == 1 and env.stats.records == 4
    # The store tier sees it like any other segment.
    assert env.log.next() == summary["segments"][0]


@pytest.mark.trio
async def test_jsonline_defaults_and_message_field(env):
    body = b'{"m": "custom", "ts": 17}\n{"message": "std"}\n'
    with trio.fail_after(TIMEOUT):
        r = await post(env, "/ingest/jsonline", body, params={"message_field": "m", "time_field": "ts"})
    assert r.status_code == 200
    assert env.records()[0][1] == b"default"
    assert env.lines() == [b"17 custom", b"std"]


@pytest.mark.trio
async def test_jsonline_long_lines_split(env):
    long = "x" * 150  # max record size is 64 in this fixture
    with trio.fail_after(TIMEOUT):
        r = await post(env, "/ingest/jsonline", json.dumps({"message": long}).encode())
    assert r.status_code == 200
    assert env.lines() == [b"x" * 64, b"x" * 64, b"x" * 22]
    assert env.stats.records_split == 2


@pytest.mark.trio
async def test_jsonline_rejections(env):
    with trio.fail_after(TIMEOUT):
        r = await post(env, "/ingest/jsonline", b'{"message": "x"}', params={"topic": "bad topic"})
        assert r.status_code == 400
        r = await post(env, "/ingest/jsonline", b"x" * (1 << 17))
        assert r.status_code == 413
        r = await post(
            env,
            "/ingest/jsonline",
            gzip.compress(b"y\n" * (1 << 16)),
            headers={"Content-Encoding": "gzip"},
        )
        assert r.status_code == 413
        async with httpx.AsyncClient(base_url=env.url, timeout=10) as c:
            assert (await c.get("/ingest/jsonline")).status_code == 405
        r = await post(env, "/ingest/jsonline", b"")
        assert r.status_code == 200 and r.json()["records"] == 0
    assert os.listdir(env.root) == []
    assert env.stats.rejected == 3


@pytest.mark.trio
async def test_jsonline_gzip(env):
    body = gzip.compress(b'{"message": "zipped"}\n')
    with trio.fail_after(TIMEOUT):
        r = await post(env, "/ingest/jsonline", body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert env.lines() == [b"zipped"]


@pytest.mark.trio
async def test_loki_push_json_and_gzip(env):
    t0 = time.time_ns() - 600 * 10**9  # ten minutes old: inside the event-time window
    push = {
        "streams": [
            {
                "stream": {"job": "nginx", "host": "web 1"},
                "values": [[str(t0), "GET / 200"], [str(t0 + 1), "a\nb"]],
            },
            {"stream": {"app": "pay/api"}, "values": [[str(t0 + 2), "paid"]]},
        ]
    }
    with trio.fail_after(TIMEOUT):
        r = await post(
            env, "/loki/api/v1/push", json.dumps(push).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 204, r.text
        r = await post(
            env, "/loki/api/v1/push", gzip.compress(json.dumps(push).encode()),
            params={"topic": "host"},
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert r.status_code == 204, r.text
    recs = env.records()
    assert [(t, ln) for _, t, ln in recs] == [
        (b"nginx", b'{host="web 1",job=nginx} GET / 200'),
        (b"nginx", b'{host="web 1",job=nginx} a\\nb'),
        (b"pay_api", b"{app=pay/api} paid"),
        (b"web_1", b'{host="web 1",job=nginx} GET / 200'),
        (b"web_1", b'{host="web 1",job=nginx} a\\nb'),
        (b"pay_api", b"{app=pay/api} paid"),
    ]
    assert {ulid_ms(u) for u, _, _ in recs} == {t0 // 10**6}  # stamped at the event time
    assert len([n for n in os.listdir(env.root) if n.endswith(".flushed")]) == 2


def loki_push_request(streams: list[tuple[str, list[str]]], base: int | None = None) -> bytes:
    """A logproto.PushRequest encoded by Google's protobuf library from the
    schema Loki publishes (pkg/push/push.proto), built at run time."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

    F = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    ts_file = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts_file)
    pool.Add(ts_file)
    fdp = descriptor_pb2.FileDescriptorProto(
        name="push.proto", package="logproto", syntax="proto3", dependency=["google/protobuf/timestamp.proto"]
    )

    def msg(name, *fields):
        m = fdp.message_type.add(name=name)
        for fname, num, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if type_name:
                f.type_name = type_name

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("LabelPairAdapter", ("name", 1, F.TYPE_STRING, opt, ""), ("value", 2, F.TYPE_STRING, opt, ""))
    msg(
        "EntryAdapter",
        ("timestamp", 1, F.TYPE_MESSAGE, opt, ".google.protobuf.Timestamp"),
        ("line", 2, F.TYPE_STRING, opt, ""),
        ("structuredMetadata", 3, F.TYPE_MESSAGE, rep, ".logproto.LabelPairAdapter"),
    )
    msg(
        "StreamAdapter",
        ("labels", 1, F.TYPE_STRING, opt, ""),
        ("entries", 2, F.TYPE_MESSAGE, rep, ".logproto.EntryAdapter"),
        ("hash", 3, F.TYPE_UINT64, opt, ""),
    )
    msg("PushRequest", ("streams", 1, F.TYPE_MESSAGE, rep, ".logproto.StreamAdapter"))
    pool.Add(fdp)
    Push = message_factory.GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))
    req = Push()
    for labels, lines in streams:
        st = req.streams.add(labels=labels, hash=12345)
        for k, line in enumerate(lines):
            e = st.entries.add(line=line)
            e.timestamp.seconds, e.timestamp.nanos = (base or int(time.time()) - 60) + k, 5
            e.structuredMetadata.add(name="trace_id", value="abc")
    return req.SerializeToString()


@pytest.mark.trio
async def test_loki_push_protobuf_and_snappy(env):
    """What Promtail, Alloy and Vector send by default."""
    import cramjam

    base = int(time.time()) - 60
    body = loki_push_request([
        ('{job="nginx", host="web 1"}', ["GET / 200", "a\nb"]),
        ('{app="pay/api", quote="say \\"hi\\""}', ["paid"]),
        ("{}", ["bare"]),
    ], base)
    with trio.fail_after(TIMEOUT):
        r = await post(
            env, "/loki/api/v1/push", bytes(cramjam.snappy.compress_raw(body)),
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert r.status_code == 204, r.text
    # Each entry at its event time (second base + k of its stream), so sorted by it.
    assert [(ulid_ms(u), t, ln) for u, t, ln in env.records()] == [
        (base * 1000, b"nginx", b'{host="web 1",job=nginx} GET / 200'),
        (base * 1000, b"pay_api", b'{app=pay/api,quote="say \\"hi\\""} paid'),
        (base * 1000, b"default", b"bare"),
        (base * 1000 + 1000, b"nginx", b'{host="web 1",job=nginx} a\\nb'),
    ]
    with trio.fail_after(TIMEOUT):
        for bad, status in [
            (b"\x00\x01", 400),  # not snappy
            (bytes(cramjam.snappy.compress_raw(b"\x0a\x05\x0a\x03{x")), 400),  # truncated / bad labels
            (bytes(cramjam.snappy.compress_raw(loki_push_request([("job=nginx", ["x"])]))), 400),
            (b"\xff\xff\xff\xff\x7f" + b"\x00" * 8, 413),  # claims 32 GiB decompressed
        ]:
            r = await post(env, "/loki/api/v1/push", bad, headers={"Content-Type": "application/x-protobuf"})
            assert r.status_code == status, (bad, r.text)


@pytest.mark.trio
async def test_loki_push_rejections(env):
    with trio.fail_after(TIMEOUT):
        r = await post(env, "/loki/api/v1/push", b'{"streams": [{"values": [["x", "y"]]}]}')
        assert r.status_code == 400
        r = await post(env, "/loki/api/v1/push", b"streams", headers={"Content-Type": "text/plain"})
        assert r.status_code == 400
    assert os.listdir(env.root) == []  # a refused push writes nothing
    with trio.fail_after(TIMEOUT):  # curl -d sends form-urlencoded: still read as JSON
        r = await post(
            env, "/loki/api/v1/push", b'{"streams": [{"stream": {}, "values": [["1", "f"]]}]}',
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 204
    # An event time outside the window: arrival time, the event time kept in the line.
    assert env.lines() == [b"1970-01-01T00:00:00.000000001Z f"]


@pytest.mark.trio
async def test_curl_client(env):
    """An ordinary client (curl) gets its NDJSON file acknowledged and stored."""
    import shutil

    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    body = b'{"message": "via curl"}\n{"message": "second"}\n'

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            ["curl", "-sS", "--fail", "--data-binary", "@-", "-H", "Content-Type: application/x-ndjson",
             env.url + "/ingest/jsonline?topic=curl"],
            input=body, capture_output=True, timeout=TIMEOUT,
        )

    with trio.fail_after(TIMEOUT):
        p = await trio.to_thread.run_sync(run)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["records"] == 2
    assert env.lines(b"curl") == [b"via curl", b"second"]


@pytest.mark.trio
async def test_big_request_spans_segments(tmp_path, nursery):
    root = tmp_path / "ingest"
    ilog = IngestLog(RealFS(), str(root))
    settings = IngestSettings(flush_size=4096, flush_age=1.0, max_record_size=1 << 20)
    host, port = await nursery.start(serve_http, httpingest_router(ilog, settings), "127.0.0.1", 0)
    lines = [f"line {i:05d} ".encode() + b"p" * 100 for i in range(500)]
    body = b"\n".join(b'{"message": "%s"}' % ln for ln in lines)
    env = Env(root, f"http://127.0.0.1:{port}", None, ilog)
    with trio.fail_after(TIMEOUT):
        r = await post(env, "/ingest/jsonline", body)
    assert r.status_code == 200
    assert len(r.json()["segments"]) > 5
    recs = env.records()
    assert [ln for _, _, ln in recs] == lines
    ulids = [u for u, _, _ in recs]
    assert ulids == sorted(ulids)
