"""``oklog query``'s own HTTP/1.1 client against a real socket server serving crafted responses."""

from __future__ import annotations

import io
import os
import random
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from urllib.parse import urlencode as std_urlencode

import pytest

from oklog.cli.commands import query_parser
from oklog.cli.query import query_main, request, resolve_time, urlencode
from oklog.query.params import parse_time_ms

PAUSE = 0.01  # between the pieces of a response, so each tends to arrive in its own recv


class Server:
    """Serves one scripted response per connection, in pieces, then closes it."""

    def __init__(self, *responses: list[bytes]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.responses = list(responses)
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        with self.sock:
            for pieces in self.responses:
                conn, _ = self.sock.accept()
                with conn:
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    req = b""
                    while b"\r\n\r\n" not in req:
                        data = conn.recv(65536)
                        if not data:
                            break
                        req += data
                    self.requests.append(req)
                    try:
                        for i, p in enumerate(pieces):
                            if i:
                                time.sleep(PAUSE)
                            conn.sendall(p)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client gave up (as it should on a bad response)

    def join(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive()


def head(status: str = "200 OK", *headers: str) -> bytes:
    return ("HTTP/1.1 " + status + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


CHUNKED = "Transfer-Encoding: chunked"


def chunk(data: bytes, ext: bytes = b"") -> bytes:
    return b"%x%s\r\n%s\r\n" % (len(data), ext, data)


LAST = b"0\r\n\r\n"


def run(server: Server, tmp_path, *args: str) -> tuple[int, bytes, str]:
    """query_main with stdout to a file (os.write path), stderr captured."""
    ns = query_parser().parse_args(["-store", server.addr, "-timeout", "10s", *args])
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = io.StringIO()
    try:
        code = query_main(ns, out=fd, err=err)
    finally:
        os.close(fd)
    server.join()
    return code, path.read_bytes(), err.getvalue()


def test_request_line_and_headers(tmp_path):
    s = Server([head("200 OK", CHUNKED), LAST])
    code, out, err = run(s, tmp_path, "-q", "a b&c", "-topic", "t1", "-from", "2026-01-01T00:00:00Z", "-ulid")
    assert (code, out, err) == (0, b"", "")
    req = s.requests[0]
    line, *headers = req.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert line == (
        b"GET /store/query?q=a+b%26c&regex=false&topic=t1&from=2026-01-01T00%3A00%3A00Z&format=ulid HTTP/1.1"
    )
    assert f"Host: {s.addr}".encode() in headers and b"Connection: close" in headers


def test_chunked_split_across_recv_boundaries(tmp_path):
    body = b"hello world\nsecond line\n"
    s = Server([
        head("200 OK", CHUNKED) + b"5\r\nhel",
        b"lo",
        b"\r",
        b"\n7\r",
        b"\n world\n\r\n",
        b"c\r\nsecond line\n",
        b"\r",
        b"\n",
        b"0",
        b"\r\n\r\n",
    ])
    code, out, err = run(s, tmp_path)
    assert (code, out, err) == (0, body, "")


def test_head_split_across_recv_boundaries(tmp_path):
    resp = head("200 OK", "Content-Type: text/plain", CHUNKED) + chunk(b"x\n") + LAST
    s = Server([resp[i : i + 3] for i in range(0, len(resp), 3)])
    assert run(s, tmp_path) == (0, b"x\n", "")


def test_chunk_extensions_and_trailers(tmp_path):
    s = Server([
        head("200 OK", CHUNKED),
        chunk(b"abc\n", b";name=value"),
        chunk(b"def\n", b' ; q="x;y"'),
        b"0;end=1\r\nX-Trailer: yes\r\n\r\n",
    ])
    assert run(s, tmp_path) == (0, b"abc\ndef\n", "")


def test_upper_case_hex_and_leading_zeros(tmp_path):
    data = bytes(range(256)) * 2
    s = Server([head("200 OK", CHUNKED), b"0200\r\n" + data + b"\r\n", b"1F\r\n" + b"y" * 31 + b"\r\n", LAST])
    assert run(s, tmp_path) == (0, data + b"y" * 31, "")


def test_content_length_body(tmp_path):
    s = Server([head("200 OK", "Content-Length: 12") + b"abc\n", b"def\n", b"ghi\n"])
    assert run(s, tmp_path) == (0, b"abc\ndef\nghi\n", "")


def test_body_until_eof(tmp_path):
    s = Server([head("200 OK"), b"one\n", b"two\n"])
    assert run(s, tmp_path) == (0, b"one\ntwo\n", "")


def test_large_chunks(tmp_path):
    rnd = random.Random(5)
    blocks = [rnd.randbytes(n) for n in (1 << 20, 3, (1 << 20) + 17, 5 << 20, 100_000)]
    resp = head("200 OK", CHUNKED) + b"".join(chunk(b) for b in blocks) + LAST
    s = Server([resp[i : i + 700_001] for i in range(0, len(resp), 700_001)])
    code, out, err = run(s, tmp_path)
    assert (code, err) == (0, "") and out == b"".join(blocks)


@pytest.mark.parametrize("buf_size", [300, 301, 1024, 4096])
def test_small_buffer_random_chunks_and_splits(buf_size):
    """Chunks larger and smaller than the buffer, framing split anywhere: the
    buffer is compacted and refilled at every possible offset."""
    rnd = random.Random(buf_size)
    blocks = [rnd.randbytes(rnd.choice([1, 2, 7, 100, 299, 300, 301, 1000, 5000])) for _ in range(60)]
    resp = head("200 OK", CHUNKED) + b"".join(
        chunk(b, b";i=%d" % i if i % 3 == 0 else b"") for i, b in enumerate(blocks)
    ) + LAST
    cuts = sorted(rnd.sample(range(1, len(resp)), 80))
    pieces = [resp[a:b] for a, b in zip([0, *cuts], [*cuts, len(resp)], strict=True)]
    s = Server(pieces)
    r = request("127.0.0.1", s.port, "GET", "/store/query", 10, buf_size=buf_size)
    try:
        got: list[bytes] = []
        r.copy_body(lambda v: got.append(bytes(v)))
    finally:
        r.sock.close()
    s.join()
    assert b"".join(got) == b"".join(blocks)
    assert all(len(g) <= buf_size for g in got)


@pytest.mark.parametrize(
    "tail, written",
    [
        ([b"5\r\nhel"], b""),  # inside a chunk: a chunk is written whole or not at all
        ([chunk(b"hello")], b"hello"),  # after a whole chunk, before the last
        ([chunk(b"hello"), b"0\r"], b"hello"),  # inside the last chunk's size line
        ([b"5\r\nhello"], b"hello"),  # before a chunk's CRLF
    ],
)
def test_truncated_chunked_body_is_an_error(tmp_path, tail, written):
    s = Server([head("200 OK", CHUNKED), *tail])
    code, out, err = run(s, tmp_path)
    assert code == 1 and out == written
    assert err == (
        f"oklog query: http://{s.addr}/store/query: "
        "connection closed before the end of the response: the output is truncated\n"
    )


def test_truncated_content_length_body_is_an_error(tmp_path):
    s = Server([head("200 OK", "Content-Length: 100") + b"short\n"])
    code, out, err = run(s, tmp_path)
    # Written a whole chunk (here: the whole body) at a time, so nothing of it is out.
    assert code == 1 and out == b"" and "truncated" in err


@pytest.mark.parametrize(
    "resp",
    [
        head("200 OK", CHUNKED) + b"zz\r\nhello\r\n" + LAST,  # not hex
        head("200 OK", CHUNKED) + b"5\r\nhelloXX" + LAST,  # no CRLF after the data
        b"SPDY/9 200 OK\r\n\r\n",
        head("200 OK", "bad header line"),
    ],
)
def test_malformed_response_is_an_error(tmp_path, resp):
    s = Server([resp])
    code, _, err = run(s, tmp_path)
    assert code == 1 and err.startswith("oklog query: http://")


def test_headers_over_64_kib_are_refused(tmp_path):
    s = Server([b"HTTP/1.1 200 OK\r\n", *[b"X-Filler: " + b"f" * 1000 + b"\r\n"] * 70, b"\r\n"])
    code, out, err = run(s, tmp_path)
    assert code == 1 and out == b"" and "headers over 64 KiB" in err


def test_206_is_exit_3_with_stats_on_v(tmp_path):
    s = Server([
        head("206 Partial Content", "X-Oklog-Nodes-Queried: 2", "X-Oklog-Error-Count: 1", CHUNKED),
        chunk(b"some\n"),
        LAST,
    ])
    code, out, err = run(s, tmp_path, "-v")
    assert code == 3 and out == b"some\n"
    assert err == "nodes queried: 2\nerror count: 1\noklog query: results may be incomplete: 1 store member did not answer in full\n"


def test_206_warning_names_the_missing_members_on_one_line(tmp_path):
    s = Server([
        head(
            "206 Partial Content",
            "X-Oklog-Error-Count: 2",
            "X-Oklog-Store-Members: 3",
            "X-Oklog-Errors: n1: dead; n2: no answer within 5s",
            CHUNKED,
        ),
        chunk(b"some\n"),
        LAST,
    ])
    code, out, err = run(s, tmp_path)
    assert (code, out) == (3, b"some\n")
    assert err == "oklog query: results may be incomplete: 2 of 3 store members did not answer in full: n1: dead; n2: no answer within 5s\n"


def test_200_naming_missing_members_is_a_note_and_exit_0(tmp_path):
    s = Server([
        head("200 OK", "X-Oklog-Error-Count: 1", "X-Oklog-Store-Members: 3", "X-Oklog-Errors: n1: dead", CHUNKED),
        chunk(b"all\n"),
        LAST,
    ])
    code, out, err = run(s, tmp_path)
    assert (code, out) == (0, b"all\n")
    assert err == "oklog query: note: 1 of 3 store members did not answer in full: n1: dead; the others hold every record (replication)\n"


def test_400_is_exit_1_with_the_body(tmp_path):
    body = b"invalid regex: b'missing ): ('\n"
    s = Server([head("400 Bad Request", f"Content-Length: {len(body)}"), body])
    code, out, err = run(s, tmp_path, "-q", "(", "-regex")
    assert (code, out) == (1, b"")
    assert err == "oklog query: 400: invalid regex: b'missing ): ('\n"


def test_500_with_chunked_body(tmp_path):
    s = Server([head("500 ", CHUNKED), chunk(b"boom"), chunk(b" here\n"), LAST])
    assert run(s, tmp_path) == (1, b"", "oklog query: 500: boom here\n")


def test_interim_100_response_is_skipped(tmp_path):
    s = Server([head("100 Continue"), head("200 OK", CHUNKED) + chunk(b"ok\n") + LAST])
    assert run(s, tmp_path) == (0, b"ok\n", "")


def test_stats_uses_head(tmp_path, capsys):
    s = Server([head("200 ", "x-oklog-nodes-queried: 1", "x-oklog-max-data-set-size: 42", "Content-Length: 0")])
    code, out, err = run(s, tmp_path, "-stats")
    assert (code, out, err) == (0, b"", "")
    assert capsys.readouterr().out == "nodes queried: 1\nmax data set size: 42\n"
    assert s.requests[0].startswith(b"HEAD /store/query?")


def test_stats_partial_is_exit_3(tmp_path, capsys):
    s = Server([head("206 ", "X-Oklog-Error-Count: 1", CHUNKED)])  # HEAD: no body despite chunked
    code, _, _ = run(s, tmp_path, "-stats")
    assert code == 3 and capsys.readouterr().out == "error count: 1\n"


def test_stats_error_fetches_the_body_with_get(tmp_path):
    body = b"bad time 'x'\n"
    cl = f"Content-Length: {len(body)}"
    s = Server([head("400 ", cl)], [head("400 ", cl) + body])
    code, out, err = run(s, tmp_path, "-stats", "-from", "2026-13-45T00:00:00Z")
    assert (code, err) == (1, "oklog query: 400: bad time 'x'\n")
    assert s.requests[0].startswith(b"HEAD ") and s.requests[1].startswith(b"GET ")


def test_connection_refused(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
    ns = query_parser().parse_args(["-store", f"127.0.0.1:{port}"])
    err = io.StringIO()
    assert query_main(ns, out=io.BytesIO(), err=err) == 1
    assert err.getvalue() == (
        f"oklog query: http://127.0.0.1:{port}/store/query: connection refused (is an oklog node listening there?)\n"
    )


def test_timeout(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as srv:  # accepts (backlog) but never answers
        ns = query_parser().parse_args(["-store", f"127.0.0.1:{srv.getsockname()[1]}", "-timeout", "0.2s"])
        err = io.StringIO()
        assert query_main(ns, out=io.BytesIO(), err=err) == 1
    assert err.getvalue().endswith("/store/query: no answer within 0.2s (-timeout)\n")


@pytest.mark.parametrize("value", ["x", "5x", "yesterday", "10 minutes"])
def test_bad_time_is_refused_with_a_hint_listing_durations(value):
    ns = query_parser().parse_args(["-store", "127.0.0.1:1", "-from", value])
    err = io.StringIO()
    assert query_main(ns, out=io.BytesIO(), err=err) == 1
    msg = err.getvalue()
    assert msg.startswith(f"oklog query: -from '{value}' is not a time: use a duration ago (30s, 5m,")
    assert "RFC 3339" in msg and "ULID" in msg and msg.count("\n") == 1


def test_remote_error_text_is_shown_without_reprs_or_control_bytes(tmp_path):
    body = b"bad\r\nthing\x1b[2J\n"
    s = Server([head("400 ", f"Content-Length: {len(body)}"), body])
    code, out, err = run(s, tmp_path)
    assert (code, err) == (1, "oklog query: 400: bad  thing [2J\n")
    s = Server([b"HTTP/1.1 2x0 OK\r\n\r\n"])
    code, out, err = run(s, tmp_path)
    assert code == 1 and "b'" not in err and "bad status line: HTTP/1.1 2x0 OK" in err


def test_file_like_output(tmp_path):
    s = Server([head("200 OK", CHUNKED), chunk(b"a\n"), chunk(b"b\n"), LAST])
    ns = query_parser().parse_args(["-store", s.addr])
    out = io.BytesIO()
    assert query_main(ns, out=out, err=io.StringIO()) == 0
    assert out.getvalue() == b"a\nb\n"


# -- parameters ------------------------------------------------------------------------------


def test_resolve_time_matches_datetime_and_the_node():
    assert resolve_time("") is None and resolve_time("now") is None
    assert resolve_time("2026-01-01T00:00:00Z") == "2026-01-01T00:00:00Z"
    assert resolve_time("01M8585ASVB7WMRPJWXYE9YJFD") == "01M8585ASVB7WMRPJWXYE9YJFD"
    assert resolve_time("5m", now=1_700_000_300.0) == "2023-11-14T22:13:20.000Z"
    assert resolve_time("1h30m", now=1_795_473_787.4989) == "2026-11-23T21:13:07.498Z"
    rnd = random.Random(1)
    for _ in range(2000):
        now = rnd.uniform(1e9, 2e9)
        got = resolve_time("1.5s", now=now)
        want = datetime.fromtimestamp(now - 1.5, tz=UTC).isoformat(timespec="milliseconds")
        assert got == want.replace("+00:00", "Z")
        assert abs(parse_time_ms(got) - (now - 1.5) * 1000) < 2  # the node accepts it


def test_urlencode_matches_urllib():
    cases = [
        {"q": "plain", "regex": "false"},
        {"q": "a b+c&d=e/f?g#h%i", "from": "2026-11-23T22:23:07.498Z"},
        {"q": "é ÿ € \x00\x7f~._-", "topic": "t"},
        {"q": ""},
    ]
    for params in cases:  # the argument's bytes: UTF-8 from a UTF-8 terminal
        assert urlencode(params) == std_urlencode(params)
    # bytes that are not UTF-8 reach Python as surrogate escapes; they go out as they came
    assert urlencode({"q": b"\xe9t\xe9".decode("utf-8", "surrogateescape")}) == "q=%E9t%E9"


# -- start-up ------------------------------------------------------------------------------


def test_query_path_imports_no_heavy_modules():
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import oklog.cli.commands, oklog.cli.query\n"
        "new = set(sys.modules) - before\n"
        "print(' '.join(sorted(m for m in ('logging', 'dataclasses', 'ctypes', 'http.client',"
        " 'email', 'datetime', 'oklog.node.config', 'oklog.malloc', 'typing', 'shutil') if m in new)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_query_command_does_not_tune_malloc():
    code = (
        "import sys, oklog.cli.commands\n"
        "rc = oklog.cli.commands.main(['query', '-store', '127.0.0.1:1'])\n"
        "print(rc, 'oklog.malloc' in sys.modules, 'logging' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "1 False False", r.stderr
