"""Syslog event time: the TIMESTAMP parser (pure) and ULID-ordered segments
written by a real listener over real sockets."""

from __future__ import annotations

import os
import random
import re
import socket
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
import trio
from support import poll_until

from oklog.fs import RealFS
from oklog.ingest.eventtime import EventWindow
from oklog.ingest.listener import IngestSettings
from oklog.ingest.log import IngestLog
from oklog.ingest.syslog import SyslogStats, event_times, serve_syslog
from oklog.records.record import split_record, ulid_ms

TIMEOUT = 20
NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC).timestamp()


def one(msg: bytes, now: float = NOW) -> int | None:
    [t] = event_times([msg], now)
    return t


def ns(dt: datetime) -> int:
    return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000


# -- the parser (pure) ----------------------------------------------------------------------


def test_rfc5424_timestamps():
    assert one(b"<165>1 2003-10-11T22:14:15.003Z host app - ID47 - msg") == ns(
        datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC)
    )
    assert one(b"<165>1 2003-08-24T05:14:15.000003-07:00 host app - - - x") == ns(
        datetime(2003, 8, 24, 12, 14, 15, 3, tzinfo=UTC)
    )
    assert one(b"<13>1 2026-11-30T17:30:00+05:30 h a - - -") == ns(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    # Nine fraction digits keep the nanoseconds; one digit is tenths.
    assert one(b"<13>1 2026-11-30T12:00:00.123456789Z h") == ns(datetime(2026, 11, 30, 12, tzinfo=UTC)) + 123456789
    assert one(b"<13>1 2026-11-30T12:00:00.5Z") == ns(datetime(2026, 11, 30, 12, tzinfo=UTC)) + 500_000_000
    # No version (rsyslog reads RFC 3339 after the PRI too).
    assert one(b"<13>2026-11-30T12:00:00Z host tag: x") == ns(datetime(2026, 11, 30, 12, tzinfo=UTC))
    assert one(b"<13>1 - host app - - - nil timestamp") is None


@pytest.mark.parametrize(
    "msg",
    [
        b"<13>1 2026-13-01T00:00:00Z h",  # month 13
        b"<13>1 2026-00-10T00:00:00Z h",
        b"<13>1 2026-02-30T00:00:00Z h",  # no such day
        b"<13>1 2026-11-30T99:99:99Z h",
        b"<13>1 2026-11-30T24:00:00Z h",
        b"<13>1 2026-11-30T12:00:60Z h",  # RFC 5424 forbids leap seconds
        b"<13>1 2026-11-30T12:00:00+99:99 h",
        b"<13>1 2026-11-30T12:00:00+24:00 h",
        b"<13>1 2026-11-30T12:00:00-00:60 h",
        b"<13>1 2026-11-30T12:00:00." + b"9" * 10 + b"Z h",  # more than nanoseconds
        b"<13>1 2026-11-30T12:00:00." + b"1" * 100_000 + b"Z h",
        b"<13>1 2026-11-30T12:00:00.Z h",
        b"<13>1 2026-11-30T12:00:00 h",  # no offset
        b"<13>1 2026-11-30T12:00:00Zjunk",
        b"<13>1 0000-01-01T00:00:00Z h",  # year 0
        b"<13>1 2026-11-30 12:00:00Z h",
        b"<13>1 \xff\xfe-11-30T12:00:00Z",
        b"<9999>1 2026-11-30T12:00:00Z h",  # PRI too long
        b"1 2026-11-30T12:00:00Z no PRI",
        b"<13>Foo 30 12:00:00 h",  # bad month
        b"<13>Nov 31 12:00:00 h",  # November has 30 days
        b"<13>Nov 00 12:00:00 h",
        b"<13>Nov 30 99:99:99 h",
        b"<13>Nov 30 12:00:60 h",
        b"<13>Nov 30 12:00 h",
        b"<13>Nov 300 12:00:00 h",
        b"<13>",
        b"",
        b"\x00" * 64,
    ],
)
def test_bad_timestamps_fall_back_never_raise(msg):
    assert one(msg) is None


def test_extreme_times_do_not_raise():
    # Times ns since the epoch cannot hold (past 2262) cannot be inside any window: no time.
    assert one(b"<13>1 9999-12-31T23:59:59-23:59 h") is None
    assert one(b"<13>1 0001-01-01T00:00:00+23:59 h") is None
    assert one(b"<13>1 1970-01-01T00:00:00Z h") == 0
    assert one(b"<13>1 1969-12-31T23:59:59.5Z h") == -500_000_000
    assert one(b"<13>1 2262-01-01T00:00:00Z h") == ns(datetime(2262, 1, 1, tzinfo=UTC))


def local(*args: int) -> datetime:
    return datetime(*args).astimezone()  # the process's local zone, as the node reads RFC 3164


def test_rfc3164_local_time_nearest_year():
    now = local(2026, 11, 30, 12, 0, 0).timestamp()
    assert one(b"<13>Nov 30 11:00:00 host tag: x", now) == ns(local(2026, 11, 30, 11, 0, 0))
    assert one(b"<13>Nov  3 11:00:00 host tag: x", now) == ns(local(2026, 11, 3, 11, 0, 0))
    assert one(b"<13>Nov 03 11:00:00 host tag: x", now) == ns(local(2026, 11, 3, 11, 0, 0))
    assert one(b"<13>nov 30 11:00:00 host", now) == ns(local(2026, 11, 30, 11, 0, 0))
    # Around new year the nearest year wins: last December seen in January ...
    jan = local(2027, 1, 1, 0, 0, 30).timestamp()
    assert one(b"<13>Dec 31 23:59:59 host", jan) == ns(local(2026, 12, 31, 23, 59, 59))
    # ... and a sender already in January seen on New Year's Eve.
    eve = local(2026, 12, 31, 23, 59, 30).timestamp()
    assert one(b"<13>Jan  1 00:00:10 host", eve) == ns(local(2027, 1, 1, 0, 0, 10))
    # Feb 29: only leap years have it; none of 2025-2027 does, so no time.
    assert one(b"<13>Feb 29 10:00:00 host", local(2026, 3, 1).timestamp()) is None
    assert one(b"<13>Feb 29 10:00:00 host", local(2028, 3, 1).timestamp()) == ns(local(2028, 2, 29, 10, 0, 0))


def test_a_batch_shares_parsed_seconds_but_not_fractions():
    msgs = [b"<13>1 2026-11-30T12:00:00.%03dZ h" % i for i in range(5)] + [b"<13>1 - h", b"<13>Nov 30 12:00:00 h"] * 2
    got = event_times(msgs, NOW)
    base = ns(datetime(2026, 11, 30, 12, tzinfo=UTC))
    assert got[:5] == [base + i * 1_000_000 for i in range(5)]
    assert got[5] is None and got[7] is None and got[6] == got[8] is not None


# -- a real listener: segments stay in ULID order -------------------------------------------


def segments(root) -> list[list[tuple[bytes, bytes, bytes]]]:
    out = []
    for name in sorted(os.listdir(root)):
        if name.endswith(".flushed"):
            data = open(os.path.join(root, name), "rb").read()
            out.append([split_record(r) for r in data.split(b"\n")[:-1]])
    return out


def rfc5424(dt: datetime, text: str) -> bytes:
    return f"<14>1 {dt.isoformat(timespec='microseconds')} host app - - - {text}".encode()


@pytest.mark.trio
async def test_segments_stay_sorted_and_cut_when_a_batch_is_older(tmp_path, nursery):
    root = tmp_path / "ingest"
    ilog = IngestLog(RealFS(), str(root))
    stats = SyslogStats()
    # A long flush age: only the listener's own ordering rule may cut a segment.
    settings = IngestSettings(flush_size=1 << 20, flush_age=60, max_record_size=2048)
    _, port = await nursery.start(
        lambda task_status: serve_syslog(
            "127.0.0.1", 0, ilog, settings, stats, window=EventWindow(7200, 300), task_status=task_status
        )
    )
    now = datetime.now(UTC)
    plus2 = timezone(timedelta(hours=2))
    live = [rfc5424(now, "live 0"), b"<14>1 - host app - - - nil 1"]
    # Out of order inside one read, with offsets, one outside the window.
    old = [
        rfc5424(now - timedelta(minutes=50), "old a"),
        rfc5424((now - timedelta(minutes=70)).astimezone(plus2), "old b"),
        rfc5424(now - timedelta(minutes=60), "old c"),
        rfc5424(now - timedelta(hours=5), "too old"),
        b"<14>1 2026-11-30T99:00:00Z host app - - - bad time",
    ]
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"".join(b"%d %s" % (len(m), m) for m in live))
        await poll_until(lambda: ilog.records_in >= 2, 0.02)
        await stream.send_all(b"".join(m + b"\n" for m in old))
        await poll_until(lambda: ilog.records_in >= 7, 0.02)
        await stream.aclose()
        await poll_until(lambda: not stats.connections, 0.02)
        # UDP: hour-old datagrams after live ones in the shared segment.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(rfc5424(datetime.now(UTC), "udp live"), ("127.0.0.1", port))
            await poll_until(lambda: ilog.records_in >= 8, 0.02)
            s.sendto(rfc5424(now - timedelta(minutes=40), "udp old"), ("127.0.0.1", port))
            await poll_until(lambda: ilog.records_in >= 9, 0.02)
    nursery.cancel_scope.cancel()
    with trio.fail_after(TIMEOUT):
        await poll_until(lambda: len(segments(root)) >= 4 and not any(n.endswith(".active") for n in os.listdir(root)), 0.02)
    segs = segments(root)
    for seg in segs:
        ulids = [u for u, _, _ in seg]
        assert ulids == sorted(ulids), seg
    assert stats.segments_cut == 2  # one TCP, one UDP
    recs = {ln.rsplit(b" - ", 1)[-1]: ulid_ms(u) for seg in segs for u, _, ln in seg}
    assert sorted(recs) == sorted(
        [b"live 0", b"nil 1", b"old a", b"old b", b"old c", b"too old", b"bad time", b"udp live", b"udp old"]
    )
    ms = int(now.timestamp() * 1000)
    assert recs[b"live 0"] == ms
    assert recs[b"old a"] == ms - 50 * 60_000
    assert recs[b"old b"] == ms - 70 * 60_000
    assert recs[b"old c"] == ms - 60 * 60_000
    assert recs[b"udp old"] == ms - 40 * 60_000
    arrival = time.time() * 1000
    for text in (b"nil 1", b"too old", b"bad time", b"udp live"):
        assert abs(recs[text] - arrival) < 60_000, text
    assert stats.event_time == 6 and stats.event_time_outside == 1


# -- the C reader against a reference written with datetime ---------------------------------

_REF = re.compile(
    rb"<[0-9]{1,3}>(?:1 )?([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    rb"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})(?= |$)"
)


def reference(msg: bytes) -> int | None:
    m = _REF.match(msg)
    if m is None:
        return None
    off = m.group(8)
    if off in (b"Z", b"z"):
        tz = UTC
    else:
        oh, om = int(off[1:3]), int(off[4:6])
        if oh > 23 or om > 59:
            return None
        d = timedelta(hours=oh, minutes=om)
        tz = timezone(-d if off[:1] == b"-" else d)
    try:
        dt = datetime(*(int(g) for g in m.group(1, 2, 3, 4, 5, 6)), tzinfo=tz)  # type: ignore[misc]
    except ValueError:
        return None
    frac = m.group(7) or b""
    t = (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1) * 10**9 + int(frac.ljust(9, b"0") or 0)
    return t if -(2**63) < t < 2**63 - 10**9 else None


def test_c_reader_matches_reference_on_mutations():
    rng = random.Random(17)
    alphabet = b"0123456789:-+.TtZz <>1x\xff"
    seeds = [
        b"<13>1 2026-11-30T12:34:56.123456+05:30 host app - - - x",
        b"<134>2024-02-29T23:59:59Z h",
        b"<0>1 1999-12-31T00:00:00.1-00:00",
    ]
    checked = 0
    for _ in range(20_000):
        msg = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(0, 3)):
            msg[rng.randrange(len(msg))] = rng.choice(alphabet)
        got = one(bytes(msg))
        assert got == reference(bytes(msg)), bytes(msg)
        checked += got is not None
    assert checked > 1000  # the mutations left many valid times, not only rejects
    for _ in range(2000):  # random valid times
        dt = datetime(rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                      rng.randint(0, 59), rng.randint(0, 59))
        off = rng.choice(["Z", f"{rng.choice('+-')}{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"])
        frac = "" if rng.random() < 0.3 else "." + "".join(rng.choices("0123456789", k=rng.randint(1, 9)))
        msg = f"<13>1 {dt.year:04d}-{dt.strftime('%m-%dT%H:%M:%S')}{frac}{off} h".encode()
        assert one(msg) == reference(msg), msg
