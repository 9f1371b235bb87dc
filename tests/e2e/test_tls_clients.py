"""Issue 20, real clients over TLS with credentials: rsyslog (Debian ``rsyslog-gnutls``)
sending syslog over TLS (RFC 5425) with a client certificate, a real Prometheus scraping
``/metrics`` with a bearer token over https, and curl pushing OTLP JSON with a bearer.

Everything on 127.0.0.1; certificates are made here with ``cryptography`` (a test CA,
a server certificate for 127.0.0.1, client certificates). Each test skips only when
its external binary is absent (``make deps`` installs them on Debian).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_for
from support import bearer, recv_all, stop_pid

from benchmarks import tlsfiles

pytestmark = pytest.mark.slow

FAST = ["-ingest.segment-flush-age", "0.2s", "-store.segment-target-age", "0.2s"]
INGEST_TOKEN, QUERY_TOKEN, ADMIN_TOKEN = "ingest-" + "i" * 20, "query-" + "q" * 20, "admin-" + "a" * 20
CMD_TIMEOUT = 30


# -- certificates -----------------------------------------------------------------------------


@dataclass
class Certs:
    ca: Path
    server: Path
    server_key: Path
    client: Path
    client_key: Path


def make_certs(d: Path, label: str = "oklog test") -> Certs:
    """A CA, a server certificate for 127.0.0.1 (IP SAN) and a client certificate."""
    f = tlsfiles.make(str(d), label, client=True)
    return Certs(Path(f.ca), Path(f.cert), Path(f.key), Path(f.client), Path(f.client_key))


# -- helpers ------------------------------------------------------------------------------------


def need(binary: str, package: str) -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"{binary} not installed (make deps, or apt-get install -y {package})")
    return path


def tokens_file(path: Path) -> Path:
    path.write_text(f"{INGEST_TOKEN} ingest shipper\n{QUERY_TOKEN} query prometheus\n{ADMIN_TOKEN} admin ops\n")
    return path


def health(base: str, ctx: ssl.SSLContext) -> bool:
    try:
        return httpx.get(base + "/health", verify=ctx, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def tls_node(node_factory, name: str, certs: Certs, tmp_path: Path, *extra: str):
    toks = tokens_file(tmp_path / f"{name}.tokens")
    n = node_factory(name, FAST + ["-auth.tokens", str(toks), "-tls.cert", str(certs.server),
                                   "-tls.key", str(certs.server_key), *extra])
    n.https = f"https://{n.api}"
    n.ctx = ssl.create_default_context(cafile=str(certs.ca))
    n.answering = lambda: health(n.https, n.ctx)
    return n.start()


def found(n, q: str) -> list[bytes]:
    r = httpx.get(n.https + "/store/query", params={"q": q}, headers=bearer(QUERY_TOKEN),
                  verify=n.ctx, timeout=30)
    assert r.status_code == 200, r.text
    return r.content.splitlines()


def denied(n, reason: str) -> float:
    m = httpx.get(n.https + "/metrics", headers=bearer(QUERY_TOKEN), verify=n.ctx, timeout=10).text
    for line in m.splitlines():
        if line.startswith(f'oklog_auth_denied_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


def marker(kind: str) -> str:
    return f"tlsc-{kind}-{uuid.uuid4().hex}"


# -- 1. rsyslog over TLS (RFC 5425) ---------------------------------------------------------------

RSYSLOG_TLS_CONF = """\
global(workDirectory="{work}"
       DefaultNetstreamDriverCAFile="{ca}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{sock}" CreatePath="on")
if $msg contains "tlsc-cert-" then {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
         StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
         StreamDriverPermittedPeers="127.0.0.1"
         StreamDriver.CertFile="{cert}" StreamDriver.KeyFile="{key}"
         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
if $msg contains "tlsc-nocert-" then {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
         StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
         StreamDriverPermittedPeers="127.0.0.1"
         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
"""


def have_gtls() -> bool:
    return any(Path("/usr/lib").glob("**/rsyslog/lmnsd_gtls.so"))


def test_rsyslog_sends_syslog_over_tls_with_a_client_certificate(node_factory, tmp_path):
    rsyslogd = need("rsyslogd", "rsyslog")
    logger = need("logger", "bsdutils")
    if not have_gtls():
        pytest.skip("rsyslog's TLS driver not installed (make deps, or apt-get install -y rsyslog-gnutls)")
    certs = make_certs(tmp_path / "certs")
    port = free_port()
    n = tls_node(node_factory, "syslogtls", certs, tmp_path, "-tls.client-ca", str(certs.ca),
                 "-ingest.syslog-tls", f"127.0.0.1:{port}")
    work = tmp_path / "rsyslog-work"
    work.mkdir()
    sock = tmp_path / "log.sock"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(RSYSLOG_TLS_CONF.format(work=work, sock=sock, port=port, ca=certs.ca,
                                            cert=certs.client, key=certs.client_key))
    check = subprocess.run([rsyslogd, "-N1", "-f", str(conf)], capture_output=True, timeout=CMD_TIMEOUT)
    assert check.returncode == 0, check.stderr.decode(errors="replace")
    logf = open(tmp_path / "rsyslogd.log", "wb")
    proc = subprocess.Popen([rsyslogd, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")],
                            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: sock.exists() or proc.poll() is not None, timeout=CMD_TIMEOUT, what="rsyslogd socket")
        assert proc.poll() is None, f"rsyslogd exited: {(tmp_path / 'rsyslogd.log').read_text()}"
        with_cert, without = marker("cert"), marker("nocert")
        before = denied(n, "missing")
        for i in range(3):
            subprocess.run([logger, "-u", str(sock), "-t", "tlstest", f"{with_cert} {i}"], check=True,
                           timeout=CMD_TIMEOUT)
        subprocess.run([logger, "-u", str(sock), "-t", "tlstest", without], check=True, timeout=CMD_TIMEOUT)
        try:
            lines = wait_for(lambda: (ls := found(n, with_cert)) and len(ls) >= 3 and ls, timeout=30,
                             what="rsyslog records over TLS")
        except TimeoutError:
            raise AssertionError(f"rsyslog log: {(tmp_path / 'rsyslogd.log').read_text()[-2000:]}\n"
                                 f"node log: {n.log_path.read_text()[-2000:]}") from None
        # The connection without a certificate is refused (it opens with no token line either).
        wait_for(lambda: denied(n, "missing") > before, timeout=30, what="the certificate-less sender refused")
        time.sleep(1.0)  # the refused sender retries every second: still nothing of it stored
        lines = found(n, with_cert)
        assert len(lines) == 3, lines  # each exactly once
        assert all(b"tlstest" in ln and b">1 " in ln for ln in lines), lines  # RFC 5424, octet-counted framing
        assert found(n, without) == []
        r = httpx.get(n.https + "/store/query", params={"q": with_cert, "topic": "syslog"},
                      headers=bearer(QUERY_TOKEN), verify=n.ctx, timeout=30)
        assert r.content.count(b"\n") == 3
    finally:
        stop_pid(proc)
        logf.close()


def _send(port: int, data: bytes, ctx: ssl.SSLContext | None, *, reply: bool = False) -> bytes:
    """Send, end our side (TLS: close_notify), and return what the server said before closing
    (``reply``: wait for the server to close; a refused connection is answered ``ERR ...``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
        s.sendall(data)
        if not reply:
            if isinstance(s, ssl.SSLSocket):
                s.unwrap()
            else:
                s.shutdown(socket.SHUT_WR)
                s.recv(1)
            return b""
        return recv_all(s)


def test_syslog_tls_listener_checks_its_clients(node_factory, tmp_path):
    """Client certificate or token line; plain bytes and other CAs' certificates get nothing stored."""
    certs = make_certs(tmp_path / "certs")
    other = make_certs(tmp_path / "other", "intruder")
    port = free_port()
    n = tls_node(node_factory, "syslogcheck", certs, tmp_path, "-tls.client-ca", str(certs.ca),
                 "-ingest.syslog-tls", f"127.0.0.1:{port}")
    m = marker("py")

    def ctx(client: tuple[Path, Path] | None) -> ssl.SSLContext:
        c = ssl.create_default_context(cafile=str(certs.ca))
        if client:
            c.load_cert_chain(*client)
        return c

    frame = (b"<13>1 2026-01-01T00:00:00Z host app - - - %s" % m.encode())
    framed = lambda tag: b"%d %s %s" % (len(frame) + len(tag) + 1, frame, tag)  # noqa: E731
    # A certificate signed by -tls.client-ca: octet-counted and LF-framed messages stored.
    _send(port, framed(b"cert-counted") + frame + b" cert-lf\n", ctx((certs.client, certs.client_key)))
    # A token line instead of a certificate (ingest role); a query token is refused (403).
    _send(port, f"\x01oklog-token {INGEST_TOKEN}\n".encode() + framed(b"token-ok"), ctx(None))
    assert _send(port, f"\x01oklog-token {QUERY_TOKEN}\n".encode() + framed(b"token-query"),
                 ctx(None), reply=True).startswith(b"ERR 403")
    # Nothing at all: 401 and closed.
    assert _send(port, framed(b"no-credentials"), ctx(None), reply=True).startswith(b"ERR 401")
    # A certificate from another CA fails the handshake; plain syslog to the TLS port too.
    try:
        _send(port, framed(b"other-ca"), ctx((other.client, other.client_key)), reply=True)
    except (ssl.SSLError, OSError):
        pass  # TLS 1.3: the server's alert may come only after our sendall; counted below either way
    _send(port, framed(b"plain") + b"\n", None)
    wait_for(lambda: len(found(n, m)) >= 3, what="syslog over TLS from Python")
    time.sleep(0.5)
    lines = found(n, m)
    got = sorted(ln.rsplit(b" ", 1)[-1] for ln in lines)
    assert got == [b"cert-counted", b"cert-lf", b"token-ok"], lines
    assert denied(n, "tls_handshake") >= 2  # the other CA's client and the plain sender


def test_syslog_tls_needs_a_certificate_and_is_a_client_listener(tmp_path):
    """-ingest.syslog-tls without -tls.cert refuses to start; beyond loopback it needs tokens like
    every client listener, and the plain syslog listener's refusal points to it."""
    from conftest import OKLOG

    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    base = OKLOG + ["run", "-ingest.path", str(tmp_path / "i"), "-store.path", str(tmp_path / "s")]

    def refused(*args: str) -> str:
        p = subprocess.run(base + list(args), capture_output=True, text=True, timeout=CMD_TIMEOUT, env=env)
        assert p.returncode != 0, p.stderr
        return p.stderr

    assert "-ingest.syslog-tls needs -tls.cert" in refused("-ingest.syslog-tls", "127.0.0.1:0")
    key = tmp_path / "cluster.key"
    subprocess.run(OKLOG + ["keygen", "-o", str(key)], check=True, env=env, timeout=CMD_TIMEOUT)
    certs = make_certs(tmp_path / "certs")
    err = refused("-cluster.key", str(key), "-tls.cert", str(certs.server), "-tls.key", str(certs.server_key),
                  "-ingest.syslog-tls", "0.0.0.0:0")
    assert "-ingest.syslog-tls 0.0.0.0" in err and "-auth.tokens" in err
    assert "-ingest.syslog-tls" in refused("-cluster.key", str(key), "-ingest.syslog", "0.0.0.0:0")


# -- 2. Prometheus scraping /metrics with a bearer token over https -----------------------------


def test_prometheus_scrapes_with_a_bearer_token_over_tls(node_factory, tmp_path):
    binary = need("prometheus", "prometheus")
    certs = make_certs(tmp_path / "certs")
    n = tls_node(node_factory, "scraped", certs, tmp_path)
    (tmp_path / "token").write_text(QUERY_TOKEN + "\n")
    (tmp_path / "wrong").write_text(INGEST_TOKEN + "\n")
    port = free_port()
    conf = tmp_path / "prometheus.yml"
    tls = f"    scheme: https\n    tls_config:\n      ca_file: {certs.ca}\n"
    target = f"    static_configs:\n      - targets: ['{n.api}']\n"
    conf.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: oklog\n{tls}    authorization:\n      credentials_file: {tmp_path / 'token'}\n{target}"
        f"  - job_name: oklog-no-token\n{tls}{target}"
        f"  - job_name: oklog-wrong-role\n{tls}    bearer_token_file: {tmp_path / 'wrong'}\n{target}"
        f"  - job_name: oklog-plain-http\n{target}"
    )
    promtool = shutil.which("promtool")
    if promtool:
        p = subprocess.run([promtool, "check", "config", str(conf)], capture_output=True, timeout=CMD_TIMEOUT)
        assert p.returncode == 0, p.stdout + p.stderr
    logf = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={conf}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path,
    )
    api = f"http://127.0.0.1:{port}/api/v1"

    def targets() -> dict[str, dict] | None:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
        try:
            active = httpx.get(f"{api}/targets", timeout=2).json()["data"]["activeTargets"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        by_job = {t["labels"]["job"]: t for t in active}
        return by_job if len(by_job) == 4 and all(t["health"] != "unknown" for t in by_job.values()) else None

    try:
        try:
            wait_for(lambda: (t := targets()) and t["oklog"]["health"] == "up", timeout=60, interval=0.5,
                     what="the token job up")
        except TimeoutError:
            raise AssertionError(f"targets: {targets()}") from None
        t = targets()
        assert t is not None
        assert t["oklog"]["scrapeUrl"].startswith("https://"), t["oklog"]
        assert t["oklog-no-token"]["health"] == "down" and "401" in t["oklog-no-token"]["lastError"], t
        assert t["oklog-wrong-role"]["health"] == "down" and "403" in t["oklog-wrong-role"]["lastError"], t
        assert t["oklog-plain-http"]["health"] == "down", t
        r = httpx.get(f"{api}/query", params={"query": 'up{job="oklog"}'}, timeout=5).json()
        assert r["data"]["result"][0]["value"][1] == "1", r

        def scraped():
            q = 'count({job="oklog", __name__=~"oklog_.+"})'
            res = httpx.get(f"{api}/query", params={"query": q}, timeout=5).json()["data"]["result"]
            return res and float(res[0]["value"][1]) > 0

        wait_for(scraped, timeout=30, interval=0.5, what="oklog_ series scraped over TLS")
        res = httpx.get(f"{api}/query", params={"query": 'count({job="oklog-no-token", __name__=~"oklog_.+"})'},
                        timeout=5).json()["data"]["result"]
        assert res == [], res
    finally:
        stop_pid(proc)
        logf.close()


# -- 3. OTLP JSON pushed by curl with a bearer over TLS ---------------------------------------------


def test_curl_otlp_json_push_with_a_bearer_over_tls(node_factory, tmp_path):
    curl = need("curl", "curl")
    certs = make_certs(tmp_path / "certs")
    n = tls_node(node_factory, "otlpjson", certs, tmp_path)
    m = marker("otlp")
    body = json.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "curl.app"}}]},
        "scopeLogs": [{"logRecords": [{"timeUnixNano": str(time.time_ns()), "body": {"stringValue": m}}]}],
    }]})

    def push(*auth: str, url: str = n.https + "/v1/logs") -> str:
        p = subprocess.run([curl, "-sS", "--cacert", str(certs.ca), "-o", "/dev/null", "-w", "%{http_code}",
                            "-H", "Content-Type: application/json", *auth, "--data-binary", body, url],
                           capture_output=True, text=True, timeout=CMD_TIMEOUT)
        return p.stdout

    assert push() == "401"
    assert push("-H", f"Authorization: Bearer {QUERY_TOKEN}") == "403"
    assert push("-H", f"Authorization: Bearer {INGEST_TOKEN}") == "200"
    # Plain HTTP to the TLS port gets no HTTP answer (curl prints 000).
    assert push("-H", f"Authorization: Bearer {INGEST_TOKEN}", url=f"http://{n.api}/v1/logs") == "000"
    wait_for(lambda: found(n, m), what="OTLP JSON record")
    time.sleep(0.5)
    [line] = found(n, m)
    r = httpx.get(n.https + "/store/query", params={"q": m, "topic": "curl.app"},
                  headers=bearer(QUERY_TOKEN), verify=n.ctx, timeout=30)
    assert r.content.count(b"\n") == 1, (line, r.content)


# -- 5. Fluent forward: the same gate as the other TCP ingest ports ----------------------------


def test_fluent_listener_takes_certificates_and_tokens_only(node_factory, tmp_path):
    """With -auth.tokens, a Fluent client needs a client certificate (TLS) or a token line:
    the real fluent-logger, which sends neither, stores nothing; beyond loopback the
    listener starts only with -tls.client-ca."""
    import msgpack
    from fluent import sender

    certs = make_certs(tmp_path / "certs")
    port = free_port()
    n = tls_node(node_factory, "fluentgate", certs, tmp_path, "-tls.client-ca", str(certs.ca),
                 "-ingest.fluent", f"127.0.0.1:{port}")
    m = marker("fluent")

    def msg(tag: str) -> bytes:
        return msgpack.packb(["app", int(time.time()), {"log": f"{m} {tag}"}])

    def ctx(client: tuple[Path, Path] | None) -> ssl.SSLContext:
        c = ssl.create_default_context(cafile=str(certs.ca))
        if client:
            c.load_cert_chain(*client)
        return c

    before = denied(n, "tls_handshake")
    # The real client, plain TCP: the handshake fails, nothing is stored.
    s = sender.FluentSender("app", host="127.0.0.1", port=port, timeout=3)
    s.emit("t", {"log": f"{m} fluent-logger-plain"})
    s.close()
    _send(port, msg("cert"), ctx((certs.client, certs.client_key)))
    _send(port, f"\x01oklog-token {INGEST_TOKEN}\n".encode() + msg("token"), ctx(None))
    assert _send(port, msg("nothing"), ctx(None), reply=True).startswith(b"ERR 401")
    wait_for(lambda: len(found(n, m)) >= 2, what="fluent records with credentials")
    time.sleep(0.5)
    got = sorted(ln.rsplit(b" ", 1)[-1] for ln in found(n, m))
    assert got == [b"cert", b"token"], got
    assert denied(n, "tls_handshake") > before  # the plain fluent-logger


def test_fluent_beyond_loopback_needs_client_certificates(tmp_path):
    from oklog.cluster.keyring import new_key

    key = tmp_path / "k"
    key.write_text(new_key() + "\n")
    toks = tokens_file(tmp_path / "tokens")
    args = [sys.executable, "-m", "oklog", "run", "-cluster.key", str(key), "-auth.tokens", str(toks),
            "-store.path", str(tmp_path / "d"), "-ingest.fluent", f"0.0.0.0:{free_port()}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    assert r.returncode != 0 and "-ingest.fluent" in r.stderr and "-tls.client-ca" in r.stderr, r.stderr
