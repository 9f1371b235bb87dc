"""``oklog query``'s messages against a real node: for people, not Python."""

from __future__ import annotations

import socket
import subprocess

import pytest
from conftest import OKLOG, wait_for


def run_query(node, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(OKLOG + ["query", "-store", node.api, *args], capture_output=True, timeout=60)


@pytest.mark.slow
def test_bad_regex_is_a_plain_400_and_leaves_the_node_log_clean(node_factory):
    node = node_factory("n0").start()
    r = run_query(node, "-regex", "-q", "(unclosed")
    assert r.returncode == 1
    assert r.stderr.decode() == "oklog query: 400: invalid regex: missing ): (unclosed\n"
    log = node.log_path.read_text()
    assert "re2.cc" not in log and "absl" not in log and "Error parsing" not in log


@pytest.mark.slow
def test_bad_time_names_durations_and_refused_connection_is_plain(node_factory):
    node = node_factory("n0").start()
    r = run_query(node, "-from", "yesterday")
    assert r.returncode == 1
    assert r.stderr.decode().startswith("oklog query: -from 'yesterday' is not a time: use a duration ago (30s, 5m,")
    node.kill()
    r = run_query(node)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err == f"oklog query: http://{node.api}/store/query: connection refused (is an oklog node listening there?)\n"


@pytest.mark.slow
def test_stats_reports_records_waiting_in_the_ingest_tier(node_factory):
    node = node_factory("n0")
    node.args = ["-ingest.segment-flush-age", "1h", "-ingest.segment-flush-size", "64MiB"]
    node.start()
    r = run_query(node, "-stats")
    assert r.returncode == 0
    tail = f"on 127.0.0.1:{node.ports['cluster']} (not yet queryable)\n"
    assert r.stdout.decode().endswith("ingest waiting: 0 segments being written, 0 flushed (0 bytes) " + tail)
    # A producer still connected: its records sit in an active segment.
    with socket.create_connection(("127.0.0.1", node.ports["fast"]), timeout=10) as producer:
        producer.sendall(b"".join(b"waiting %d\n" % i for i in range(1000)))
        r = wait_for(
            lambda: (x := run_query(node, "-stats")).stdout.count(b"ingest waiting: 1 segments being written") and x,
            what="the active segment reported",
        )
        assert r.returncode == 0 and r.stdout.decode().endswith(tail)
