"""Syslog ingest over real TCP and UDP sockets into real segment files."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest
import trio
from support import poll_until

from oklog.fs import RealFS
from oklog.ingest.listener import IngestSettings
from oklog.ingest.log import IngestLog
from oklog.ingest.syslog import SyslogFramer, SyslogStats, serve_syslog
from oklog.records.record import split_record

TIMEOUT = 20
FLUSH_AGE = 0.2


# -- framing (pure) -------------------------------------------------------------------------


def feed_bytewise(framer: SyslogFramer, data: bytes) -> list[bytes]:
    out = []
    for i in range(len(data)):
        out += framer.feed(data[i : i + 1])
    return out


@pytest.mark.parametrize("chunked", [False, True])
def test_framer_mixed_framing(chunked):
    m1 = b"<34>1 2003-10-11T22:14:15.003Z mymachine su - ID47 - 'su root' failed"
    m2 = b"<13>Oct 11 22:14:15 host app[1]: rfc3164 \xff raw\r"
    m3 = b"<14>1 - - - - - - multi\nline"
    m4 = b"2024-05-01 starts with digits but is LF framed"
    data = b"%d %s" % (len(m1), m1) + m2 + b"\n" + b"%d %s" % (len(m3), m3) + m4 + b"\n\n"
    data += b"%d %s\n" % (len(b"counted LF\n"), b"counted LF")  # the count includes the LF
    f = SyslogFramer(1024)
    msgs = feed_bytewise(f, data) if chunked else f.feed(data)
    assert msgs == [m1, m2, b"<14>1 - - - - - - multi\\nline", m4, b"counted LF"]
    assert f.finish() == []
    assert f.stats.malformed == 0 and f.stats.oversized == 0


def test_framer_malformed_and_oversized():
    st = SyslogStats()
    f = SyslogFramer(16, st)
    data = b"".join(
        [
            b"0 zero length rest of line\n",
            b"12345678901234 too many digits\n",
            b"40 " + b"x" * 40,
            b"<1>ok after skip\n",
            b"y" * 20 + b"\n",
            b"<2>still ok\n",
            b"z" * 30,
        ]
    )
    assert feed_bytewise(f, data) == [b"<1>ok after skip", b"<2>still ok"]
    assert f.feed(b"z\n<3>fine\n") == [b"<3>fine"]
    assert st.malformed == 2 and st.oversized == 3


def test_framer_finish():
    f = SyslogFramer(100)
    assert f.feed(b"<1>no newline") == []
    assert f.finish() == [b"<1>no newline"]
    assert f.finish() == []
    assert f.feed(b"30 <1>truncated") == []
    assert f.finish() == [b"<1>truncated"]
    assert f.stats.malformed == 1


# -- over sockets ---------------------------------------------------------------------------


def flushed_records(root) -> list[tuple[bytes, bytes, bytes]]:
    out = []
    for name in sorted(os.listdir(root)):
        if name.endswith(".flushed"):
            data = open(os.path.join(root, name), "rb").read()
            out += [split_record(r) for r in data.split(b"\n")[:-1]]
    return out


class Env:
    def __init__(self, root, port, stats):
        self.root, self.port, self.stats = root, port, stats

    def lines(self):
        return [ln for _, _, ln in flushed_records(self.root)]

    async def wait_lines(self, n: int) -> list[bytes]:
        while True:
            lines = self.lines()
            if len(lines) >= n:
                return lines
            await trio.sleep(0.05)


@pytest.fixture
async def env(tmp_path, nursery):
    root = tmp_path / "ingest"
    ilog = IngestLog(RealFS(), str(root))
    stats = SyslogStats()
    settings = IngestSettings(flush_size=1 << 20, flush_age=FLUSH_AGE, max_record_size=2048)
    host, port = await nursery.start(serve_syslog, "127.0.0.1", 0, ilog, settings, stats)
    assert host == "127.0.0.1" and port > 0
    return Env(root, port, stats)


async def send_tcp(port: int, data: bytes) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)


def send_udp(port: int, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port))


@pytest.mark.trio
async def test_tcp_octet_counted_and_lf_byte_exact(env):
    m1 = b"<165>1 2003-10-11T22:14:15.003Z host app - ID47 [ex@32473 a=\"1\"] \xef\xbb\xbfBOM msg"
    m2 = b"<13>Oct 11 22:14:15 host tag: nul \x00 and \xff bytes\r"
    with trio.fail_after(TIMEOUT):
        await send_tcp(env.port, b"%d %s" % (len(m1), m1) + m2 + b"\n" + b"<14>last, no LF")
        lines = await env.wait_lines(3)
    assert lines == [m1, m2, b"<14>last, no LF"]
    topics = {t for _, t, _ in flushed_records(env.root)}
    assert topics == {b"syslog"}
    assert env.stats.messages_tcp == 3 and env.stats.connections == 0
    assert env.stats.connections_total == 1


@pytest.mark.trio
async def test_tcp_flushes_by_age_while_connected(env):
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", env.port)
        async with stream:
            await stream.send_all(b"<1>first\n")
            assert await env.wait_lines(1) == [b"<1>first"]
            await stream.send_all(b"9 <1>second")
            assert await env.wait_lines(2) == [b"<1>first", b"<1>second"]
            assert env.stats.connections == 1


@pytest.mark.trio
async def test_tcp_malformed_does_not_crash(env):
    with trio.fail_after(TIMEOUT):
        await send_tcp(env.port, b"0 \n99999999999999 junk\n5000 " + b"x" * 5000 + b"<1>ok\n")
        await send_tcp(env.port, b"100 <1>cut short")
        await send_tcp(env.port, b"<2>good\n")
        lines = await env.wait_lines(3)
    assert sorted(lines) == [b"<1>cut short", b"<1>ok", b"<2>good"]
    assert env.stats.malformed == 3 and env.stats.oversized == 1


@pytest.mark.trio
async def test_udp_datagrams(env):
    with trio.fail_after(TIMEOUT):
        send_udp(
            env.port,
            b"<34>1 2003-10-11T22:14:15.003Z mymachine su - - - udp one",
            b"<13>Oct 11 22:14:15 host tag: udp two\n",
            b"<13>udp multi\nline\n",
            b"",
            b"o" * 3000,
        )
        lines = await env.wait_lines(3)
        await trio.sleep(FLUSH_AGE * 2)
    assert lines == [
        b"<34>1 2003-10-11T22:14:15.003Z mymachine su - - - udp one",
        b"<13>Oct 11 22:14:15 host tag: udp two",
        b"<13>udp multi\\nline",
    ]
    assert env.lines() == lines
    assert env.stats.messages_udp == 3 and env.stats.oversized == 1


@pytest.mark.trio
async def test_custom_topic_and_shutdown_flush(tmp_path):
    root = tmp_path / "ingest"
    ilog = IngestLog(RealFS(), str(root))
    settings = IngestSettings(flush_size=1 << 20, flush_age=60, max_record_size=2048)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(
                lambda task_status: serve_syslog(
                    "127.0.0.1", 0, ilog, settings, SyslogStats(), topic="net-dev",
                    task_status=task_status,
                )
            )
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"<1>held open\n")
            send_udp(port, b"<1>by udp")
            await poll_until(lambda: ilog.stats()["bytes_in"] > 0 and ilog.records_in >= 2, 0.02)
            assert flushed_records(root) == []  # flush age is a minute
            nursery.cancel_scope.cancel()
        await stream.aclose()
    recs = flushed_records(root)
    assert sorted(ln for _, _, ln in recs) == [b"<1>by udp", b"<1>held open"]
    assert {t for _, t, _ in recs} == {b"net-dev"}
    assert not [n for n in os.listdir(root) if n.endswith(".active")]


needs_logger = pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger absent")


def run_logger(*args: str) -> None:
    subprocess.run(["logger", *args], check=True, timeout=TIMEOUT, capture_output=True)


@needs_logger
@pytest.mark.trio
async def test_logger_client_all_framings(env):
    p = str(env.port)
    base = ["-n", "127.0.0.1", "-P", p, "-t", "oktest"]
    with trio.fail_after(TIMEOUT):
        await trio.to_thread.run_sync(run_logger, "--tcp", "--rfc5424", *base, "tcp 5424 lf")
        await trio.to_thread.run_sync(
            run_logger, "--tcp", "--octet-count", "--rfc5424", *base, "tcp 5424 counted"
        )
        await trio.to_thread.run_sync(run_logger, "--tcp", "--rfc3164", *base, "tcp 3164")
        await trio.to_thread.run_sync(run_logger, "--udp", "--rfc5424", *base, "udp 5424")
        await trio.to_thread.run_sync(run_logger, "--udp", "--rfc3164", *base, "udp 3164")
        lines = await env.wait_lines(5)
    assert len(lines) == 5
    by_text = {ln.rsplit(b" ", 2)[-2] + b" " + ln.rsplit(b" ", 2)[-1]: ln for ln in lines}
    for text in (b"5424 lf", b"5424 counted", b"tcp 3164", b"udp 5424", b"udp 3164"):
        assert text in by_text, lines
    for key in (b"5424 lf", b"5424 counted", b"udp 5424"):
        assert by_text[key].startswith(b"<13>1 "), by_text[key]  # RFC 5424 header
        assert b" oktest " in by_text[key]
    for key in (b"tcp 3164", b"udp 3164"):
        assert by_text[key].startswith(b"<13>"), by_text[key]
        assert b"oktest" in by_text[key] and not by_text[key].startswith(b"<13>1 ")
    assert env.stats.malformed == 0


@pytest.mark.parametrize("chunked", [False, True])
def test_framer_absurd_length_resynchronises(chunked):
    """An unbelievable octet count is an error that does not swallow what follows."""
    st = SyslogStats()
    f = SyslogFramer(1024, st)
    counted = [b"<13>counted %d" % i for i in range(50)]
    lf = [b"<14>lf %d" % i for i in range(50)]
    data = b"9999999999 <1>junk" + b"".join(b"%d %s" % (len(m), m) for m in counted)
    data += b"5000 <2>over four max records" + b"\n" + b"\n".join(lf) + b"\n"
    msgs = feed_bytewise(f, data) if chunked else f.feed(data)
    assert msgs == counted + lf
    assert st.malformed == 2 and st.oversized == 0
    # While resynchronising, memory stays small however much junk arrives.
    f.feed(b"99999999 ")
    for _ in range(100):
        f.feed(b"x" * 65536)
    assert len(f._buf) <= 16
    assert f.feed(b"\n<5>back\n") == [b"<5>back"]


@pytest.mark.trio
async def test_tcp_absurd_length_does_not_swallow_the_next_messages(env):
    msgs = [b"<13>after %d" % i for i in range(100)]
    with trio.fail_after(TIMEOUT):
        await send_tcp(env.port, b"9999999999 " + b"".join(b"%d %s" % (len(m), m) for m in msgs))
        lines = await env.wait_lines(100)
    assert lines == msgs
    assert env.stats.malformed == 1
