"""Members call each other only over TLS made from the cluster key (oklog.cluster.nodetls):
replication and cluster queries go over the node port, plain HTTP and strangers get no
answer there, and a keyring rotated one node at a time keeps the cluster serving."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import time

import httpx
import pytest
from conftest import OKLOG, wait_for
from support import alive, cluster_state, key_file, keyed_nodes, node_id

from oklog.cluster.keyring import Keyring, new_key
from oklog.cluster.nodetls import NodeTLS
from oklog.net.auth import ClientAuth, NodeKeys

FAST = ["-ingest.segment-flush-age", "0.3s", "-store.segment-target-age", "0.3s",
        "-cluster.suspicion-timeout", "2s", "-store.segment-replication-factor", "2"]


def node_url(n) -> str:
    return f"https://127.0.0.1:{n.ports['node']}"


def raw_reply(port: int, wrap=None) -> bytes:
    """What a plain (or ``wrap``ped) HTTP request to ``port`` gets back, b"" if nothing."""
    got = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            conn = wrap(s) if wrap is not None else s
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            while len(got) < 4096:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                got += chunk
    except (OSError, ssl.SSLError):
        pass
    return got


@pytest.mark.slow
def test_members_replicate_and_query_over_the_node_tls_port_only(node_factory, tmp_path):
    a = node_factory("a", FAST).start()
    b = node_factory("b", FAST + ["-peer", node_id(a)]).start()
    wait_for(lambda: alive(a) == alive(b) == {node_id(a), node_id(b)}, 20, what="two members")
    for n in (a, b):
        metas = {m["id"]: m["meta"] for m in cluster_state(n)["members"]}
        for m in (a, b):
            assert metas[node_id(m)].get("node_addr") == f"127.0.0.1:{m.ports['node']}", metas
    lines = [f"clear-text-canary {i} from {n.ports['fast']}" for n in (a, b) for i in range(50)]
    a.send_fast("".join(x + "\n" for x in lines[:50]).encode())
    b.send_fast("".join(x + "\n" for x in lines[50:]).encode())

    def complete(n) -> bool:
        r = n.query(q="clear-text-canary")
        return r.status_code == 200 and r.content.count(b"clear-text-canary") == 100

    for n in (a, b):
        wait_for(lambda n=n: complete(n), 30, what="every record through a cluster query")
    # Replicated: the store tier's copies went across, and every member call came in
    # on the TLS node port; none signed over the public (plain) API.
    received = sum(cluster_state(n)["pipeline"]["store"]["replications_received"] for n in (a, b))
    assert received > 0
    for n in (a, b):
        h = cluster_state(n)["pipeline"]["http"]
        assert h["node_port_requests"] > 0, h
        assert h["api_member_calls"] == 0, h

    # Plain HTTP to the node port gets no HTTP answer (the public API does answer it).
    assert raw_reply(a.ports["api"]).startswith(b"HTTP/1.1 200")
    assert not raw_reply(a.ports["node"]).startswith(b"HTTP/"), raw_reply(a.ports["node"])
    # TLS without a certificate from the cluster key: refused in the handshake.
    anon = ssl.create_default_context()
    anon.check_hostname = False
    anon.verify_mode = ssl.CERT_NONE
    assert raw_reply(a.ports["node"], lambda s: anon.wrap_socket(s)) == b""
    # A process holding another key: neither side trusts the other.
    other = NodeTLS(Keyring([Keyring.load(a.key_path).keys[0][::-1]]), "stranger")
    with pytest.raises(httpx.HTTPError):
        httpx.get(node_url(a) + "/health", verify=other.client_context(), timeout=5)
    # The key's certificate alone opens the channel but not the endpoints: members only.
    ring = Keyring.load(a.key_path)
    mine = NodeTLS(ring, "tool").client_context()
    assert httpx.get(node_url(a) + "/health", verify=mine, timeout=5).status_code == 200
    r = httpx.get(node_url(a) + "/store/_query", params={"q": "clear-text-canary"}, verify=mine, timeout=5)
    assert r.status_code == 401, r.text
    r = httpx.get(node_url(a) + "/store/query", verify=mine, timeout=5,
                  auth=ClientAuth(NodeKeys(ring)))
    assert r.status_code == 404, r.text  # public routes stay on the API
    r = httpx.get(node_url(a) + "/store/_query", params={"q": "clear-text-canary", "format": "raw"},
                  verify=mine, timeout=5, auth=ClientAuth(NodeKeys(ring)))
    assert r.status_code == 200 and r.content.count(b"clear-text-canary") == 100

    # The operator's repair with the key reads the state from the API it was given,
    # then calls every member on its node port.
    before = {node_id(n): cluster_state(n)["pipeline"]["http"] for n in (a, b)}
    r2 = subprocess.run(OKLOG + ["repair", "-store", a.api, "-cluster.key", a.key_path, "-from", "1h", "-quiet"],
                        capture_output=True, timeout=120)
    assert r2.returncode == 0, r2.stderr
    after = {node_id(n): cluster_state(n)["pipeline"]["http"] for n in (a, b)}
    assert after[node_id(a)]["api_member_calls"] == 1  # the cluster state, from -store
    assert after[node_id(b)]["api_member_calls"] == 0
    for n in (a, b):
        assert after[node_id(n)]["node_port_requests"] > before[node_id(n)]["node_port_requests"]


@pytest.mark.slow
def test_rotating_the_key_one_node_at_a_time_keeps_the_cluster_serving(node_factory, tmp_path):
    old, new = new_key(), new_key()
    nodes, files = keyed_nodes(node_factory, tmp_path, old, FAST)
    sent = 0

    def write_and_find(tag: str) -> None:
        nonlocal sent
        for n in nodes:
            n.send_fast(f"rotation record {tag} via {n.ports['fast']}\n".encode())
            sent += 1
        for n in nodes:
            def whole(n=n) -> bool:
                r = n.query(q="rotation record")
                return r.status_code == 200 and r.content.count(b"rotation record") == sent
            wait_for(whole, 30, what=f"{sent} records, complete, from {node_id(n)} ({tag})")

    write_and_find("before")
    # One node at a time, as an operator would: add, promote, retire; the cluster
    # replicates and answers completely between every change.
    for s, step in enumerate(([old, new], [new, old], [new])):
        for i, f in enumerate(files):
            key_file(f, *step)
            time.sleep(2.5)  # the node reloads its key file within 2 s
            write_and_find(f"step {s} node {i}")
    rebuilt_for_new = NodeTLS(Keyring([base64.b64decode(new)]), "check")
    for n in nodes:
        assert httpx.get(node_url(n) + "/health", verify=rebuilt_for_new.client_context(), timeout=5).status_code == 200
        assert cluster_state(n)["pipeline"]["http"]["api_member_calls"] == 0
    # The retired key no longer opens the node port.
    stale = NodeTLS(Keyring([base64.b64decode(old)]), "stale")
    with pytest.raises(httpx.HTTPError):
        httpx.get(node_url(nodes[0]) + "/health", verify=stale.client_context(), timeout=5)
