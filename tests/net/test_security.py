"""Issue 20 with real nodes and real clients on 127.0.0.1: secure defaults, node-to-node
proofs from the cluster key (the delete, theft and fake-member attacks), client tokens
with roles on HTTP and the TCP ingest ports, and TLS."""

from __future__ import annotations

import base64
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import OKLOG, free_port, wait_for
from support import bearer, recv_all

from benchmarks import tlsfiles
from oklog.cli.commands import run_parser
from oklog.cluster.keyring import Keyring, new_key
from oklog.net.auth import ClientAuth, NodeKeys
from oklog.records.record import ULIDSource, stamp_lines

FAST = ["-ingest.segment-flush-age", "0.2s", "-store.segment-target-age", "0.2s"]
INGEST_TOKEN, QUERY_TOKEN, ADMIN_TOKEN = "ingest-" + "i" * 20, "query-" + "q" * 20, "admin-" + "a" * 20


def tokens_file(path: Path, *extra: str) -> Path:
    path.write_text(
        "# token role name\n"
        f"{INGEST_TOKEN} ingest shipper\n{QUERY_TOKEN} query grafana\n{ADMIN_TOKEN} admin ops\n"
        + "".join(e + "\n" for e in extra)
    )
    return path


def count(node, q: str, token: str = "") -> int:
    r = httpx.get(node.url + "/store/query", params={"q": q}, headers=bearer(token) if token else {},
                  timeout=30)
    assert r.status_code == 200, r.text
    return r.content.count(b"\n")


def health(base: str, verify: ssl.SSLContext | bool = True) -> bool:
    try:
        return httpx.get(base + "/health", verify=verify, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def segment_body(n: int, word: bytes) -> bytes:
    return stamp_lines([b"%s %d" % (word, i) for i in range(n)], ULIDSource().headers(n, b"default"))


# -- secure by default --------------------------------------------------------------------


def test_default_addresses_are_loopback():
    ns = run_parser().parse_args([])
    for flag in ("api", "ingest_fast", "ingest_durable", "ingest_bulk", "cluster"):
        assert getattr(ns, flag).startswith("tcp://127.0.0.1:"), flag


def _refused(args: list[str]) -> str:
    r = subprocess.run(OKLOG + ["run", *args], capture_output=True, timeout=30, text=True,
                       env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert r.returncode != 0, r.stdout + r.stderr
    return r.stderr


def test_beyond_loopback_or_peer_without_a_key_refuses_to_start(tmp_path):
    # Refused before anything binds, so 0.0.0.0 here never listens.
    err = _refused(["-api", f"0.0.0.0:{free_port()}"])
    assert "oklog keygen -o cluster.key" in err and "-cluster.key cluster.key" in err and "-insecure" in err
    err = _refused(["-api", f"127.0.0.1:{free_port()}", "-cluster", f"127.0.0.1:{free_port()}",
                    "-peer", "127.0.0.1:1"])
    assert "-peer without a cluster key" in err and "oklog keygen" in err
    # With a key, clients beyond loopback still need tokens.
    key = tmp_path / "k"
    key.write_text(new_key() + "\n")
    err = _refused(["-cluster.key", str(key), "-ingest.fast", f"0.0.0.0:{free_port()}"])
    assert "-auth.tokens" in err
    # Syslog takes no tokens or TLS: beyond loopback only with -insecure, even with a key and tokens.
    toks = tokens_file(tmp_path / "tokens")
    err = _refused(["-cluster.key", str(key), "-auth.tokens", str(toks), "-ingest.syslog", f"0.0.0.0:{free_port()}"])
    assert "-ingest.syslog" in err and "loopback only" in err


def test_insecure_starts_and_says_so_loudly(node_factory):
    n = node_factory("insecure", FAST + ["-insecure", "-store.segment-replication-factor", "1", "-peer", f"127.0.0.1:{free_port()}"]).start()
    assert "INSECURE" in n.log_path.read_text()
    # Without a key, nothing is asked of a caller on loopback: the quickstart works unchanged.
    n.send_fast(b"plain record\n")
    wait_for(lambda: count(n, "plain record") == 1, what="record")


# -- node-to-node proofs ------------------------------------------------------------------

INTERNAL = [
    ("GET", "/ingest/next"), ("GET", "/ingest/read"), ("GET", "/ingest/pending"),
    ("POST", "/ingest/commit"), ("POST", "/ingest/failed"),
    ("GET", "/ingest/_stream"), ("POST", "/store/replicate"), ("GET", "/store/_query"),
    ("GET", "/store/segments"), ("GET", "/store/segment"), ("DELETE", "/store/segment"),
    ("GET", "/store/_clusterstate"),
]


def test_internal_endpoints_need_the_cluster_key(node_factory, tmp_path):
    n = node_factory("keyed", FAST).start()  # the fixture gives every node a cluster key
    member = n.member_auth()
    assert member is not None
    outsider = ClientAuth(NodeKeys(Keyring([base64.b64decode(new_key())])))  # a fake member: another key
    n.send_fast(b"".join(b"precious %d secret=x\n" % i for i in range(1000)))
    wait_for(lambda: count(n, "precious") == 1000, what="1000 records stored")
    segs = httpx.get(n.url + "/store/segments", auth=member, timeout=10).json()
    names = [s["name"] for s in segs["segments"]]
    assert names

    c = httpx.Client(timeout=10)  # one client: the attacks below are hundreds of requests
    for method, path in INTERNAL:
        for auth in (None, outsider):
            r = c.request(method, n.url + path, auth=auth)
            assert r.status_code == 401, (method, path, r.status_code, r.text)

    # The delete attack: every segment, without and with a wrong key.
    for name in names:
        for auth in (None, outsider):
            r = c.delete(n.url + "/store/segment", params={"name": name}, auth=auth)
            assert r.status_code == 401
    # The theft attack: next → read → commit, as fast as it can, while records arrive.
    n.send_fast(b"".join(b"fresh %d\n" % i for i in range(2000)))
    for _ in range(100):
        for auth in (None, outsider):
            r = c.get(n.url + "/ingest/next", auth=auth)
            assert r.status_code == 401
            assert c.post(n.url + "/ingest/commit", params={"id": "x"}, auth=auth).status_code == 401
    c.close()
    wait_for(lambda: count(n, "fresh") == 2000, what="every fresh record stored")
    # The fake member's replication: refused, nothing of it stored.
    r = httpx.post(n.url + "/store/replicate", content=segment_body(50, b"injected"), auth=outsider, timeout=10)
    assert r.status_code == 401
    assert count(n, "precious") == 1000 and count(n, "injected") == 0

    # A member's proof works (the refusals above are not the endpoints being broken) ...
    body = segment_body(3, b"by a member")
    assert httpx.post(n.url + "/store/replicate", content=body, auth=member, timeout=10).status_code == 200
    # ... once: a captured proof replayed is refused.
    proof = member.node_keys.sign("GET", b"/store/segments")
    assert httpx.get(n.url + "/store/segments", headers={"X-Oklog-Node": proof}).status_code == 200
    r = httpx.get(n.url + "/store/segments", headers={"X-Oklog-Node": proof})
    assert r.status_code == 401 and "replayed" in r.text
    # A proof for another path does not open this one.
    other = member.node_keys.sign("GET", b"/store/segments")
    assert httpx.delete(n.url + "/store/segment", params={"name": names[0]},
                        headers={"X-Oklog-Node": other}).status_code == 401
    assert count(n, "precious") == 1000
    metrics = httpx.get(n.url + "/metrics").text
    assert 'oklog_auth_denied_total{reason="missing"}' in metrics
    assert 'oklog_auth_denied_total{reason="bad_node_proof"}' in metrics


def test_keyed_cluster_works_across_members(node_factory):
    """Consumption, replication and fanned-out queries between two keyed members."""
    a = node_factory("a", FAST + ["-store.segment-replication-factor", "2"]).start()
    b = node_factory("b", FAST + ["-store.segment-replication-factor", "2",
                                  "-peer", f"127.0.0.1:{a.ports['cluster']}"]).start()
    wait_for(lambda: len(httpx.get(a.url + "/cluster/state").json()["members"]) == 2, what="two members")
    b.send_fast(b"".join(b"across %d\n" % i for i in range(300)))
    wait_for(lambda: count(a, "across") == 300, what="query through a")
    for n in (a, b):
        data = httpx.get(n.url + "/store/_query", params={"q": "across"}, auth=n.member_auth(), timeout=10).content
        assert data.count(b"\n") == 300  # replicated to both: replicate proved membership
    for n in (a, b):  # no member's call was refused
        assert 'oklog_auth_denied_total{reason="bad_node_proof"} 0.0' in httpx.get(n.url + "/metrics").text


# -- client tokens ---------------------------------------------------------------------------

# (method, path, role); POSTs carry an empty body: a 400 still shows the request got in.
ENDPOINTS = [
    ("POST", "/ingest/jsonline", "ingest"), ("POST", "/insert/jsonline", "ingest"),
    ("POST", "/loki/api/v1/push", "ingest"), ("POST", "/v1/logs", "ingest"), ("POST", "/_bulk", "ingest"),
    ("POST", "/logs/_bulk", "ingest"),
    ("GET", "/store/query", "query"), ("GET", "/cluster/state", "query"), ("GET", "/metrics", "query"),
    ("GET", "/store/segments", "admin"), ("GET", "/store/_query", "admin"), ("GET", "/ingest/next", "admin"),
    ("DELETE", "/store/segment", "admin"), ("POST", "/store/replicate", "admin"),
]
TOKEN_OF = {"ingest": INGEST_TOKEN, "query": QUERY_TOKEN, "admin": ADMIN_TOKEN}


def test_every_endpoint_401_without_a_token_403_with_the_wrong_role(node_factory, tmp_path):
    toks = tokens_file(tmp_path / "tokens")
    n = node_factory("tok", FAST + ["-auth.tokens", str(toks)])
    n.answering = lambda: health(n.url)  # type: ignore[method-assign]  # /cluster/state needs a token
    n.start()
    c = httpx.Client()  # one client for the hundreds of requests
    for method, path, role in ENDPOINTS:
        r = c.request(method, n.url + path, timeout=10)
        assert r.status_code == 401, (path, r.status_code)
        assert "Bearer" in r.headers["www-authenticate"]
        r = c.request(method, n.url + path, headers=bearer("not-a-token-at-all-xx"), timeout=10)
        assert r.status_code == 401, (path, r.status_code)
        for other, tok in TOKEN_OF.items():
            if other in (role, "admin"):
                continue
            r = c.request(method, n.url + path, headers=bearer(tok), timeout=10)
            assert r.status_code == 403, (path, other, r.status_code)
            assert role in r.text
        for tok in {TOKEN_OF[role], ADMIN_TOKEN}:
            r = c.request(method, n.url + path, headers=bearer(tok), timeout=10)
            assert r.status_code not in (401, 403), (path, r.status_code, r.text)
            # Basic, for shippers that only speak it: the token as password.
            r = c.request(method, n.url + path, auth=("anyone", tok), timeout=10)
            assert r.status_code not in (401, 403), (path, r.status_code, r.text)
    c.close()
    # The live stream: refused, then open with a query token.
    assert httpx.get(n.url + "/store/stream", timeout=10).status_code == 401
    with httpx.stream("GET", n.url + "/store/stream", headers=bearer(QUERY_TOKEN), timeout=10) as r:
        assert r.status_code == 200
    assert httpx.get(n.url + "/health").status_code == 200  # load balancers' probe stays open
    m = httpx.get(n.url + "/metrics", headers=bearer(QUERY_TOKEN)).text
    for reason in ("missing", "bad_token", "wrong_role"):
        line = next(ln for ln in m.splitlines() if ln.startswith(f'oklog_auth_denied_total{{reason="{reason}"}}'))
        assert float(line.split()[-1]) > 0, line
    # A record pushed over HTTP with an ingest token is found with a query token.
    r = httpx.post(n.url + "/ingest/jsonline", content=b'{"msg":"pushed with a token"}\n',
                   headers=bearer(INGEST_TOKEN), timeout=10)
    assert r.status_code < 300, r.text
    wait_for(lambda: count(n, "pushed with a token", QUERY_TOKEN) == 1, what="pushed record")


def _tcp(port: int, data: bytes, wrap=None) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        s = wrap(raw) if wrap else raw
        s.sendall(data)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return recv_all(s)


def test_tcp_ingest_token_line(node_factory, tmp_path):
    toks = tokens_file(tmp_path / "tokens")
    n = node_factory("tcp", FAST + ["-auth.tokens", str(toks)])
    n.answering = lambda: health(n.url)  # type: ignore[method-assign]  # /cluster/state needs a token
    n.start()
    assert _tcp(n.ports["fast"], b"no token here\n").startswith(b"ERR 401")
    assert _tcp(n.ports["durable"], b"\x01oklog-token wrong-token-xxxxxxxxx\nbad token\n").startswith(b"ERR 401")
    assert _tcp(n.ports["fast"], f"\x01oklog-token {QUERY_TOKEN}\nwrong role\n".encode()).startswith(b"ERR 403")
    _tcp(n.ports["fast"], f"\x01oklog-token {INGEST_TOKEN}\n\x01oklog-topic app\nwith token 1\nwith token 2\n".encode())
    reply = _tcp(n.ports["durable"], f"\x01oklog-token {ADMIN_TOKEN}\nwith token 3\n".encode())
    assert reply == b"+1\n"
    wait_for(lambda: count(n, "with token", QUERY_TOKEN) == 3, what="token-line records")
    r = httpx.get(n.url + "/store/query", params={"q": "with token", "topic": "app"}, headers=bearer(QUERY_TOKEN))
    assert r.content.count(b"\n") == 2
    for q in ("no token here", "bad token", "wrong role"):
        assert count(n, q, QUERY_TOKEN) == 0
    # The CLI: forward and query with -token, and OKLOG_TOKEN; without one, refused.
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for mode in ("fast", "durable", "bulk"):
        p = subprocess.run(OKLOG + ["forward", "-mode", mode, "-token", INGEST_TOKEN, f"127.0.0.1:{n.ports[mode]}"],
                           input=f"forwarded {mode}\n".encode(), capture_output=True, timeout=60, env=env)
        assert p.returncode == 0, p.stderr
    wait_for(lambda: count(n, "forwarded", QUERY_TOKEN) == 3, what="forwarded with -token")
    p = subprocess.run(OKLOG + ["query", "-store", n.api, "-q", "forwarded"], capture_output=True, timeout=30, env=env)
    assert p.returncode != 0 and b"401" in p.stderr
    p = subprocess.run(OKLOG + ["query", "-store", n.api, "-q", "forwarded"], capture_output=True, timeout=30,
                       env=env | {"OKLOG_TOKEN": QUERY_TOKEN})
    assert p.returncode == 0 and p.stdout.count(b"\n") == 3, p.stderr
    p = subprocess.run(OKLOG + ["stream", "-store", n.api, "-token", INGEST_TOKEN],
                       capture_output=True, timeout=30, env=env)
    assert p.returncode != 0


def test_tokens_file_reread_on_change_and_on_sighup(node_factory, tmp_path):
    toks = tokens_file(tmp_path / "tokens")
    n = node_factory("reload", FAST + ["-auth.tokens", str(toks)])
    n.answering = lambda: health(n.url)  # type: ignore[method-assign]  # /cluster/state needs a token
    n.start()

    def status(tok: str) -> int:
        return httpx.get(n.url + "/cluster/state", headers=bearer(tok), timeout=5).status_code

    new1 = "new-one-" + "n" * 20
    tokens_file(toks, f"{new1} query later")
    wait_for(lambda: status(new1) == 200, 10, what="new token after the file changed")
    # Same size, same mtime: only SIGHUP makes the node read it.
    st = toks.stat()
    new2 = "new-two-" + "n" * 20
    tokens_file(toks, f"{new2} query later")
    os.utime(toks, ns=(st.st_atime_ns, st.st_mtime_ns))
    time.sleep(1.5)
    assert status(new2) == 401 and status(new1) == 200
    n.signal(signal.SIGHUP)
    wait_for(lambda: status(new2) == 200, 10, what="new token after SIGHUP")
    assert status(new1) == 401
    # A broken file keeps the tokens that were good.
    toks.write_text("garbage line\n")
    time.sleep(1.5)
    assert status(new2) == 200
    assert n.proc.poll() is None


# -- TLS ----------------------------------------------------------------------------------------


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1."""
    f = tlsfiles.make(str(d), "oklog test")
    return Path(f.ca), Path(f.cert), Path(f.key)


def tls_pair(node_factory, tmp_path: Path, *extra: str):
    """Two started members serving TLS from one CA (``-tls.ca`` too, so they call each
    other over it), joined; returns them and a client context trusting the CA."""
    ca, cert, key = make_certs(tmp_path)
    tls = ["-tls.cert", str(cert), "-tls.key", str(key), "-tls.ca", str(ca), *extra]
    ctx = ssl.create_default_context(cafile=str(ca))
    a = node_factory("a", FAST + tls)
    a.answering = lambda: health(f"https://{a.api}", ctx)  # type: ignore[method-assign]
    a.start()
    b = node_factory("b", FAST + tls + ["-peer", f"127.0.0.1:{a.ports['cluster']}"])
    b.answering = lambda: health(f"https://{b.api}", ctx)  # type: ignore[method-assign]
    b.start()
    wait_for(lambda: len(httpx.get(f"https://{a.api}/cluster/state", verify=ctx).json()["members"]) == 2,
             what="two members")
    return a, b, ctx


def test_tls_api_and_ingest_with_tokens(node_factory, tmp_path):
    ca, cert, key = make_certs(tmp_path)
    toks = tokens_file(tmp_path / "tokens")
    n = node_factory("tls", FAST + ["-auth.tokens", str(toks), "-tls.cert", str(cert), "-tls.key", str(key)])
    https = f"https://{n.api}"

    n.answering = lambda: health(https, ssl.create_default_context(cafile=str(ca)))  # type: ignore[method-assign]
    n.start()
    # curl over TLS with a token, and without one.
    out = subprocess.run(["curl", "-sS", "--cacert", str(ca), "-H", f"Authorization: Bearer {QUERY_TOKEN}",
                          "-o", "/dev/null", "-w", "%{http_code}", https + "/cluster/state"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == "200", out.stderr
    out = subprocess.run(["curl", "-sS", "--cacert", str(ca), "-o", "/dev/null", "-w", "%{http_code}",
                          https + "/store/query"], capture_output=True, text=True, timeout=30)
    assert out.stdout == "401", out.stderr
    # curl with the wrong CA fails the handshake; plain HTTP to the TLS port gets no HTTP answer.
    (tmp_path / "other").mkdir()
    other_ca = make_certs(tmp_path / "other")[0]
    out = subprocess.run(["curl", "-sS", "--cacert", str(other_ca), https + "/health"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    with pytest.raises(httpx.HTTPError):
        r = httpx.get(n.url + "/health", timeout=5)
        raise AssertionError(f"plain HTTP answered {r.status_code}")
    # TCP ingest over TLS: a token line inside TLS; plain bytes to the TLS port are dropped.
    ctx = ssl.create_default_context(cafile=str(ca))
    _tcp(n.ports["fast"], f"\x01oklog-token {INGEST_TOKEN}\nover tls 1\n".encode(),
         wrap=lambda s: ctx.wrap_socket(s, server_hostname="127.0.0.1"))
    _tcp(n.ports["fast"], f"\x01oklog-token {INGEST_TOKEN}\nplain to tls\n".encode())
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for mode in ("fast", "durable", "bulk"):
        p = subprocess.run(OKLOG + ["forward", "-mode", mode, "-token", INGEST_TOKEN, "-tls.ca", str(ca),
                                    f"127.0.0.1:{n.ports[mode]}"],
                           input=f"over tls {mode}\n".encode(), capture_output=True, timeout=60, env=env)
        assert p.returncode == 0, p.stderr
    q = OKLOG + ["query", "-store", n.api, "-token", QUERY_TOKEN, "-tls.ca", str(ca), "-q", "tls"]
    wait_for(lambda: subprocess.run(q, capture_output=True, timeout=30, env=env).stdout.count(b"\n") == 4,
             what="records over TLS")
    p = subprocess.run(q, capture_output=True, timeout=30, env=env)
    assert b"plain to tls" not in p.stdout and p.returncode == 0
    # Counts and topics go through the same credentials as the query.
    p = subprocess.run(q + ["-count"], capture_output=True, timeout=30, env=env)
    assert p.returncode == 0 and p.stdout.strip() == b"4", p.stderr
    t = OKLOG + ["topics", "-store", n.api, "-token", QUERY_TOKEN, "-tls.ca", str(ca)]
    p = subprocess.run(t, capture_output=True, timeout=30, env=env)
    assert p.returncode == 0 and b"default" in p.stdout, p.stderr
    m = httpx.get(https + "/metrics", headers=bearer(QUERY_TOKEN), verify=ssl.create_default_context(cafile=str(ca))).text
    assert 'oklog_auth_denied_total{reason="tls_handshake"}' in m


def test_tls_cluster_members_call_each_other_over_tls(node_factory, tmp_path):
    """Members' API calls (consume, replicate, fanned-out query) go over TLS, verified with -tls.ca."""
    a, b, ctx = tls_pair(node_factory, tmp_path, "-store.segment-replication-factor", "2")
    with socket.create_connection(("127.0.0.1", b.ports["fast"]), timeout=10) as raw:
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        s.sendall(b"".join(b"tls member %d\n" % i for i in range(100)))
    for n in (a, b):
        wait_for(lambda n=n: httpx.get(f"https://{n.api}/store/_query", params={"q": "tls member"}, verify=ctx,
                                       auth=n.member_auth()).content.count(b"\n") == 100,
                 what="replicated over TLS to both")
    r = httpx.get(f"https://{a.api}/store/query", params={"q": "tls member"}, verify=ctx)
    assert r.status_code == 200 and r.content.count(b"\n") == 100


def test_stream_and_tui_with_token_over_tls(node_factory, tmp_path):
    import argparse

    import trio

    from oklog.net.auth import cli_http_kwargs
    from oklog.tui.client import ApiError, NodeClient

    ca, cert, key = make_certs(tmp_path)
    toks = tokens_file(tmp_path / "tokens")
    n = node_factory("tlsclients", FAST + ["-auth.tokens", str(toks), "-tls.cert", str(cert), "-tls.key", str(key)])
    ctx = ssl.create_default_context(cafile=str(ca))
    n.answering = lambda: health(f"https://{n.api}", ctx)  # type: ignore[method-assign]
    n.start()

    async def tui_state(token: str) -> dict:
        c = NodeClient(n.api, http=cli_http_kwargs(argparse.Namespace(token=token, tls_ca=str(ca))))
        try:
            return await c.cluster_state()
        finally:
            await c.aclose()

    assert trio.run(tui_state, QUERY_TOKEN)["self"] == f"127.0.0.1:{n.ports['cluster']}"
    with pytest.raises(ApiError):
        trio.run(tui_state, INGEST_TOKEN)

    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OKLOG_TOKEN": QUERY_TOKEN}
    p = subprocess.Popen(OKLOG + ["stream", "-store", n.api, "-tls.ca", str(ca), "-q", "live"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 30
        got = b""
        os.set_blocking(p.stdout.fileno(), False)  # type: ignore[union-attr]
        while b"live over tls" not in got and time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", n.ports["fast"]), timeout=10) as raw:
                s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                s.sendall(f"\x01oklog-token {INGEST_TOKEN}\nlive over tls\n".encode())
            time.sleep(0.5)
            got += p.stdout.read() or b""  # type: ignore[union-attr]
        assert b"live over tls" in got, p.stderr.read() if p.poll() is not None else got  # type: ignore[union-attr]
    finally:
        p.kill()
        p.wait(10)


def test_node_proof_target_with_an_empty_query_verifies():
    keys = NodeKeys(Keyring([base64.b64decode(new_key())]))
    assert keys.verify(keys.sign("GET", b"/ingest/_stream?"), "GET", b"/ingest/_stream") is None
    assert keys.verify(keys.sign("GET", b"/a?x=1"), "GET", b"/a?x=2") is not None
    assert keys.verify(keys.sign("GET", b"/a"), "DELETE", b"/a") is not None


def test_otel_exporter_and_curl_loki_push_with_a_bearer_over_tls(node_factory, tmp_path, monkeypatch):
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    # requests lets these override a session's CA file (psf/requests#3829).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ca, cert, key = make_certs(tmp_path)
    toks = tokens_file(tmp_path / "tokens")
    n = node_factory("shippers", FAST + ["-auth.tokens", str(toks), "-tls.cert", str(cert), "-tls.key", str(key)])
    ctx = ssl.create_default_context(cafile=str(ca))
    https = f"https://{n.api}"
    n.answering = lambda: health(https, ctx)  # type: ignore[method-assign]
    n.start()

    def found(q: str) -> int:
        r = httpx.get(https + "/store/query", params={"q": q}, headers=bearer(QUERY_TOKEN), verify=ctx, timeout=30)
        return r.content.count(b"\n")

    for token, want in ((QUERY_TOKEN, 0), (INGEST_TOKEN, 1)):
        provider = LoggerProvider(resource=Resource.create({"service.name": "secure.app"}))
        provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(
            endpoint=https + "/v1/logs", headers={"Authorization": f"Bearer {token}"}, certificate_file=str(ca))))
        provider.get_logger("t").emit(body=f"otel with {token[:5]}")
        provider.force_flush(10_000)
        provider.shutdown()
        if want:
            wait_for(lambda t=token: found(f"otel with {t[:5]}") == 1, what="OTLP record")
    assert found("otel with query") == 0  # the query token's push was refused (403)
    ts = str(time.time_ns())
    push = '{"streams":[{"stream":{"job":"secure"},"values":[["' + ts + '","loki with a bearer"]]}]}'
    for token, code in (("", "401"), (QUERY_TOKEN, "403"), (INGEST_TOKEN, "204")):
        out = subprocess.run(["curl", "-sS", "--cacert", str(ca), "-o", "/dev/null", "-w", "%{http_code}",
                              "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {token}",
                              "--data-binary", push, https + "/loki/api/v1/push"],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout == code, (token[:5], out.stdout, out.stderr)
    wait_for(lambda: found("loki with a bearer") == 1, what="Loki record")
