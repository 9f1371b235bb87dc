"""oklog.cli.http, the command-line tools' one HTTP client, against a real socket."""

from __future__ import annotations

import socket
import threading

import pytest

from oklog.cli.http import Access, ResponseError, call, request


def _serve(reply: bytes) -> tuple[int, list[bytes], threading.Thread]:
    """One connection on 127.0.0.1: records the request bytes, sends ``reply``, closes."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    got: list[bytes] = []

    def run() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(ln.split(b":")[1]) for ln in head.split(b"\r\n")
                               if ln.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                got.append(head + b"\r\n\r\n" + body)
                conn.sendall(reply)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return port, got, t


def test_post_sends_body_length_token_and_headers():
    port, got, t = _serve(b"HTTP/1.1 201 Created\r\nX-Oklog-Thing: 7\r\nContent-Length: 2\r\n\r\nok")
    status, headers, body = call(
        "127.0.0.1", port, "POST", "/store/replicate?x=1", 5.0, Access("s3cret"), b"a\nb\n", {"Content-Type": "text/plain"}
    )
    t.join(5)
    assert (status, headers["x-oklog-thing"], body) == (201, "7", b"ok")
    head, _, sent = got[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /store/replicate?x=1 HTTP/1.1"
    assert b"Authorization: Bearer s3cret" in lines and b"Content-Length: 4" in lines
    assert b"Content-Type: text/plain" in lines and b"Connection: close" in lines
    assert sent == b"a\nb\n"


def test_get_sends_no_body_and_no_token_without_one():
    port, got, t = _serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    status, _, body = call("127.0.0.1", port, "GET", "/cluster/state", 5.0)
    t.join(5)
    assert (status, body) == (200, b"abcde")
    assert b"Authorization" not in got[0] and b"Content-Length" not in got[0]


def test_detach_hands_over_the_bytes_after_the_head():
    port, _, t = _serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    resp = request("127.0.0.1", port, "GET", "/store/stream", 5.0)
    sock, rest = resp.detach()
    try:
        while rest.count(b"\r\n") < 2:
            more = sock.recv(4096)
            if not more:
                break
            rest += more
    finally:
        sock.close()
    t.join(5)
    assert rest == b"5\r\nhello\r\n"


def test_a_body_cut_short_is_an_error():
    port, _, t = _serve(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(ResponseError, match="truncated"):
        call("127.0.0.1", port, "GET", "/", 5.0)
    t.join(5)
