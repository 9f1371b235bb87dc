"""OTLP/HTTP logs: the hand-written reader against the real protobuf encoder
(opentelemetry-proto's generated classes), the JSON mapping, the answers and
the bounds, on a real socket with real segment files."""

from __future__ import annotations

import gzip
import json
import os
import time

import httpx
import pytest
import trio
from support import http_ingest_server

from oklog.ingest.otlp import (
    MAX_DEPTH,
    _pb_varint,
    parse_json_request,
    parse_pb_request,
    record_line,
)
from oklog.records.record import split_record, ulid_ms

pb = pytest.importorskip("opentelemetry.proto.collector.logs.v1.logs_service_pb2")
from opentelemetry.proto.common.v1 import common_pb2  # noqa: E402

TIMEOUT = 20


def _pb_len(b: bytes) -> bytes:
    return _pb_varint(len(b))


def kv(key: str, value) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=anyvalue(value))


def anyvalue(v) -> common_pb2.AnyValue:
    if isinstance(v, bool):
        return common_pb2.AnyValue(bool_value=v)
    if isinstance(v, int):
        return common_pb2.AnyValue(int_value=v)
    if isinstance(v, float):
        return common_pb2.AnyValue(double_value=v)
    if isinstance(v, str):
        return common_pb2.AnyValue(string_value=v)
    if isinstance(v, bytes):
        return common_pb2.AnyValue(bytes_value=v)
    if isinstance(v, list):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[anyvalue(x) for x in v]))
    return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=[kv(k, x) for k, x in v.items()]))


def request(records: list[dict], service: str | None = "checkout", scope: str = "shop.cart") -> bytes:
    from opentelemetry.proto.logs.v1 import logs_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    attrs = [kv("host.name", "web 1")] + ([kv("service.name", service)] if service else [])
    lrs = []
    for r in records:
        lr = logs_pb2.LogRecord(
            time_unix_nano=r.get("time", 0),
            observed_time_unix_nano=r.get("observed", 0),
            severity_number=r.get("sevnum", 0),
            severity_text=r.get("sev", ""),
            attributes=[kv(k, v) for k, v in r.get("attrs", {}).items()],
            trace_id=r.get("trace", b""),
            span_id=r.get("span", b""),
        )
        if "body" in r:
            lr.body.CopyFrom(anyvalue(r["body"]))
        lrs.append(lr)
    req = pb.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(attributes=attrs),
                scope_logs=[logs_pb2.ScopeLogs(scope=common_pb2.InstrumentationScope(name=scope), log_records=lrs)],
            )
        ]
    )
    return req.SerializeToString()


# -- the reader against the real encoder ------------------------------------------------


def test_protobuf_reader_matches_encoder():
    t = 1_764_000_000_123_456_789
    body = request([
        {"time": t, "sev": "ERROR", "body": "disk\nfull", "attrs": {"n": 3, "ok": True, "pi": 2.5},
         "trace": bytes(range(16)), "span": bytes(range(8))},
        {"observed": t + 5, "sevnum": 13, "body": {"a": [1, "x", {"b": 2}], "raw": b"\x00\xff"}},
        {"time": t + 9},  # no body
    ])
    [(resource, [(scope, recs)])] = parse_pb_request(body)
    assert resource == {"host.name": "web 1", "service.name": "checkout"}
    assert scope == "shop.cart"
    r0, r1, r2 = recs
    assert (r0.time, r0.severity, r0.body, r0.attrs) == (t, "ERROR", "disk\nfull", {"n": 3, "ok": True, "pi": 2.5})
    assert r0.trace_id == bytes(range(16)).hex() and r0.span_id == bytes(range(8)).hex()
    assert (r1.time, r1.severity) == (t + 5, "WARN")  # observed time; severity from its number
    assert r1.body == {"a": [1, "x", {"b": 2}], "raw": "AP8="}
    assert r2.body is None and r2.time == t + 9
    assert record_line(resource, scope, r0) == (
        b'{host.name="web 1",n=3,ok=true,pi=2.5,scope=shop.cart,service.name=checkout,severity=ERROR,'
        b"span_id=0001020304050607,trace_id=000102030405060708090a0b0c0d0e0f} disk\\nfull"
    )
    assert record_line(resource, scope, r1).endswith(b'} {"a":[1,"x",{"b":2}],"raw":"AP8="}')
    assert record_line(resource, scope, r2).endswith(b"service.name=checkout}")  # prefix alone


def test_json_mapping_matches_protobuf():
    from google.protobuf.json_format import MessageToJson

    t = 1_764_000_000_000_000_001
    body = request([{"time": t, "sev": "INFO", "body": {"k": [1, 2]}, "attrs": {"big": 2**62}}])
    msg = pb.ExportLogsServiceRequest()
    msg.ParseFromString(body)
    as_json = MessageToJson(msg).encode()
    assert parse_json_request(as_json)[0][0] == parse_pb_request(body)[0][0]
    [(_, [(_, [rj])])] = parse_json_request(as_json)
    [(_, [(_, [rp])])] = parse_pb_request(body)
    assert (rj.time, rj.severity, rj.body, rj.attrs) == (rp.time, rp.severity, rp.body, rp.attrs)
    # snake_case names and numbers where the mapping says strings are read too
    snake = {"resource_logs": [{"scope_logs": [{"log_records": [{"time_unix_nano": t, "body": {"string_value": "s"}}]}]}]}
    [(_, [(_, [r])])] = parse_json_request(json.dumps(snake).encode())
    assert (r.time, r.body) == (t, "s")


def nested_any(depth: int) -> bytes:
    """An AnyValue nesting arrays ``depth`` deep, encoded by hand (no recursion limit)."""
    inner = b"\x0a\x01x"  # string_value "x"
    for _ in range(depth):
        arr = b"\x0a" + _pb_len(inner) + inner  # ArrayValue.values
        inner = b"\x2a" + _pb_len(arr) + arr  # AnyValue.array_value
    return inner


def wrap_record(record: bytes) -> bytes:
    scope_logs = b"\x12" + _pb_len(record) + record
    resource_logs = b"\x12" + _pb_len(scope_logs) + scope_logs
    return b"\x0a" + _pb_len(resource_logs) + resource_logs


# -- on a real socket -------------------------------------------------------------------


class Env:
    def __init__(self, root, url):
        self.root = root
        self.url = url

    def records(self):
        out = []
        for name in sorted(os.listdir(self.root)):
            if name.endswith(".flushed"):
                data = open(os.path.join(self.root, name), "rb").read()
                out += [split_record(r) for r in data.split(b"\n")[:-1]]
        return out


@pytest.fixture
async def env(tmp_path, nursery):
    root = tmp_path / "ingest"
    return Env(root, await http_ingest_server(nursery, root))


async def post(env, path, body, ctype="application/x-protobuf", **headers) -> httpx.Response:
    async with httpx.AsyncClient(base_url=env.url, timeout=10) as c:
        return await c.post(path, content=body, headers={"Content-Type": ctype, **headers})


@pytest.mark.trio
async def test_protobuf_and_gzip_land_at_event_time(env):
    t = time.time_ns() - 120 * 10**9
    body = request([{"time": t, "sev": "INFO", "body": "one"}, {"time": t + 10**6, "body": "two"}])
    with trio.fail_after(TIMEOUT):
        r = await post(env, "/v1/logs", body)
        assert r.status_code == 200 and r.content == b""  # full success: an empty response message
        assert r.headers["content-type"] == "application/x-protobuf"
        r = await post(env, "/otlp/v1/logs", gzip.compress(request([{"time": t, "body": "three"}], service=None)),
                       **{"Content-Encoding": "gzip"})
        assert r.status_code == 200
    recs = env.records()
    assert [(t_, ln.rsplit(b" ", 1)[-1]) for _, t_, ln in recs] == [
        (b"checkout", b"one"), (b"checkout", b"two"), (b"default", b"three")
    ]
    assert [ulid_ms(u) for u, _, _ in recs] == [t // 10**6, t // 10**6 + 1, t // 10**6]


@pytest.mark.trio
async def test_json_success_and_partial_success(env):
    t = time.time_ns()
    good = {"timeUnixNano": str(t), "body": {"stringValue": "fine"}}
    deep: dict = {"stringValue": "x"}
    for _ in range(MAX_DEPTH + 5):
        deep = {"arrayValue": {"values": [deep]}}
    doc = {"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
                             "scopeLogs": [{"logRecords": [good, {"body": deep}]}]}]}
    with trio.fail_after(TIMEOUT):
        r = await post(env, "/v1/logs", json.dumps(doc).encode(), "application/json")
    assert r.status_code == 200
    partial = r.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == 1 and "nested deeper" in partial["errorMessage"]
    assert [(t_, ln) for _, t_, ln in env.records()] == [(b"api", b"{service.name=api} fine")]
    # the same in protobuf: a partial_success message
    deep_pb = b"\x2a" + _pb_len(nested_any(MAX_DEPTH + 5)) + nested_any(MAX_DEPTH + 5)  # LogRecord.body
    with trio.fail_after(TIMEOUT):
        r = await post(env, "/v1/logs", wrap_record(deep_pb))
    assert r.status_code == 200
    resp = pb.ExportLogsServiceResponse()
    resp.ParseFromString(r.content)
    assert resp.partial_success.rejected_log_records == 1


@pytest.mark.trio
async def test_bad_requests_are_refused_and_bounded(env):
    from google.rpc import status_pb2

    huge_len = b"\x0a\xff\xff\xff\xff\x0f" + b"x" * 10  # a field claiming 4 GiB
    cases = [
        (request([{"body": "x"}])[:-3], "application/x-protobuf", {}, 400),  # truncated
        (huge_len, "application/x-protobuf", {}, 400),
        (b"\x0f", "application/x-protobuf", {}, 400),  # wire type 7
        (b"\x0a\x02\x12", "application/x-protobuf", {}, 400),
        (b"[" * 100_000, "application/json", {}, 400),  # recursion bomb
        (b'{"resourceLogs": 5}', "application/json", {}, 400),  # wrong type
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": true}]}]}]}', "application/json", {}, 400),
        (gzip.compress(b"\0" * (4 << 20)), "application/x-protobuf", {"Content-Encoding": "gzip"}, 413),  # bomb
        (b"{}", "text/plain", {}, 415),
    ]
    with trio.fail_after(TIMEOUT):
        for body, ctype, headers, status in cases:
            r = await post(env, "/v1/logs", body, ctype, **headers)
            assert r.status_code == status, (body[:20], r.text)
            if ctype == "application/x-protobuf":
                st = status_pb2.Status()
                st.ParseFromString(r.content)  # a google.rpc.Status, as the spec asks
                assert st.code != 0 and st.message
        assert os.listdir(env.root) == []  # nothing written by a refused request
        r = await post(env, "/v1/logs", request([{"body": "still serving"}]))
        assert r.status_code == 200


@pytest.mark.trio
async def test_attribute_expansion_is_bounded(env):
    """Many empty records under a big resource attribute would multiply the body."""
    from opentelemetry.proto.logs.v1 import logs_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    req = pb.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
        resource=resource_pb2.Resource(attributes=[kv("blob", "b" * 20_000)]),
        scope_logs=[logs_pb2.ScopeLogs(log_records=[logs_pb2.LogRecord() for _ in range(40_000)])],
    )])
    body = req.SerializeToString()
    assert len(body) < 200_000  # would be 800 MB of records
    with trio.fail_after(TIMEOUT):
        r = await post(env, "/v1/logs", body)
    assert r.status_code == 413
    assert os.listdir(env.root) == []
