"""Syslog event time against a real node: util-linux ``logger`` (RFC 5424 and
3164, TCP and UDP) and raw frames with hour-old timestamps over real sockets,
looked up by time-bounded queries.

The node runs with TZ=Asia/Kolkata (+05:30, no DST) and so does ``logger``:
RFC 3164 timestamps carry no zone and are read in the node's local time, so a
zone other than the test machine's usual UTC shows that decision is kept.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from conftest import NodeProc, free_port, wait_for

from oklog.records.record import split_record, ulid_ms

pytestmark = pytest.mark.slow

TIMEOUT = 20
ZONE = "Asia/Kolkata"
TZ = ZoneInfo(ZONE)


def marker(kind: str) -> str:
    return f"sysev-{kind}-{uuid.uuid4().hex}"


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


def query(node: NodeProc, q: str, since: datetime, until: datetime | None = None) -> list[tuple[str, str, str]]:
    params = {"q": q, "from": iso(since)}
    if until is not None:
        params["to"] = iso(until)
    r = httpx.get(node.url + "/store/query", params=params, timeout=30)
    assert r.status_code == 200, r.text
    return [tuple(p.decode() for p in split_record(rec)) for rec in r.content.split(b"\n")[:-1]]  # type: ignore[misc]


def exactly(node: NodeProc, q: str, count: int, since: datetime, until: datetime | None = None):
    """Poll until ``count`` records match; then check no more arrive (each once)."""
    try:
        wait_for(lambda: len(query(node, q, since, until)) >= count, timeout=TIMEOUT, interval=0.2,
                 what=f"{count} records matching {q}")
    except TimeoutError:
        tail = node.log_path.read_text(errors="replace")[-3000:] if node.log_path else ""
        raise AssertionError(f"{q!r}: {query(node, q, since, until)!r}\nnode log:\n{tail}") from None
    time.sleep(1.0)  # several flush and consume cycles: a duplicate would show by now
    recs = query(node, q, since, until)
    assert len(recs) == count, recs
    ulids = [u for u, _, _ in recs]
    assert ulids == sorted(ulids) and len(set(ulids)) == count
    return recs


def ms_of(ulid: str) -> int:
    return ulid_ms(ulid.encode())


def event_stamped(node: NodeProc) -> float:
    """The node's count of syslog records stamped with their own TIMESTAMP."""
    for ln in httpx.get(node.url + "/metrics", timeout=10).text.splitlines():
        if ln.startswith("oklog_syslog_event_time_records_total "):
            return float(ln.split()[1])
    raise AssertionError("oklog_syslog_event_time_records_total not in /metrics")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = NodeProc(
        tmp_path_factory.mktemp("sysev-node"),
        [
            "-ingest.segment-flush-age", "0.2s",
            "-store.segment-target-age", "0.2s",
            "-ingest.event-time-past", "2h",
        ],
    )
    n.ports["syslog"] = free_port()
    n.args += ["-ingest.syslog", f"127.0.0.1:{n.ports['syslog']}"]
    saved = os.environ.get("TZ")
    os.environ["TZ"] = ZONE  # inherited by the node subprocess only; restored below
    try:
        n.start()
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
    yield n
    n.kill()


def header_time(line: str) -> int:
    """The ms of the TIMESTAMP in a line as ``logger`` wrote it (RFC 5424 or 3164 in ZONE)."""
    body = line.split(">", 1)[1]
    if body.startswith("1 "):
        return int(datetime.fromisoformat(body.split(" ")[1]).timestamp() * 1000)
    stamp = " ".join(body.split()[:3])  # Mmm dd hh:mm:ss
    now = datetime.now(TZ)
    dt = datetime.strptime(f"{now.year} {stamp}", "%Y %b %d %H:%M:%S").replace(tzinfo=TZ)
    return int(dt.timestamp() * 1000)


@pytest.mark.parametrize(
    "transport,fmt,octets",
    [("tcp", "rfc5424", False), ("tcp", "rfc5424", True), ("tcp", "rfc3164", False),
     ("udp", "rfc5424", False), ("udp", "rfc3164", False)],
)
def test_logger_records_take_the_message_time(node, transport, fmt, octets):
    logger = shutil.which("logger")
    if logger is None:
        pytest.skip("logger not installed (apt-get install -y bsdutils)")
    m = marker(f"{transport}-{fmt}{'-octet' if octets else ''}")
    cmd = [logger, f"--{transport}", "--server", "127.0.0.1", "--port", str(node.ports["syslog"]),
           f"--{fmt}", "-t", "sysev"]
    if octets:
        cmd.append("--octet-count")
    before, stamped = datetime.now(UTC), event_stamped(node)
    subprocess.run(cmd + [m], check=True, timeout=TIMEOUT, capture_output=True, env={**os.environ, "TZ": ZONE})
    [(u, topic, line)] = exactly(node, m, 1, before - timedelta(minutes=5))
    assert topic == "syslog" and line.endswith(m), line
    assert ms_of(u) == header_time(line), line  # the ULID is the message's own time ...
    assert event_stamped(node) == stamped + 1  # ... taken from it, not arrival time by chance


def rfc5424(dt: datetime, text: str) -> bytes:
    return f"<14>1 {dt.isoformat(timespec='microseconds')} host app - - - {text}".encode()


def rfc3164(dt: datetime, text: str) -> bytes:
    local = dt.astimezone(TZ)
    return f"<14>{local.strftime('%b')} {local.day:2d} {local.strftime('%H:%M:%S')} host app: {text}".encode()


def test_hour_old_frames_land_at_their_event_time(node):
    m = marker("raw")
    now = datetime.now(UTC).replace(microsecond=123456)
    old = now - timedelta(hours=1)
    # One TCP connection, octet-counted and LF-framed, interleaved with arrival-time messages.
    counted = [
        rfc5424(old, f"{m} 5424 utc"),
        rfc5424(old.astimezone(TZ) + timedelta(milliseconds=1), f"{m} 5424 offset"),
        b"<14>1 - host app - - - " + f"{m} nil".encode(),
        rfc5424(old + timedelta(milliseconds=2), f"{m} 5424 third"),
    ]
    framed = [
        rfc3164(old.replace(microsecond=0) - timedelta(seconds=5), f"{m} 3164 a"),
        rfc5424(now - timedelta(hours=3), f"{m} too old"),  # outside the 2h window
        f"<14>1 {now.date()}T99:99:99Z host app - - - {m} bad time".encode(),
        rfc3164(old.replace(microsecond=0) - timedelta(seconds=4), f"{m} 3164 b"),
    ]
    with socket.create_connection(("127.0.0.1", node.ports["syslog"]), timeout=TIMEOUT) as s:
        s.sendall(b"".join(b"%d %s" % (len(x), x) for x in counted))
        s.sendall(b"".join(x + b"\n" for x in framed))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(rfc5424(old + timedelta(milliseconds=3), f"{m} udp old"), ("127.0.0.1", node.ports["syslog"]))
        s.sendto(rfc3164(now, f"{m} udp live 3164"), ("127.0.0.1", node.ports["syslog"]))

    # At their event time, found by a query bounded around it.
    at = exactly(node, m, 6, old - timedelta(seconds=10), old + timedelta(seconds=10))
    old_ms = int(old.timestamp() * 1000)
    got = {ln.split(f"{m} ", 1)[1]: ms_of(u) for u, _, ln in at}
    assert got == {
        "5424 utc": old_ms,
        "5424 offset": old_ms + 1,
        "5424 third": old_ms + 2,
        "udp old": old_ms + 3,
        "3164 a": (old_ms // 1000 - 5) * 1000,
        "3164 b": (old_ms // 1000 - 4) * 1000,
    }
    # Not at arrival time ...
    recent = exactly(node, m, 4, now - timedelta(minutes=5))
    texts = {ln.split(f"{m} ", 1)[1]: (ms_of(u), ln) for u, _, ln in recent}
    assert set(texts) == {"nil", "too old", "bad time", "udp live 3164"}
    # ... where the records without a usable time are, with their timestamp kept in the line.
    for text, (ms, _) in texts.items():
        assert abs(ms - now.timestamp() * 1000) < 60_000, text
    too_old = (now - timedelta(hours=3)).isoformat(timespec="microseconds")
    assert texts["too old"][1].startswith(f"<14>1 {too_old} "), texts["too old"]
    assert "T99:99:99Z" in texts["bad time"][1]
    # Everything, once each, in ULID order.
    assert len(exactly(node, m, 10, now - timedelta(hours=4))) == 10
