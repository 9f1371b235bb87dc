"""oklog against real clients of the logging ecosystem that nobody here wrote.

rsyslogd forwarding (omfwd, TCP octet-counted and UDP), util-linux ``logger``
straight to the syslog listener (RFC 5424 / 3164, TCP / UDP), ``curl`` pushing
Loki JSON (plain and gzip) and NDJSON, ``promtool check metrics`` and a real
Prometheus server scraping ``/metrics``. Every record is looked up with the real
``oklog query`` CLI. Each test skips only when its external binary is absent
(``make deps`` installs them on Debian).

One node serves the whole module (syslog listener on, short flush ages) so the
file stays fast; every test uses its own unique marker strings.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import OKLOG, NodeProc, free_port, wait_for
from support import stop_pid

pytestmark = pytest.mark.slow

TIMEOUT = 20  # seconds for any one record to become queryable
CMD_TIMEOUT = 15  # seconds for any one client command


# -- helpers ----------------------------------------------------------------------------------


def need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed (make deps, or apt-get install -y {package})")
    return path


def oklog_cli() -> list[str]:
    """The installed ``oklog`` console script next to this interpreter, else ``python -m oklog``."""
    script = Path(sys.executable).parent / "oklog"
    return [str(script)] if script.exists() else list(OKLOG)


def marker(kind: str) -> str:
    return f"eco-{kind}-{uuid.uuid4().hex}"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, timeout=CMD_TIMEOUT, **kw)
    assert p.returncode == 0, f"{cmd!r} exited {p.returncode}: {p.stderr.decode(errors='replace')}"
    return p


def oklog_query(node: NodeProc, q: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = oklog_cli() + ["query", "-store", node.api, "-from", "5m", "-q", q, *extra]
    return run(cmd)


def query_until_found(node: NodeProc, q: str, count: int = 1, *extra: str) -> list[str]:
    """Poll ``oklog query`` until at least ``count`` lines match ``q``; the lines."""

    def found():
        lines = oklog_query(node, q, *extra).stdout.decode().splitlines()
        return lines if len(lines) >= count else None

    try:
        return wait_for(found, timeout=TIMEOUT, interval=0.3, what=f"oklog query -q {q}")
    except TimeoutError:
        log = node.log_path.read_text(errors="replace")[-3000:] if node.log_path else ""
        raise AssertionError(f"{q!r} never found by oklog query; node log tail:\n{log}") from None


def query_json(node: NodeProc, q: str, count: int = 1) -> list[dict]:
    return [json.loads(ln) for ln in query_until_found(node, q, count, "-json")]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    syslog_port = free_port()
    n = NodeProc(
        tmp_path_factory.mktemp("eco-node"),
        [
            "-ingest.syslog", f"127.0.0.1:{syslog_port}",
            "-ingest.segment-flush-age", "0.2s",
            "-store.segment-target-age", "0.2s",
        ],
    )
    n.ports["syslog"] = syslog_port
    n.start()
    yield n
    n.kill()


# -- 1. rsyslogd forwarding -------------------------------------------------------------------

RSYSLOG_CONF = """\
global(workDirectory="{work}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{sock}" CreatePath="on")
if $msg contains "eco-rsyslog-tcp-" then {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
if $msg contains "eco-rsyslog-udp-" then {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="udp")
}}
"""


@pytest.fixture
def rsyslogd(node, tmp_path):
    binary = need("rsyslogd", "rsyslog")
    logger = need("logger", "bsdutils")
    work = tmp_path / "rsyslog-work"
    work.mkdir()
    sock = tmp_path / "log.sock"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=work, sock=sock, port=node.ports["syslog"]))
    run([binary, "-N1", "-f", str(conf)])  # config check: fails loudly with rsyslog's reason
    logf = open(tmp_path / "rsyslogd.log", "wb")
    proc = subprocess.Popen(
        [binary, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")],
        stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: sock.exists() or proc.poll() is not None, timeout=CMD_TIMEOUT, what="rsyslogd socket")
        assert proc.poll() is None, f"rsyslogd exited: {(tmp_path / 'rsyslogd.log').read_text()}"
        yield logger, sock
    finally:
        stop_pid(proc)
        logf.close()


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rsyslog_forwards_to_syslog_listener(node, rsyslogd, transport):
    logger, sock = rsyslogd
    m = marker(f"rsyslog-{transport}")
    run([logger, "-u", str(sock), "-t", "ecotest", m])
    lines = query_until_found(node, m)
    assert len(lines) == 1 and m in lines[0] and "ecotest" in lines[0]
    [rec] = query_json(node, m)
    assert rec["topic"] == "syslog"
    if transport == "tcp":  # RSYSLOG_SyslogProtocol23Format: RFC 5424, octet-counted on the wire
        assert rec["line"].startswith("<") and ">1 " in rec["line"][:8], rec["line"]


# -- 2. logger straight to the listener ---------------------------------------------------------


@pytest.mark.parametrize(
    "transport,fmt,octets",
    [
        ("tcp", "rfc5424", False),
        ("tcp", "rfc5424", True),
        ("tcp", "rfc3164", False),
        ("udp", "rfc5424", False),
        ("udp", "rfc3164", False),
    ],
)
def test_logger_to_syslog_listener(node, transport, fmt, octets):
    logger = need("logger", "bsdutils")
    m = marker(f"logger-{transport}-{fmt}{'-octet' if octets else ''}")
    cmd = [logger, f"--{transport}", "-n", "127.0.0.1", "-P", str(node.ports["syslog"]), f"--{fmt}", "-t", "ecotest"]
    if octets:
        cmd.append("--octet-count")
    run(cmd + [m])
    [rec] = query_json(node, m)
    assert rec["topic"] == "syslog"
    line = rec["line"]
    assert line.endswith(m) and "ecotest" in line, line
    if fmt == "rfc5424":
        assert line.split(">", 1)[1].startswith("1 "), line  # <PRI>1 TIMESTAMP ...
    else:
        assert not line.split(">", 1)[1].startswith("1 "), line  # <PRI>Mmm dd hh:mm:ss ...
    assert not line[:1].isdigit(), f"octet count left in the record: {line}"


# -- 3. curl: Loki push and NDJSON ------------------------------------------------------------------


def curl(url: str, data_file: Path, *headers: str) -> tuple[int, bytes]:
    binary = need("curl", "curl")
    cmd = [binary, "-sS", "-o", "-", "-w", "\n%{http_code}", "--data-binary", f"@{data_file}"]
    for h in headers:
        cmd += ["-H", h]
    out = run(cmd + [url]).stdout
    body, _, code = out.rpartition(b"\n")
    return int(code), body


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_curl_loki_push(node, tmp_path, gz):
    m = marker("loki-gz" if gz else "loki")
    now = str(time.time_ns())
    push = {
        "streams": [
            {"stream": {"job": "ecoloki", "host": "h1"}, "values": [[now, f"{m} one"], [now, f"{m} two"]]},
            {"stream": {"app": "eco-app"}, "values": [[now, f"{m} three"]]},
        ]
    }
    raw = json.dumps(push).encode()
    f = tmp_path / ("push.json.gz" if gz else "push.json")
    f.write_bytes(gzip.compress(raw) if gz else raw)
    headers = ["Content-Type: application/json"] + (["Content-Encoding: gzip"] if gz else [])
    code, body = curl(f"{node.url}/loki/api/v1/push", f, *headers)
    assert code == 204, body
    lines = query_until_found(node, m, 3)
    assert lines == [f"{{host=h1,job=ecoloki}} {m} one", f"{{host=h1,job=ecoloki}} {m} two", f"{{app=eco-app}} {m} three"]
    recs = query_json(node, m, 3)
    assert [r["topic"] for r in recs] == ["ecoloki", "ecoloki", "eco-app"]
    assert [r["line"] for r in recs] == lines
    for r in recs:
        assert len(r["ulid"]) == 26 and r["time"].endswith("Z")


def test_curl_ndjson(node, tmp_path):
    m = marker("ndjson")
    f = tmp_path / "batch.ndjson"
    f.write_text(
        json.dumps({"message": f"{m} first", "level": "info"}) + "\n"
        + json.dumps({"msg": f"{m} second"}) + "\r\n"
        + "\n"
        + json.dumps({"other": f"{m} kept whole"}) + "\n"
    )
    code, body = curl(f"{node.url}/ingest/jsonline?topic=econd", f, "Content-Type: application/x-ndjson")
    assert code == 200, body
    assert json.loads(body)["records"] == 3
    recs = query_json(node, m, 3)
    assert [r["topic"] for r in recs] == ["econd"] * 3
    assert [r["line"] for r in recs] == [f"{m} first", f"{m} second", json.dumps({"other": f"{m} kept whole"})]
    assert query_until_found(node, m, 3)[0] == f"{m} first"


# -- 4. promtool and a real Prometheus server ---------------------------------------------------------


def test_promtool_check_metrics(node):
    promtool = need("promtool", "prometheus")
    curl_bin = need("curl", "curl")
    text = run([curl_bin, "-sSf", f"{node.url}/metrics"]).stdout
    assert b"oklog_" in text
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=CMD_TIMEOUT)
    assert p.returncode == 0, f"promtool check metrics: {p.stdout.decode()}{p.stderr.decode()}"


def test_prometheus_scrapes_node(node, tmp_path):
    binary = need("prometheus", "prometheus")
    port = free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: oklog\n"
        f"    static_configs:\n      - targets: ['{node.api}']\n"
    )
    logf = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={conf}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path,
    )
    api = f"http://127.0.0.1:{port}/api/v1"

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
        try:
            r = httpx.get(f"{api}/query", params={"query": 'up{job="oklog"}'}, timeout=2)
            result = r.json()["data"]["result"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        return result and result[0]["value"][1] == "1" and result

    try:
        try:
            [series] = wait_for(up, timeout=30, interval=0.5, what="prometheus up == 1")
        except TimeoutError:
            targets = httpx.get(f"{api}/targets", timeout=2).json() if proc.poll() is None else None
            raise AssertionError(f"target never up; targets: {targets}") from None
        assert series["metric"]["instance"] == node.api
        # and the node's own series are in the TSDB
        r = httpx.get(f"{api}/label/__name__/values", timeout=5).json()
        assert any(name.startswith("oklog_") for name in r["data"]), r
    finally:
        stop_pid(proc)
        logf.close()
