"""A cluster stream follows another member over TLS, signing as a member."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from conftest import wait_for

from tests.net.test_security import tls_pair


@pytest.mark.slow
def test_cluster_stream_follows_a_member_over_tls_with_the_cluster_key(node_factory, tmp_path):
    a, b, ctx = tls_pair(node_factory, tmp_path)

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
