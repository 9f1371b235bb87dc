"""The Fluent forward listener: each mode in raw msgpack, acks only after the
records are flushed, and bad input bounded, on real sockets and files."""

from __future__ import annotations

import gzip
import os
import struct
import time

import msgpack
import pytest
import trio

from oklog.fs import RealFS
from oklog.ingest.fluent import FluentStats, parse_message, serve_fluent
from oklog.ingest.listener import IngestSettings
from oklog.ingest.log import IngestLog
from oklog.records.record import split_record, ulid_ms

TIMEOUT = 20
LIMIT = 1 << 20


def et(ns: int) -> msgpack.ExtType:
    return msgpack.ExtType(0, struct.pack(">II", ns // 10**9, ns % 10**9))


def packed(entries) -> bytes:
    return b"".join(msgpack.packb(e) for e in entries)


def test_parse_each_mode():
    t = 1_764_000_000_250_000_001
    rec = {"log": "hello\nworld", "level": "info", "kube": {"pod": "p1"}}
    want_line = b'{kube="{\\"pod\\":\\"p1\\"}",level=info} hello\\nworld'
    raw = msgpack.unpackb(msgpack.packb(["app.web", et(t), rec, {"chunk": "c1"}]), raw=True)
    assert parse_message(raw, b"default", LIMIT) == (b"app_web", [want_line], [t], b"c1")
    msgs = [
        ["app.web", [[et(t), rec], [t // 10**9, {"message": "m"}]]],
        ["app.web", packed([[et(t), rec], [t // 10**9, {"message": "m"}]])],
        ["app.web", gzip.compress(packed([[et(t), rec], [t // 10**9, {"message": "m"}]])), {"compressed": "gzip"}],
    ]
    for m in msgs:
        raw = msgpack.unpackb(msgpack.packb(m, use_bin_type=True), raw=True)
        assert parse_message(raw, b"default", LIMIT) == (
            b"app_web", [want_line, b"m"], [t, t // 10**9 * 10**9], None
        )
    # a record without log/message is its other fields; a non-map record is JSON
    raw = msgpack.unpackb(msgpack.packb(["t", 1, {"a": 1}]), raw=True)
    assert parse_message(raw, b"d", LIMIT)[1] == [b"{a=1}"]
    raw = msgpack.unpackb(msgpack.packb(["t", 1, [1, "x"]]), raw=True)
    assert parse_message(raw, b"d", LIMIT)[1] == [b'[1,"x"]']


@pytest.fixture
async def fluent(tmp_path, nursery):
    root = tmp_path / "ingest"
    ilog = IngestLog(RealFS(), str(root))
    stats = FluentStats()
    settings = IngestSettings(flush_size=1 << 20, flush_age=1.0, max_record_size=4096)
    _, port = await nursery.start(
        lambda task_status: serve_fluent(
            "127.0.0.1", 0, ilog, settings, stats, max_message=LIMIT, partial_timeout=0.5,
            task_status=task_status,
        )
    )
    return root, port, stats


def flushed(root):
    out = []
    for name in sorted(os.listdir(root)):
        assert not name.endswith(".active")
        if name.endswith(".flushed"):
            out += [split_record(r) for r in open(os.path.join(root, name), "rb").read().split(b"\n")[:-1]]
    return out


async def read_msg(stream) -> object:
    up = msgpack.Unpacker(raw=False)
    while True:
        data = await stream.receive_some(4096)
        if not data:
            return None
        up.feed(data)
        for m in up:
            return m


@pytest.mark.trio
async def test_each_mode_acked_after_flush(fluent):
    root, port, stats = fluent
    t = time.time_ns() - 30 * 60 * 10**9  # half an hour old: stamped at its event time
    modes = [
        ["m.a", et(t), {"log": "message mode"}, {"chunk": "k1"}],
        ["m.b", [[et(t + 1), {"log": "forward 1"}], [et(t + 2), {"log": "forward 2"}]], {"chunk": "k2"}],
        ["m.c", packed([[et(t + 3), {"log": "packed"}]]), {"chunk": "k3", "size": 1}],
        ["m.d", gzip.compress(packed([[et(t + 4), {"log": "compressed"}]])), {"chunk": "k4", "compressed": "gzip"}],
    ]
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            for i, m in enumerate(modes):
                await stream.send_all(msgpack.packb(m, use_bin_type=True))
                ack = await read_msg(stream)
                assert ack == {"ack": f"k{i + 1}"}
                # the ack comes after the records are in a flushed segment
                assert len(flushed(root)) == [1, 3, 4, 5][i]
    recs = flushed(root)
    assert [(tp, ln) for _, tp, ln in recs] == [
        (b"m_a", b"message mode"), (b"m_b", b"forward 1"), (b"m_b", b"forward 2"),
        (b"m_c", b"packed"), (b"m_d", b"compressed"),
    ]
    assert {ulid_ms(u) for u, _, _ in recs} == {t // 10**6}
    assert stats.acks == 4 and stats.records == 5


async def closed(stream) -> bool:
    """The node closed the connection (a reset if our bytes were left unread)."""
    try:
        return await stream.receive_some(100) == b""
    except trio.BrokenResourceError:
        return True


@pytest.mark.trio
async def test_bad_input_is_bounded_and_the_listener_keeps_serving(fluent):
    root, port, stats = fluent
    bomb = gzip.compress(b"\x90" * (4 * LIMIT))  # decompresses past the message bound
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            # well-formed msgpack, wrong shapes: skipped, never acked; the connection goes on
            for bad in (
                [1, 2],
                ["tag"],
                ["tag", "not a time", {}],
                ["tag", [[1]], {"chunk": "x"}],
                ["tag", bomb, {"compressed": "gzip", "chunk": "bomb"}],
                ["tag", b"\xc1", {"chunk": "y"}],
                {"a": 1},
            ):
                await stream.send_all(msgpack.packb(bad, use_bin_type=True))
            await stream.send_all(msgpack.packb(["ok", 1, {"log": "after bad"}, {"chunk": "z"}]))
            assert await read_msg(stream) == {"ack": "z"}
        assert stats.bad_messages == 7
        for garbage in (
            b"\xc1\xc1\xc1",  # never-used msgpack byte
            b"\x93\xa3tag\x01\xc6\xff\xff\xff\xff",  # bin32 declaring 4 GiB, then quiet
            b"\x91" * 100_000,  # nesting bomb
        ):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(garbage)
                assert await closed(stream)  # closed, nothing acked
        # a message beyond the bound, sent in pieces: closed once the buffer is full
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            big = msgpack.packb(["big", 1, {"log": "x" * (2 * LIMIT)}])
            try:
                for i in range(0, len(big), 65536):
                    await stream.send_all(big[i : i + 65536])
            except trio.BrokenResourceError:
                pass
            assert await closed(stream)
        assert stats.bad_streams == 4
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(msgpack.packb(["ok", 1, {"log": "still serving"}, {"chunk": "s"}]))
            assert await read_msg(stream) == {"ack": "s"}
    assert [ln for _, _, ln in flushed(root)] == [b"1970-01-01T00:00:01.000000000Z after bad",
                                                   b"1970-01-01T00:00:01.000000000Z still serving"]


def test_truncated_packed_entries_are_refused():
    from oklog.ingest.fluent import BadMessage

    whole = packed([[1, {"log": "a"}], [2, {"log": "b"}]])
    for cut in (whole[:-1], whole[:3], b"\x92\x01"):
        raw = msgpack.unpackb(msgpack.packb(["t", cut, {"chunk": "c"}], use_bin_type=True), raw=True)
        with pytest.raises(BadMessage):
            parse_message(raw, b"d", LIMIT)
