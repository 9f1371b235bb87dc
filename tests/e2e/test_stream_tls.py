"""A cluster stream follows another member over TLS, signing as a member."""

from __future__ import annotations

import socket
import ssl
import time

import httpx
import pytest
from conftest import wait_for

from tests.net.test_security import FAST, health, make_certs


@pytest.mark.slow
def test_cluster_stream_follows_a_member_over_tls_with_the_cluster_key(node_factory, tmp_path):
    ca, cert, key = make_certs(tmp_path)
    tls = ["-tls.cert", str(cert), "-tls.key", str(key), "-tls.ca", str(ca)]
    ctx = ssl.create_default_context(cafile=str(ca))
    a = node_factory("a", FAST + tls)
    a.answering = lambda: health(f"https://{a.api}", ctx)  # type: ignore[method-assign]
    a.start()
    b = node_factory("b", FAST + tls + ["-peer", f"127.0.0.1:{a.ports['cluster']}"])
    b.answering = lambda: health(f"https://{b.api}", ctx)  # type: ignore[method-assign]
    b.start()
    wait_for(lambda: len(httpx.get(f"https://{a.api}/cluster/state", verify=ctx).json()["members"]) == 2,
             what="two members")

    def b_subscribers() -> int:
        state = httpx.get(f"https://{b.api}/cluster/state", verify=ctx).json()
        return state["pipeline"]["streams"]["subscribers"]

    got = b""
    with httpx.stream("GET", f"https://{a.api}/store/stream", params={"q": "over tls"}, verify=ctx,
                      timeout=httpx.Timeout(30, read=None)) as resp:
        assert resp.status_code == 200
        # a's follow of b's tap shows as a subscriber on b (refused follows never get there).
        wait_for(lambda: b_subscribers() >= 1, what="a follows b's tap")
        with socket.create_connection(("127.0.0.1", b.ports["fast"]), timeout=10) as raw:
            s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            s.sendall(b"streamed over tls from b\n")
        deadline = time.monotonic() + 20
        for chunk in resp.iter_raw():
            got += chunk
            if b"streamed over tls from b" in got or time.monotonic() > deadline:
                break
    assert b"streamed over tls from b" in got, got
    assert b"not following" not in got, got
