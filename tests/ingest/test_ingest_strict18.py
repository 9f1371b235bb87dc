"""Issue 18 in oklog/ingest: the pieces split out of long handlers keep their
behaviour (the shared TCP accept path, the partial-data bound, msgpack errors
named instead of caught blind) and every stats section matches its TypedDict."""

from __future__ import annotations

import gzip
import typing

import msgpack
import pytest
import trio
from support import poll_until

from oklog.fs import RealFS
from oklog.ingest.bulk import BulkStats
from oklog.ingest.esbulk import path_index
from oklog.ingest.fluent import BadMessage, FluentConnection, FluentStats, parse_message
from oklog.ingest.httpingest import Batch, HTTPIngestStats
from oklog.ingest.listener import ConnectionGate, HeldBytes, IngestSettings, serve_gated
from oklog.ingest.log import IngestLog
from oklog.ingest.otlp import is_protobuf
from oklog.ingest.syslog import SyslogFramer, SyslogStats
from oklog.net.http import HTTPError
from oklog.node import state

LIMIT = 1 << 20
TIMEOUT = 20


def _keys(td: type) -> set[str]:
    return set(typing.get_type_hints(td))


def test_stats_sections_are_their_typeddicts(tmp_path):
    ilog = IngestLog(RealFS(), str(tmp_path))
    ilog.recover()
    gate = ConnectionGate(4)
    pairs = [
        (SyslogStats().as_dict(), state.SyslogStats),
        (BulkStats().as_dict(), state.BulkStats),
        (HTTPIngestStats().as_dict(), state.HTTPIngestStats),
        (FluentStats().as_dict(), state.FluentStats),
        (gate.as_dict(nofile=1024), state.Gate),
        (ilog.stats(), state.IngestLogStats),
    ]
    for got, td in pairs:
        assert set(got) == _keys(td), td.__name__
    assert gate.as_dict(nofile=1024)["nofile"] == 1024
    assert gate.as_dict()["nofile"] > 0
    assert set(ilog.stats()["segments"]) == {"active", "flushed", "pending"}


def test_held_bytes_bounds_and_gives_back():
    gate = ConnectionGate(max_buffered=100)
    a, b = HeldBytes(gate), HeldBytes(gate)
    assert a.hold(60)
    assert not b.hold(50)  # 110 held node-wide: over the bound
    assert gate.shed == 1
    assert a.hold(10)  # shrinking is always fine
    assert b.hold(50)  # 60 held now
    a.hold(0)
    b.hold(0)
    assert gate.buffered == 0
    assert HeldBytes(None).hold(1 << 40)  # no gate, no bound


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_framer_gives_the_same_messages_whatever_the_reads(piece):
    stream = (
        b"5 <13>a"  # counted, shorter than the length: "<13>a" is 5 bytes
        b"<14>plain line\n"
        b"99999999999 <13>x\n"  # 11 digits: resync to the next frame
        b"0 \n"  # zero length: resync
        b"12 <13>counted\n\n"
        + b"x" * 300
        + b"\n"  # LF-framed, over max_size: dropped
        b"250 "
        + b"y" * 250  # counted, over max_size: skipped
        + b"<15>after\n"
    )
    whole = SyslogFramer(200)
    want = whole.feed(stream) + whole.finish()
    framer = SyslogFramer(200)
    got: list[bytes] = []
    for i in range(0, len(stream), piece):
        got += framer.feed(stream[i : i + piece])
    got += framer.finish()
    assert got == want
    assert b"<15>after" in want
    assert b"<13>counted" in want  # its one trailing LF dropped
    assert whole.stats.oversized == 2
    assert whole.stats.malformed == 2


def test_fluent_unhashable_map_key_is_a_bad_message_not_a_crash():
    # A msgpack map keyed by an array decodes to TypeError ("unhashable"):
    # a peer's bytes, so a bad message (skipped, counted), never an escape.
    entry = b"\x92\x01\x81\x91\x01\x01"  # [1, {[1]: 1}]
    msg = [b"tag", entry]
    with pytest.raises(BadMessage, match="not msgpack"):
        parse_message(msg, b"default", LIMIT)
    gz = gzip.compress(entry)
    with pytest.raises(BadMessage, match="not msgpack"):
        parse_message([b"tag", gz, {b"compressed": b"gzip"}], b"default", LIMIT)
    with pytest.raises(BadMessage, match="compressed entries"):
        parse_message([b"tag", b"not gzip", {b"compressed": b"gzip"}], b"default", LIMIT)
    with pytest.raises(BadMessage, match="option must be a map"):
        parse_message([b"tag", msgpack.packb([1, {"a": 1}]), 5], b"default", LIMIT)


def test_fluent_stream_with_unhashable_key_ends_as_malformed(tmp_path):
    ilog = IngestLog(RealFS(), str(tmp_path))
    ilog.recover()
    settings = IngestSettings(flush_size=1 << 20, flush_age=1.0, max_record_size=LIMIT)
    conn = FluentConnection(
        None,  # type: ignore[arg-type]  # _take reads no stream
        ilog,
        settings,
        FluentStats(),
        None,  # type: ignore[arg-type]
        LIMIT,
        trio.CapacityLimiter(1),
    )
    good = msgpack.packb(["app", 1, {"log": "kept"}])
    batch, chunks, broken = conn._take(good + b"\x81\x91\x01\x01")
    assert isinstance(batch, Batch) and batch.records == 1
    assert broken is not None and broken.startswith("malformed msgpack")


async def _serve_one(gate: ConnectionGate, access, handled: list[bytes], results: list[bool]):
    async def handle(stream: trio.abc.Stream) -> None:
        handled.append(await stream.receive_some(100))

    async def handler(stream: trio.SocketStream) -> None:
        results.append(await serve_gated(stream, gate, access, handle))

    return handler


@pytest.mark.trio
async def test_serve_gated_admits_checks_and_gives_back():
    with trio.fail_after(TIMEOUT):
        gate = ConnectionGate(max_connections=1)
        handled: list[bytes] = []
        results: list[bool] = []
        refused_by_access = trio.Event()

        async def access(stream: trio.abc.Stream) -> trio.abc.Stream | None:
            first = await stream.receive_some(1)
            if first == b"n":
                refused_by_access.set()
                await stream.aclose()
                return None
            return stream

        handler = await _serve_one(gate, access, handled, results)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handler, listeners)
            a = await trio.open_tcp_stream("127.0.0.1", port)
            await a.send_all(b"y")
            await poll_until(lambda: gate.open >= 1)
            # The one slot is taken: the next connection is refused with a reset.
            b = await trio.open_tcp_stream("127.0.0.1", port)
            await poll_until(lambda: results)
            assert results == [False]
            assert gate.refused == 1
            await a.send_all(b"hello")
            await poll_until(lambda: handled)
            assert handled == [b"hello"]
            await poll_until(lambda: not gate.open)
            # Refused by access: handle never runs, the slot is given back.
            c = await trio.open_tcp_stream("127.0.0.1", port)
            await c.send_all(b"n")
            await refused_by_access.wait()
            await poll_until(lambda: not gate.open)
            assert handled == [b"hello"]
            assert results[-1] is True
            for s in (a, b, c):
                await s.aclose()
            nursery.cancel_scope.cancel()


def test_otlp_encoding_by_content_type():
    assert is_protobuf("application/x-protobuf")
    assert is_protobuf("Application/Protobuf; charset=binary")
    assert not is_protobuf("application/json; charset=utf-8")
    for bad in ("", "text/plain", "application/xml"):
        with pytest.raises(HTTPError) as e:
            is_protobuf(bad)
        assert e.value.status == 415


def test_esbulk_index_from_path():
    assert path_index("/_bulk") is None
    assert path_index("/web-logs/_bulk") == "web-logs"
    assert path_index("/web-logs/_bulk/") == "web-logs"
