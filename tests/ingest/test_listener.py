"""The fast and durable listeners' topic line: pure parsing, then real sockets and files."""

from __future__ import annotations

import logging
import os
import struct

import pytest
import trio
from support import poll_until

from oklog.fs import RealFS
from oklog.ingest.listener import Connection, IngestSettings, ListenerStats, serve_ingest
from oklog.ingest.log import IngestLog
from oklog.records.record import TOPIC_PREAMBLE, RecordError, split_record

SETTINGS = IngestSettings(flush_size=1 << 20, flush_age=60.0, max_record_size=1 << 20, topic=b"node-topic")


def feed(pieces: list[bytes]) -> tuple[list[tuple[bytes, bytes]], Connection]:
    """(topic, line) of every record stamped from the pieces, given one read at a time."""
    conn = Connection(None, SETTINGS, ListenerStats(), durable=False)  # type: ignore[arg-type]
    out = b""
    for p in pieces:
        out += conn.take(p)[0]
    out += conn.take(b"", final=True)[0]
    recs = [split_record(r) for r in out.split(b"\n")[:-1]]
    return [(t, ln) for _, t, ln in recs], conn


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize("split", [lambda d: [d], bytewise, lambda d: [d[:3], d[3:20], d[20:]]])
def test_topic_line_in_any_fragmentation(split):
    data = TOPIC_PREAMBLE + b"web-1\nfirst\nsecond\n"
    recs, conn = feed(split(data))
    assert recs == [(b"web-1", b"first"), (b"web-1", b"second")]
    assert conn.topic == b"web-1"


@pytest.mark.parametrize(
    "data",
    [
        b"plain line\nnext\n",
        b"\x01 not a topic line\n",  # SOH, then something else: a record like any other
        TOPIC_PREAMBLE[:5] + b"X\n",  # a prefix of the preamble that then differs
        b"\x01ok",  # connection ends inside what could have been a preamble
        b"",
    ],
)
def test_without_a_topic_line_bytes_are_kept_verbatim(data):
    for pieces in ([data], bytewise(data)):
        recs, _ = feed(pieces)
        want = [ln for ln in data.split(b"\n")]
        if data.endswith(b"\n") or not data:
            want = want[:-1]
        assert recs == [(b"node-topic", ln) for ln in want]


def test_topic_line_only_at_the_start():
    recs, _ = feed([b"a\n" + TOPIC_PREAMBLE + b"x\n"])
    assert recs == [(b"node-topic", b"a"), (b"node-topic", TOPIC_PREAMBLE + b"x")]


@pytest.mark.parametrize("data", [TOPIC_PREAMBLE + b"bad topic!\n", TOPIC_PREAMBLE + b"x" * 300, TOPIC_PREAMBLE + b"cut"])
def test_bad_topic_line_is_refused(data):
    with pytest.raises(RecordError):
        feed([data])


@pytest.mark.trio
async def test_listener_topics_on_real_sockets(tmp_path, caplog):
    ilog = IngestLog(RealFS(), str(tmp_path))
    stats = ListenerStats()
    settings = IngestSettings(flush_size=1 << 20, flush_age=0.05, max_record_size=1 << 20, topic=b"node-topic")
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_ingest, "127.0.0.1", 0, ilog, settings, stats)

        async def send(data: bytes, fragment: bool = False) -> None:
            s = await trio.open_tcp_stream("127.0.0.1", port)
            async with s:
                for piece in bytewise(data) if fragment else [data]:
                    await s.send_all(piece)
                    if fragment:
                        await trio.sleep(0.001)

        async def send_and_reset(data: bytes) -> None:
            s = await trio.open_tcp_stream("127.0.0.1", port)
            await s.send_all(data)
            await trio.sleep(0.1)
            s.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
            await s.aclose()

        with trio.fail_after(20):
            await send_and_reset(TOPIC_PREAMBLE + b"fo")  # gone inside its topic line: no record, no error
            await send(TOPIC_PREAMBLE + b"api\nfrom api\n", fragment=True)
            await send(b"no topic line\n")
            await send(TOPIC_PREAMBLE + b"no good\nnever stored\n")
            await poll_until(lambda: not stats.connections and not any(n.endswith(".active") for n in os.listdir(tmp_path)), 0.05)
        nursery.cancel_scope.cancel()
    recs = []
    for name in sorted(os.listdir(tmp_path)):
        data = await trio.Path(tmp_path / name).read_bytes()
        recs += [split_record(r)[1:] for r in data.split(b"\n")[:-1]]
    assert sorted(recs) == [(b"api", b"from api"), (b"node-topic", b"no topic line")]
    assert stats.bad_topic_lines == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
