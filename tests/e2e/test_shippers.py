"""oklog against the clients today's shippers are built on, none written here:
the OpenTelemetry SDK's OTLP/HTTP log exporter, OTLP JSON over httpx and
curl, elasticsearch-py's ``helpers.bulk``, rsyslog's ``omelasticsearch``,
fluent-logger (Fluent forward), victorialogs-handler; and a Loki push of
half-hour-old entries found at their event time.

One real node serves the module (Fluent listener on, short flush ages); every
test uses its own marker and checks each record is queryable exactly once,
with the right topic and time.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import socket
import struct
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import msgpack
import pytest
from conftest import NodeProc, free_port, wait_for
from support import fluent_node

from oklog.records.record import split_record, ulid_ms

pytestmark = pytest.mark.slow

TIMEOUT = 20


def marker(kind: str) -> str:
    return f"ship-{kind}-{uuid.uuid4().hex}"


def query(node: NodeProc, q: str, **params) -> list[tuple[str, str, str]]:
    r = httpx.get(node.url + "/store/query", params={"q": q, **params}, timeout=30)
    assert r.status_code == 200, r.text
    return [tuple(p.decode() for p in split_record(rec)) for rec in r.content.split(b"\n")[:-1]]  # type: ignore[misc]


def exactly(node: NodeProc, q: str, count: int, **params) -> list[tuple[str, str, str]]:
    """Poll until ``count`` records match; then check no more arrive (each once)."""

    def found():
        recs = query(node, q, **params)
        return recs if len(recs) >= count else None

    try:
        wait_for(found, timeout=TIMEOUT, interval=0.2, what=f"{count} records matching {q}")
    except TimeoutError:
        tail = node.log_path.read_text(errors="replace")[-3000:] if node.log_path else ""
        raise AssertionError(f"{q!r}: {query(node, q, **params)!r}\nnode log:\n{tail}") from None
    time.sleep(1.0)  # several flush and consume cycles: a duplicate would show by now
    recs = query(node, q, **params)
    assert len(recs) == count, recs
    return recs


def ms_of(ulid: str) -> int:
    return ulid_ms(ulid.encode())


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = fluent_node(tmp_path_factory.mktemp("ship-node"), "0.2s")
    n.start()
    yield n
    n.kill()


# -- OpenTelemetry ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_otel_sdk_exporter(node, gz):
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    m = marker("otel")
    provider = LoggerProvider(resource=Resource.create({"service.name": "shop.checkout", "env": "test"}))
    exporter = OTLPLogExporter(
        endpoint=node.url + "/v1/logs", compression=Compression.Gzip if gz else Compression.NoCompression
    )
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = provider.get_logger("shop.cart")
    t = time.time_ns() - 10 * 60 * 10**9  # ten minutes old, as a catching-up shipper sends
    for i in range(5):
        logger.emit(timestamp=t + i * 10**6, severity_number=SeverityNumber.INFO, severity_text="INFO",
                    body=f"{m} line {i}\nsecond line", attributes={"order": i})
    logger.emit(timestamp=t + 5 * 10**6, severity_number=SeverityNumber.ERROR,
                body={"event": m, "items": [1, 2]})
    assert provider.force_flush(10_000)
    provider.shutdown()
    recs = exactly(node, m, 6)
    assert {t for _, t, _ in recs} == {"shop_checkout"}  # service.name, sanitized
    for i, (_, _, line) in enumerate(recs[:5]):
        assert line.endswith(f"}} {m} line {i}\\nsecond line")
        assert f"order={i}" in line and "severity=INFO" in line and "service.name=shop.checkout" in line
        assert "scope=shop.cart" in line and "env=test" in line
    assert recs[5][2].endswith('} {"event":"' + m + '","items":[1,2]}') and "severity=ERROR" in recs[5][2]
    assert [ms_of(u) for u, _, _ in recs] == [t // 10**6 + i for i in range(6)]  # at the event time


def otlp_json(m: str, t_ns: int, service: str) -> dict:
    return {
        "resourceLogs": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeLogs": [{
                "scope": {"name": "curlish"},
                "logRecords": [
                    {"timeUnixNano": str(t_ns), "severityNumber": 9, "body": {"stringValue": f"{m} a"},
                     "attributes": [{"key": "k", "value": {"intValue": "7"}}]},
                    {"timeUnixNano": str(t_ns + 1_000_000), "body": {"kvlistValue": {"values": [
                        {"key": "msg", "value": {"stringValue": f"{m} b"}}]}}},
                ],
            }],
        }]
    }


def test_otlp_json_httpx_and_curl(node, tmp_path):
    t = time.time_ns() - 10 * 60 * 10**9  # ten minutes old
    m = marker("otlpjson")
    r = httpx.post(node.url + "/v1/logs", json=otlp_json(m, t, "json-svc"), timeout=10)
    assert r.status_code == 200 and r.json() == {}
    recs = exactly(node, m, 2)
    assert [(tp, ln) for _, tp, ln in recs] == [
        ("json-svc", f"{{k=7,scope=curlish,service.name=json-svc,severity=INFO}} {m} a"),
        ("json-svc", f'{{scope=curlish,service.name=json-svc}} {{"msg":"{m} b"}}'),
    ]
    assert [ms_of(u) for u, _, _ in recs] == [t // 10**6, t // 10**6 + 1]
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed")
    m2 = marker("otlpcurl")
    f = tmp_path / "logs.json.gz"
    f.write_bytes(gzip.compress(json.dumps(otlp_json(m2, time.time_ns(), "curl-svc")).encode()))
    out = subprocess.run(
        [curl, "-sS", "-o", "-", "-w", "\n%{http_code}", "-H", "Content-Type: application/json",
         "-H", "Content-Encoding: gzip", "--data-binary", f"@{f}", node.url + "/otlp/v1/logs"],
        capture_output=True, timeout=15, check=True,
    ).stdout
    assert out.rsplit(b"\n", 1)[1] == b"200", out
    assert {tp for _, tp, _ in exactly(node, m2, 2)} == {"curl-svc"}


# -- Elasticsearch bulk ------------------------------------------------------------------------


def test_elasticsearch_helpers_bulk(node):
    from elasticsearch import Elasticsearch, helpers

    m = marker("es")
    es = Elasticsearch(node.url, request_timeout=10)
    assert es.info()["version"]["number"]
    old = datetime.now(UTC) - timedelta(minutes=40)
    actions = [
        {"_index": "web-access", "_source": {"@timestamp": old.isoformat(), "message": f"{m} {i}", "status": 200 + i}}
        for i in range(50)
    ]
    actions.append({"_op_type": "create", "_index": "web-errors", "_source": {"log": f"{m} err", "level": "error"}})
    ok, errors = helpers.bulk(es, actions, chunk_size=20)
    assert (ok, errors) == (51, [])
    recs = exactly(node, m, 51)
    access = [r for r in recs if r[1] == "web-access"]
    assert [ln for _, _, ln in access] == [f"{{status={200 + i}}} {m} {i}" for i in range(50)]
    assert {ms_of(u) for u, _, _ in access} == {int(old.timestamp() * 1000)}
    assert [(tp, ln) for _, tp, ln in recs if tp != "web-access"] == [("web-errors", f"{{level=error}} {m} err")]
    # refused items are reported per item, never silently dropped
    with pytest.raises(helpers.BulkIndexError) as e:
        helpers.bulk(es, [{"_op_type": "delete", "_index": "web-access", "_id": "x"}])
    assert e.value.errors[0]["delete"]["status"] == 400


RSYSLOG_ES_CONF = """\
global(workDirectory="{work}")
module(load="imuxsock" SysSock.Use="off")
module(load="omelasticsearch")
input(type="imuxsock" Socket="{sock}" CreatePath="on")
template(name="esdoc" type="list" option.jsonf="on") {{
  property(outname="@timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
}}
action(type="omelasticsearch" server="127.0.0.1" serverport="{port}" template="esdoc"
       searchIndex="rsyslog-es" bulkmode="on" errorFile="{work}/es-errors.json"
       action.resumeRetryCount="-1" action.resumeInterval="1")
"""


def test_rsyslog_omelasticsearch(node, tmp_path):
    rsyslogd = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin")
    logger = shutil.which("logger")
    if rsyslogd is None or logger is None or not any(
        p.exists() for p in __import__("pathlib").Path("/usr/lib").glob("**/rsyslog/omelasticsearch.so")
    ):
        pytest.skip("rsyslog with omelasticsearch not installed (apt-get install rsyslog-elasticsearch)")
    work = tmp_path / "rsyslog"
    work.mkdir()
    sock = work / "log.sock"
    conf = work / "rsyslog.conf"
    conf.write_text(RSYSLOG_ES_CONF.format(work=work, sock=sock, port=node.ports["api"]))
    proc = subprocess.Popen([rsyslogd, "-n", "-f", str(conf), "-i", str(work / "pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(sock.exists, timeout=10, what="rsyslog socket")
        m = marker("rsyslog-es")
        for i in range(3):
            subprocess.run([logger, "-u", str(sock), f"{m} {i}"], check=True, timeout=10)
        recs = exactly(node, m, 3)
        assert {tp for _, tp, _ in recs} == {"rsyslog-es"}
        assert [ln.rsplit(" ", 2)[-2:] for _, _, ln in recs] == [[m, str(i)] for i in range(3)]
        assert not (work / "es-errors.json").exists()
    finally:
        proc.terminate()
        proc.wait(10)


# -- Fluent forward -----------------------------------------------------------------------------


def test_fluent_logger(node):
    from fluent import sender

    m = marker("fluent")
    s = sender.FluentSender("k8s.app", host="127.0.0.1", port=node.ports["fluent"], nanosecond_precision=True)
    before = time.time()
    for i in range(10):
        assert s.emit("web", {"log": f"{m} {i}", "stream": "stdout"}), s.last_error
    old = int(time.time()) - 3 * 3600  # outside the window: arrival time, event time in the line
    assert s.emit_with_time("web", old, {"message": f"{m} old"})
    s.close()
    recs = exactly(node, m, 11)
    assert {tp for _, tp, _ in recs} == {"k8s_app_web"}
    assert [ln for _, _, ln in recs[:10]] == [f"{{stream=stdout}} {m} {i}" for i in range(10)]
    when = datetime.fromtimestamp(old, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert recs[10][2] == f"{when}.000000000Z {m} old"
    assert all(abs(ms_of(u) / 1000 - before) < 30 for u, _, _ in recs)
    metrics = httpx.get(node.url + "/metrics", timeout=10).text
    assert "oklog_fluent_records_total" in metrics and "oklog_fluent_acks_total" in metrics


def test_fluent_ack_survives_kill(tmp_path):
    """A chunk acked is on disk: SIGKILL right after the ack loses nothing."""
    n = NodeProc(tmp_path / "ack-node", ["-ingest.segment-flush-age", "0.2s", "-store.segment-target-age", "0.2s"])
    n.ports["fluent"] = free_port()
    n.args += ["-ingest.fluent", f"127.0.0.1:{n.ports['fluent']}"]
    n.start()
    try:
        m = marker("ack")
        t = time.time_ns()
        entries = b"".join(
            msgpack.packb([msgpack.ExtType(0, struct.pack(">II", t // 10**9, t % 10**9)), {"log": f"{m} {i}"}])
            for i in range(100)
        )
        with socket.create_connection(("127.0.0.1", n.ports["fluent"]), timeout=10) as s:
            s.sendall(msgpack.packb(["acked", entries, {"chunk": "Y2h1bmsx", "size": 100}], use_bin_type=True))
            up = msgpack.Unpacker(raw=False)
            while True:
                data = s.recv(4096)
                assert data, "closed without an ack"
                up.feed(data)
                acks = list(up)
                if acks:
                    break
            assert acks == [{"ack": "Y2h1bmsx"}]
            n.kill()  # SIGKILL: no graceful drain
        n.start()
        recs = exactly(n, m, 100)
        assert [ln for _, _, ln in recs] == [f"{m} {i}" for i in range(100)]
        # Killed before the ack could be read: the shipper sends the chunk again
        # (to the restarted node); everything is there, at most twice.
        m2 = marker("noack")
        packet = msgpack.packb(
            ["unacked", [[t // 10**9, {"log": f"{m2} {i}"}] for i in range(100)], {"chunk": "Y2h1bmsy"}]
        )
        with socket.create_connection(("127.0.0.1", n.ports["fluent"]), timeout=10) as s:
            s.sendall(packet)
            n.kill()
        n.start()
        with socket.create_connection(("127.0.0.1", n.ports["fluent"]), timeout=10) as s:
            s.sendall(packet)
            assert msgpack.unpackb(s.recv(100)) == {"ack": "Y2h1bmsy"}
        wait_for(lambda: len(query(n, m2)) >= 100, timeout=TIMEOUT, what="resent chunk")
        time.sleep(1.0)
        lines = [ln for _, _, ln in query(n, m2)]
        assert len(lines) in (100, 200) and set(lines) == {f"{m2} {i}" for i in range(100)}
    finally:
        n.kill()


# -- VictoriaLogs and Loki -------------------------------------------------------------------------


def test_victorialogs_handler(node):
    from vlogs_handler import VictoriaLogsHandler

    m = marker("vlogs")
    handler = VictoriaLogsHandler(url=node.url, record_to_stream=lambda r: "billing")
    logger = logging.getLogger(f"vlogs.{m}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    before = time.time()
    for i in range(4):
        logger.warning("%s %d", m, i)
    handler.close()
    recs = exactly(node, m, 4)
    assert {tp for _, tp, _ in recs} == {"billing"}
    for i, (u, _, ln) in enumerate(recs):
        assert ln.endswith(f"}} {m} {i}") and "level=WARNING" in ln and "stream=billing" in ln
        assert "timestamp=" not in ln  # the time field became the record's time
        assert abs(ms_of(u) / 1000 - before) < 30


def test_loki_push_lands_at_event_time(node):
    m = marker("lokiold")
    t = time.time_ns() - 30 * 60 * 10**9  # half an hour old
    push = {"streams": [{"stream": {"job": "replay"}, "values": [[str(t + i * 10**6), f"{m} {i}"] for i in range(3)]}]}
    r = httpx.post(node.url + "/loki/api/v1/push", json=push, timeout=10)
    assert r.status_code == 204
    at = datetime.fromtimestamp(t / 1e9, UTC)
    window = {"from": (at - timedelta(seconds=1)).isoformat(), "to": (at + timedelta(seconds=1)).isoformat()}
    recs = exactly(node, m, 3, **window)
    assert [ms_of(u) for u, _, _ in recs] == [t // 10**6 + i for i in range(3)]
    assert {tp for _, tp, _ in recs} == {"replay"}
    recent = {"from": (datetime.now(UTC) - timedelta(minutes=5)).isoformat()}
    assert query(node, m, **recent) == []  # not at arrival time
