"""The original OK Log Go CLI's ``oklog query`` against real oklog nodes.

The requests are the ones its ``cmd/oklog/query.go`` sends, byte for byte as
Go's net/http writes them; the answers are read the way its code reads them:
``resp.StatusCode != http.StatusOK`` is an error, then
``store.QueryResult.DecodeFrom`` (``pkg/store/query.go``) parses the
``X-Oklog-*`` headers, then the body is printed through ``strip`` (drops the
first ``ulid.EncodedSize+1`` bytes of each line), as is (``-ulid``) or
through ``parseTime`` (``-time``).
"""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from conftest import NodeProc, wait_for

from oklog.records.record import decode_ulid

ULID_SIZE = 26
CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghjkmnpqrstvwxyz")


# -- Go, in Python ---------------------------------------------------------------------


def go_query_escape(s: str) -> str:
    """net/url.QueryEscape."""
    out = []
    for b in s.encode():
        c = chr(b)
        if c.isascii() and (c.isalnum() or c in "-_.~"):
            out.append(c)
        elif c == " ":
            out.append("+")
        else:
            out.append(f"%{b:02X}")
    return "".join(out)


def go_format_rfc3339(t: datetime) -> str:
    """time.Time.Format(time.RFC3339): seconds, Z for UTC, else ±hh:mm."""
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    off = t.utcoffset()
    if not off:
        return s + "Z"
    minutes = int(off.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return s + f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


_RFC3339NANO = re.compile(r"\A(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})\Z")


def go_ulid_or_time(s: str) -> int:
    """store.ulidOrTime.Parse → milliseconds; raises as Go's returns an error."""
    if len(s) == ULID_SIZE and all(c in CROCKFORD for c in s):  # ulid.Parse
        return decode_ulid(s)[0]
    m = _RFC3339NANO.match(s)  # time.Parse(time.RFC3339Nano, s)
    if not m:
        raise ValueError(f"{s}: can't parse as ULID or RFC3339 time")
    y, mo, d, h, mi, sec = (int(x) for x in m.groups()[:6])
    frac = m.group(7) or ""
    tz = m.group(8)
    off = timedelta(0) if tz == "Z" else (1 if tz[0] == "+" else -1) * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    t = datetime(y, mo, d, h, mi, sec, tzinfo=timezone(off))
    return int(t.timestamp()) * 1000 + (int((frac[1:] + "000")[:3]) if frac else 0)


def go_parse_bool(s: str) -> bool:
    """strconv.ParseBool."""
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if s in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{s}": invalid syntax')


def go_atoi(s: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", s):
        raise ValueError(f'strconv.Atoi: parsing "{s}": invalid syntax')
    return int(s)


def decode_from(headers: dict[str, str]) -> dict:
    """store.QueryResult.DecodeFrom (header lookup is canonical, so case-blind)."""
    h = {k.lower(): v for k, v in headers.items()}
    g = lambda name: h.get(name.lower(), "")  # noqa: E731 — Header.Get
    return {
        "from": go_ulid_or_time(g("X-Oklog-From")),
        "to": go_ulid_or_time(g("X-Oklog-To")),
        "q": g("X-Oklog-Q"),
        "regex": go_parse_bool(g("X-Oklog-Regex")),
        "nodes": go_atoi(g("X-Oklog-Nodes-Queried")),
        "segments": go_atoi(g("X-Oklog-Segments-Queried")),
        "size": go_atoi(g("X-Oklog-Max-Data-Set-Size")),
        "errors": go_atoi(g("X-Oklog-Error-Count")),
        "duration": g("X-Oklog-Duration"),
    }


def go_request(api: str, method: str, from_: str, to: str, q: str, regex: bool) -> tuple[int, dict[str, str], bytes]:
    """What ``oklog query`` sends (cmd/oklog/query.go), as Go's http.Client writes it."""
    path = "/store/query?from={}&to={}&q={}{}".format(
        go_query_escape(from_), go_query_escape(to), go_query_escape(q), "&regex=true" if regex else ""
    )
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {api}\r\nUser-Agent: Go-http-client/1.1\r\n"
        + ("Accept-Encoding: gzip\r\n" if method == "GET" else "")
        + "\r\n"
    )
    host, port = api.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head.encode())
        f = s.makefile("rb")
        status = int(f.readline().split()[1])
        headers: dict[str, str] = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip()] = v.strip()
        body = b""
        if method == "GET":
            if headers.get("transfer-encoding", headers.get("Transfer-Encoding", "")) == "chunked":
                while size := int(f.readline().split(b";")[0], 16):
                    body += f.read(size)
                    f.readline()
            else:
                body = f.read(int(headers.get("content-length", "0")))
    return status, headers, body


def strip(body: bytes) -> bytes:
    return b"".join(line[ULID_SIZE + 1 :] + b"\n" for line in body.split(b"\n")[:-1])


def parse_time(body: bytes) -> bytes:
    out = b""
    for line in body.split(b"\n")[:-1]:
        ms = decode_ulid(line[:ULID_SIZE])[0]
        t = datetime.fromtimestamp(ms // 1000, tz=UTC)
        out += go_format_rfc3339(t).encode() + line[ULID_SIZE:] + b"\n"
    return out


# -- the test ------------------------------------------------------------------------------

FAST = ["-ingest.segment-flush-age", "0.3s", "-cluster.suspicion-timeout", "2s"]
LINES = [b"original client %d" % i for i in range(50)] + [b"other line"]


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [1, 2], ids=["one node", "cluster of two"])
def test_original_cli_query_and_stats(node_factory, nodes):
    ns: list[NodeProc] = []
    for i in range(nodes):
        n = node_factory(f"n{i}")
        n.args = FAST + (["-peer", f"127.0.0.1:{ns[0].ports['cluster']}"] if ns else [])
        ns.append(n.start())
    wait_for(lambda: all(len(httpx.get(n.url + "/cluster/state", timeout=5).json()["members"]) == nodes for n in ns))
    ns[-1].send_fast(b"".join(line + b"\n" for line in LINES))
    wait_for(lambda: ns[0].query(q="original client").content.count(b"\n") == 50, timeout=30, what="stored")
    node = ns[0]
    now = datetime.now(UTC)
    # -from 1h (a duration: time.Now().Add(-1h).Format(RFC3339)), -to now; and a
    # local time with an offset, as a machine outside UTC formats it.
    east = timezone(timedelta(hours=5, minutes=30))
    ranges = [
        (go_format_rfc3339(now - timedelta(hours=1)), go_format_rfc3339(now + timedelta(seconds=1))),
        (go_format_rfc3339((now - timedelta(hours=1)).astimezone(east)), go_format_rfc3339((now + timedelta(seconds=1)).astimezone(east))),
    ]
    for from_, to in ranges:
        status, headers, body = go_request(node.api, "GET", from_, to, "original client", False)
        assert status == 200, (status, headers, body)
        res = decode_from(headers)
        assert res["from"] == go_ulid_or_time(from_) and res["to"] // 1000 == go_ulid_or_time(to) // 1000
        assert res["q"] == "original client" and res["regex"] is False
        assert res["nodes"] == nodes and res["errors"] == 0 and res["segments"] >= 1 and res["size"] > 0
        assert res["duration"].endswith("s")
        want = b"".join(line + b"\n" for line in LINES[:50])
        assert strip(body) == want  # default output: the lines as forwarded
        ulids = [line[:ULID_SIZE] for line in body.split(b"\n")[:-1]]
        assert body == b"".join(u + b" " + line + b"\n" for u, line in zip(ulids, LINES[:50], strict=True))  # -ulid
        assert parse_time(body).split(b"\n")[0].endswith(b" original client 0")  # -time
        # -stats: HEAD, same decoding, no body
        status, headers, body = go_request(node.api, "HEAD", from_, to, "original client", False)
        assert status == 200 and body == b""
        res = decode_from(headers)
        assert res["nodes"] == nodes and res["errors"] == 0 and res["size"] > 0

    # -regex, and a q with bytes a header cannot carry as they are
    status, headers, body = go_request(node.api, "GET", *ranges[0], "^original client 4[0-9]$", True)
    assert status == 200
    res = decode_from(headers)
    assert res["regex"] is True and res["q"] == "^original client 4[0-9]$"
    assert strip(body) == b"".join(b"original client %d\n" % i for i in range(40, 50))
    status, headers, _ = go_request(node.api, "GET", *ranges[0], "a\r\nb%c", False)
    assert status == 200 and decode_from(headers)["q"] == "a%0D%0Ab%25c"

    # Our own clients, which name no format, still get whole records (with topics).
    r = httpx.get(node.url + "/store/query", params={"q": "other line"}, timeout=10)
    assert r.content.endswith(b" default other line\n")
