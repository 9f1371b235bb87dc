"""Pure parts of oklog repair/rebalance: the move plan, progress, human text."""

import errno
import io
import socket

from oklog.cli.repair import Progress, plan_move
from oklog.human import describe_error, format_duration, format_size


def rec(i: int) -> bytes:
    return b"01ARZ3NDEKTSV4RRFFQ69G5F%02d t line %d\n" % (i, i)


def ulid(i: int) -> bytes:
    return rec(i)[:26]


def test_plan_sends_each_record_only_where_it_is_missing():
    records = [rec(i) for i in range(4)]
    # 0,1 have their other copy on B; 2,3 on C; C is the smallest.
    holders = {"B": {ulid(0), ulid(1)}, "C": {ulid(2), ulid(3)}}
    sizes = {"A": 1000, "B": 500, "C": 100}
    p = plan_move(records, "A", holders, 2, sizes, 400)
    assert p.copies == {"C": records[:2], "B": records[2:]}
    assert p.unplaceable == 0 and p.over_replicated == 0
    assert p.sizes_after["A"] == 600


def test_plan_prefers_the_smallest_member_and_tops_up_under_replicated_records():
    records = [rec(0), rec(1)]
    holders = {"B": set(), "C": set(), "D": {ulid(1)}}
    sizes = {"A": 1000, "B": 500, "C": 100, "D": 300}
    p = plan_move(records, "A", holders, 2, sizes, 200)
    # rec 0 held only by A: two new copies (smallest first); rec 1 needs one more.
    assert p.copies == {"C": [records[0], records[1]], "D": [records[0]]}


def test_plan_counts_records_with_nowhere_to_go_and_extra_copies():
    records = [rec(0), rec(1)]
    holders = {"B": {ulid(1)}, "C": {ulid(1)}}
    p = plan_move(records, "A", holders, 3, {"A": 10, "B": 5, "C": 5}, 10)
    assert p.unplaceable == 2  # 3 copies besides A wanted: only B and C exist
    p = plan_move(records[1:], "A", holders, 1, {"A": 10, "B": 5, "C": 5}, 10)
    assert p.over_replicated == 1 and not p.copies


def test_progress_only_moves_forward_and_estimates_time():
    out = io.StringIO()
    bar = Progress("x", True, stream=out, interval=0)
    assert bar.eta() is None
    bar.update(0.5, "half")
    bar.update(0.2, "less")  # a re-estimate may lower the fraction: shown as before
    assert bar.fraction == 0.5
    bar.update(1.0, "done")
    pcts = [int(ln.split("%")[0].rsplit(" ", 1)[-1]) for ln in out.getvalue().splitlines()]
    assert pcts == [50, 50, 100]
    assert "ETA 0.0s" in out.getvalue().splitlines()[-1]


def test_human_text():
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(3 << 30) == "3.0 GiB"
    assert format_duration(75) == "1m15s" and format_duration(None) == "unknown"
    assert describe_error(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")) == "connection refused"
    assert describe_error(TimeoutError()) == "timed out"
    assert describe_error(ValueError(b"bad thing")) == "bad thing"
    assert "gaierror" not in describe_error(socket.gaierror(-2, "Name or service not known"))
    try:
        try:
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        except OSError as e:
            raise RuntimeError("[Errno 104] Connection reset by peer") from e
    except RuntimeError as wrapped:
        assert describe_error(wrapped) == "connection reset by the other side"


def test_post_records_sends_whole_records_in_pieces_and_waits_out_busy(monkeypatch):
    """Against a real HTTP server on 127.0.0.1: the first request is refused
    as busy (503, Retry-After), then every piece is taken."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    import oklog.cli.repair as R

    bodies: list[bytes] = []
    answers = [503]

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            code = answers.pop(0) if answers else 200
            if code == 200:
                bodies.append(body)
            self.send_response(code)
            if code == 503:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        monkeypatch.setattr(R, "POST_BYTES", 100)
        data = b"".join(rec(i) for i in range(10))  # about 40 bytes each
        with httpx.Client(timeout=10) as client:
            assert R.post_records(client, f"127.0.0.1:{srv.server_address[1]}", data) is None
            assert b"".join(bodies) == data
            assert len(bodies) > 1 and all(b.endswith(b"\n") and len(b) <= 100 for b in bodies)
            answers[:] = [400]
            err = R.post_records(client, f"127.0.0.1:{srv.server_address[1]}", data)
            assert err is not None and err.startswith("HTTP 400 Bad Request")
    finally:
        srv.shutdown()
        srv.server_close()
