"""/metrics: names, values, tolerance of missing figures, and promtool's verdict."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from oklog.net.http import Response, Router, serve_http
from oklog.node.config import Addr, NodeConfig
from oklog.node.metrics import CONTENT_TYPE, Metrics, metrics_router, observe_queries

TIMEOUT = 20

FULL_STATE = {
    "self": "n1",
    "members": [
        {"id": "n1", "role": "ingeststore", "state": "alive", "uptime_seconds": 12.5},
        {"id": "n2", "role": "store", "state": "suspect"},
        {"id": "n3", "role": "ingest", "state": "alive"},
    ],
    "pipeline": {
        "time": 1.0,
        "ingest": {
            "segments": {"active": 2, "flushed": 3, "pending": 1},
            "bytes": {"active": 100, "flushed": 300, "pending": 50},
            "oldest_flushed_age_seconds": 1.25,
            "records_in": 1000,
            "bytes_in": 65536,
            "flushes": 7,
            "commits": 5,
            "failures": 1,
            "pending_timeouts": 2,
            "connections": 4,
            "connections_total": 9,
            "records_split": 3,
            "syslog": {
                "connections": 1, "connections_total": 2, "messages_tcp": 10,
                "messages_udp": 20, "malformed": 1, "oversized": 2,
            },
            "http": {
                "requests": 3, "records": 30, "bytes": 999, "invalid_json": 1,
                "records_split": 0, "rejected": 1, "segments": 3,
            },
        },
        "store": {
            "segments": 6, "bytes": 4096, "oldest": None, "newest": None,
            "segments_written": 8, "bytes_written": 8192, "replications_received": 4,
            "quarantined": ["a.seg"], "time": 1.0,
        },
        "consumer": {
            "state": "gather", "batches": 11, "segments_consumed": 12, "bytes_consumed": 13,
            "replications_ok": 14, "replications_failed": 15, "commits_failed": 16,
            "last_error": "", "warnings": [],
        },
    },
    "replication_factor": 2,
}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def promtool_check(text: bytes) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install -y prometheus)")
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=TIMEOUT)
    assert p.returncode == 0, (p.stdout + p.stderr).decode()
    assert not p.stdout.strip() and not p.stderr.strip(), (p.stdout + p.stderr).decode()


def test_full_state_values():
    m = Metrics(lambda: FULL_STATE)
    m.observe_query(0.3)
    s = samples(m.render().decode())
    assert s[("oklog_ingest_segments", (("state", "flushed"),))] == 3
    assert s[("oklog_ingest_segment_bytes", (("state", "pending"),))] == 50
    assert s[("oklog_ingest_records_total", ())] == 1000
    assert s[("oklog_ingest_bytes_total", ())] == 65536
    assert s[("oklog_ingest_segments_flushed_total", ())] == 7
    assert s[("oklog_ingest_segments_committed_total", ())] == 5
    assert s[("oklog_ingest_segments_failed_total", ())] == 1
    assert s[("oklog_ingest_pending_timeouts_total", ())] == 2
    assert s[("oklog_ingest_open_connections", ())] == 4
    assert s[("oklog_ingest_connections_total", ())] == 9
    assert s[("oklog_ingest_records_split_total", ())] == 3
    assert s[("oklog_ingest_oldest_flushed_age_seconds", ())] == 1.25
    assert s[("oklog_syslog_messages_total", (("transport", "udp"),))] == 20
    assert s[("oklog_syslog_malformed_total", ())] == 1
    assert s[("oklog_http_ingest_invalid_json_total", ())] == 1
    assert s[("oklog_store_segments", ())] == 6
    assert s[("oklog_store_bytes_written_total", ())] == 8192
    assert s[("oklog_store_quarantined_segments", ())] == 1
    assert s[("oklog_consumer_replications_total", (("result", "failed"),))] == 15
    assert s[("oklog_consumer_commits_failed_total", ())] == 16
    assert s[("oklog_cluster_members", (("state", "alive"),))] == 2
    assert s[("oklog_cluster_members", (("state", "suspect"),))] == 1
    assert s[("oklog_cluster_members", (("state", "dead"),))] == 0
    assert s[("oklog_node_info", (("id", "n1"), ("role", "ingeststore")))] == 1
    assert s[("oklog_replication_factor", ())] == 2
    assert s[("oklog_query_duration_seconds_count", ())] == 1
    assert s[("oklog_query_duration_seconds_bucket", (("le", "0.5"),))] == 1
    assert s[("oklog_query_duration_seconds_bucket", (("le", "0.25"),))] == 0
    assert s[("oklog_state_error", ())] == 0
    names = {name for name, _ in s}
    assert all(n.startswith(("oklog_", "process_")) for n in names)


def test_promtool_full_state():
    m = Metrics(lambda: FULL_STATE)
    m.observe_query(0.01)
    promtool_check(m.render())


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"pipeline": {}},
        {"pipeline": {"ingest": {"segments": {"active": 1}}, "store": {"segments": 1}}},
        {"members": [{"state": "alive"}, {}, "junk"], "pipeline": {"ingest": None, "consumer": {"batches": "x"}}},
    ],
)
def test_missing_keys_tolerated(state):
    text = Metrics(lambda: state).render()
    promtool_check(text)
    assert b"oklog_query_duration_seconds_count 0.0" in text


def test_state_failure_is_a_metric_not_a_500():
    def broken():
        raise RuntimeError("boom")

    s = samples(Metrics(broken, process=False).render().decode())
    assert s[("oklog_state_error", ())] == 1


def test_real_node_state(tmp_path):
    """The dict a real Node returns (no mocks of its shape)."""
    from oklog.node.root import open_node

    lo = "127.0.0.1"
    cfg = NodeConfig(
        api=Addr(lo, 0), ingest_fast=Addr(lo, 0), ingest_durable=Addr(lo, 0),
        ingest_bulk=Addr(lo, 0), cluster=Addr(lo, 0),
        ingest_path=str(tmp_path / "ingest"), store_path=str(tmp_path / "store"),
    )
    node = open_node(cfg)
    text = Metrics(node.state).render()
    promtool_check(text)
    s = samples(text.decode())
    assert s[("oklog_ingest_segments", (("state", "active"),))] == 0
    assert s[("oklog_store_segments", ())] == 0
    assert s[("oklog_cluster_members", (("state", "alive"),))] == 1


@pytest.mark.trio
async def test_metrics_endpoint_and_query_timing(nursery):
    m = Metrics(lambda: FULL_STATE)
    app = Router()
    app.mount(metrics_router(m))

    async def fake_query(req):
        async def stream(write):
            await trio.sleep(0.06)
            await write(b"x\n")

        return Response(200, stream=stream)

    app.add("GET", "/store/query", fake_query)
    observe_queries(app, m)
    _, port = await nursery.start(serve_http, app, "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            r = await c.get("/store/query")
            assert r.content == b"x\n"
            r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == CONTENT_TYPE
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    s = samples(r.text)
    assert s[("oklog_query_duration_seconds_count", ())] == 1
    assert s[("oklog_query_duration_seconds_bucket", (("le", "0.05"),))] == 0
    assert s[("oklog_query_duration_seconds_bucket", (("le", "1.0"),))] == 1  # 0.06 s, plus a loaded machine
    promtool_check(r.content)


# -- the node's own logs (oklog.logfmt): the other half of what operators scrape -------------


def _log_line(fmt: str, msg: str, *args, exc: bool = False, **extra) -> str:
    import io
    import logging

    from oklog.logfmt import configure_logging

    buf = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(fmt, logging.DEBUG, stream=buf)
        lg = logging.getLogger("oklog.node.root")
        if exc:
            try:
                raise ValueError("bad thing")
            except ValueError:
                lg.exception(msg, *args, extra=extra)
        else:
            lg.warning(msg, *args, extra=extra)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    return buf.getvalue()


def test_logfmt_formatter():
    import re

    line = _log_line("logfmt", 'segment %s "flushed"', "01ABC", peer="10.0.0.1:7651", n=3)
    assert line.endswith("\n") and line.count("\n") == 1
    assert re.fullmatch(
        r'ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=warn logger=oklog\.node\.root '
        r'msg="segment 01ABC \\"flushed\\"" peer=10\.0\.0\.1:7651 n=3\n',
        line,
    ), line
    line = _log_line("logfmt", "failed", exc=True)
    assert "level=error" in line and 'exc="Traceback' in line and "ValueError: bad thing" in line
    assert line.count("\n") == 1  # the traceback's newlines are escaped


def test_json_and_text_formatters():
    import json

    import pytest as _pytest

    from oklog.logfmt import make_formatter

    obj = json.loads(_log_line("json", "hello %d", 5, peer="x"))
    assert obj["level"] == "warn" and obj["logger"] == "oklog.node.root"
    assert obj["msg"] == "hello 5" and obj["peer"] == "x" and obj["ts"].endswith("Z")
    assert "exc" in json.loads(_log_line("json", "oops", exc=True))
    assert "WARNING oklog.node.root: plain" in _log_line("text", "plain")
    with _pytest.raises(ValueError):
        make_formatter("xml")


def test_maintenance_and_query_figures():
    from oklog.node.metrics import Metrics

    state = {
        "pipeline": {
            "compaction": {"merges": 3, "concats": 1, "splits": 2, "bytes_in": 10, "bytes_out": 8,
                           "duplicates_dropped_bytes": 2, "trashed": 1, "purged": 0,
                           "trash_segments": 1, "trash_bytes": 5},
            "queries": {"total": 7, "partial": 1, "read_repairs": 2, "read_repair_records": 9},
            "streams": {"subscribers": 4},
        }
    }
    text = Metrics(lambda: state, process=False).render().decode()
    for line in [
        'oklog_compaction_jobs_total{kind="split"} 2.0',
        "oklog_compaction_duplicate_bytes_dropped_total 2.0",
        "oklog_read_repair_records_total 9.0",
        "oklog_queries_partial_total 1.0",
        "oklog_streams 4.0",
        "oklog_trash_bytes 5.0",
    ]:
        assert line in text, line
    promtool_check(text.encode())
