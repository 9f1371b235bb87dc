"""The bulk ingest port: whole segments in, acknowledged once replicated.

Framing (one TCP connection carries many frames; a client may send the next
before the previous one is answered, and replies come in frame order)::

    client → node:  "BULK <n>\\n" then n bytes of records
                    (``ULID SP TOPIC SP LINE LF``, sorted by ULID, stamped by the client)
    node → client:  "OK <records>\\n"     once the records are committed by the store
                                          tier, i.e. replicated N times and queryable
                    "ERR <reason>\\n"     malformed frame, ULIDs outside the window,
                                          or not replicated in time

Because the client stamps the ULIDs, a retried frame (to this node or another)
carries the same ULIDs as the first attempt, and the store drops the copies:
retries never duplicate a record in results. A record is immutable once stored:
a later frame with a stored ULID and other text is acknowledged, but the stored
text is kept and the conflict counted (``record_conflicts``). A frame with a
ULID more than 5 minutes ahead of the node's clock, or older than retention
(``-store.segment-retain``), is refused (``ERR refused: ...``): client ULIDs
cannot place records where retention or disk-usage eviction would treat them
out of turn. Connections silent for ``-ingest.idle-timeout`` are closed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import trio

from oklog.ingest.listener import Access, ConnectionGate, serve_gated
from oklog.ingest.log import IngestLog
from oklog.node.state import BulkStats as BulkStatsDict
from oklog.store.api import ulid_window_error
from oklog.store.log import SegmentError, validate_records

log = logging.getLogger("oklog.ingest.bulk")

MAX_FRAME = 64 << 20
HEADER_MAX = 64
ACK_TIMEOUT = 20.0  # then ERR: the client retries (same ULIDs), maybe elsewhere
PIPELINE = 16  # frames read ahead of their replies on one connection


@dataclass
class BulkStats:
    frames: int = 0
    records: int = 0
    bytes: int = 0
    acked: int = 0
    errors: int = 0
    idle_closed: int = 0
    refused_ulids: int = 0  # frames refused for ULIDs outside the accepted window

    def as_dict(self) -> BulkStatsDict:
        return BulkStatsDict(
            frames=self.frames,
            records=self.records,
            bytes=self.bytes,
            acked=self.acked,
            errors=self.errors,
            idle_closed=self.idle_closed,
            refused_ulids=self.refused_ulids,
        )


class _Reader:
    def __init__(self, stream: trio.abc.Stream, idle_timeout: float = 0.0) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.idle = idle_timeout if idle_timeout > 0 else math.inf
        self.idle_closed = False

    async def _receive(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" at EOF or when the client sent nothing for the idle timeout."""
        with trio.move_on_after(self.idle) as timer:
            return bytes(await self.stream.receive_some(n))
        assert timer.cancelled_caught
        self.idle_closed = True
        return b""

    async def fill(self, n: int) -> bool:
        while len(self.buf) < n:
            data = await self._receive(min(max(65536, n - len(self.buf)), 1 << 20))
            if not data:
                return False
            self.buf += data
        return True

    async def line(self) -> bytes | None:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + 1]
                return out
            if len(self.buf) > HEADER_MAX:
                raise ValueError("frame header too long")
            data = await self._receive(65536)
            if not data:
                return None
            self.buf += data

    def take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


@dataclass
class _Frame:
    """One frame's place in the reply order: an ERR to send, or a commit to await."""

    reply: str = ""
    done: trio.Event | None = None
    seg_id: str = ""
    records: int = 0
    deadline: float = 0.0
    last: bool = False  # the reader stopped after this one: close once it is answered


async def handle_bulk(
    stream: trio.abc.Stream,
    ilog: IngestLog,
    stats: BulkStats,
    ack_timeout: float,
    idle_timeout: float = 0.0,
    retain: float | None = None,
) -> None:
    """Frames are pipelined: the reader keeps taking frames (up to PIPELINE
    unanswered) while earlier ones wait for their commit; replies go out in
    frame order."""
    send, recv = trio.open_memory_channel[_Frame](PIPELINE)
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(_answer, stream, ilog, stats, recv)
        async with send:
            await _read_frames(stream, ilog, stats, ack_timeout, send, idle_timeout, retain)


async def _read_frames(
    stream: trio.abc.Stream,
    ilog: IngestLog,
    stats: BulkStats,
    ack_timeout: float,
    send: trio.MemorySendChannel[_Frame],
    idle_timeout: float = 0.0,
    retain: float | None = None,
) -> None:
    r = _Reader(stream, idle_timeout)
    try:
        await _read_loop(r, ilog, stats, ack_timeout, send, retain)
    finally:
        stats.idle_closed += r.idle_closed


async def _read_loop(
    r: _Reader,
    ilog: IngestLog,
    stats: BulkStats,
    ack_timeout: float,
    send: trio.MemorySendChannel[_Frame],
    retain: float | None,
) -> None:
    token = trio.lowlevel.current_trio_token()
    while True:
        try:
            header = await r.line()
        except ValueError as e:
            await send.send(_Frame(reply=f"ERR {e}", last=True))
            return
        if header is None:
            return
        parts = header.split()
        if len(parts) != 2 or parts[0] != b"BULK" or not parts[1].isdigit():
            stats.errors += 1
            await send.send(_Frame(reply="ERR expected 'BULK <bytes>'", last=True))
            return
        n = int(parts[1])
        if n > MAX_FRAME:
            stats.errors += 1
            await send.send(_Frame(reply=f"ERR frame of {n} bytes exceeds {MAX_FRAME}", last=True))
            return
        if not await r.fill(n):
            return
        body = r.take(n)
        try:
            await trio.to_thread.run_sync(validate_records, body)
        except SegmentError as e:
            stats.errors += 1
            await send.send(_Frame(reply=f"ERR bad segment: {e}"))
            continue
        why = ulid_window_error(body, retain=retain)
        if why is not None:
            stats.errors += 1
            stats.refused_ulids += 1
            await send.send(_Frame(reply=f"ERR refused: {why}"))
            continue
        done = trio.Event()
        try:
            seg_id = await trio.to_thread.run_sync(ilog.add_flushed, body, lambda done=done: _set(done, token))
        except OSError as e:  # disk full or failing: this frame is not taken; the client retries
            stats.errors += 1
            log.error("bulk frame not written: %s", e)
            await send.send(_Frame(reply=f"ERR write failed: {e.strerror or e}; retry", last=True))
            return
        records = body.count(b"\n")
        stats.frames += 1
        stats.records += records
        stats.bytes += n
        await send.send(_Frame(done=done, seg_id=seg_id, records=records, deadline=trio.current_time() + ack_timeout))


async def _answer(
    stream: trio.abc.Stream, ilog: IngestLog, stats: BulkStats, recv: trio.MemoryReceiveChannel[_Frame]
) -> None:
    async with recv:
        async for f in recv:
            if f.done is not None:
                with trio.move_on_at(f.deadline):
                    await f.done.wait()
                if f.done.is_set():
                    stats.acked += 1
                    f.reply = f"OK {f.records}"
                else:
                    ilog.commit_waiters.pop(f.seg_id, None)
                    stats.errors += 1
                    f.reply = "ERR not replicated in time; retry"
            await _reply(stream, f.reply)
            if f.last:
                return


def _set(ev: trio.Event, token: trio.lowlevel.TrioToken) -> None:
    try:
        trio.lowlevel.current_trio_token()
        ev.set()
    except RuntimeError:  # called from a worker thread
        token.run_sync_soon(ev.set)


async def _reply(stream: trio.abc.Stream, text: str) -> None:
    try:
        await stream.send_all(text.encode() + b"\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def serve_bulk(
    host: str,
    port: int,
    ilog: IngestLog,
    stats: BulkStats,
    *,
    ack_timeout: float = ACK_TIMEOUT,
    idle_timeout: float = 0.0,
    gate: ConnectionGate | None = None,
    retain: float | None = None,
    access: Access | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    listeners = await trio.open_tcp_listeners(port, host=host if host not in ("", "0.0.0.0") else None)
    task_status.started((host, listeners[0].socket.getsockname()[1]))
    g = gate if gate is not None else ConnectionGate()

    async def handle(stream: trio.abc.Stream) -> None:
        await handle_bulk(stream, ilog, stats, ack_timeout, idle_timeout, retain)

    async def handler(stream: trio.SocketStream) -> None:
        # Whatever ends one connection (its reader and answerer run in a nursery,
        # so errors arrive as groups) must not end the listener and the node.
        try:
            await serve_gated(stream, g, access, handle)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as eg:
            log.debug("bulk connection ended: %s", eg.exceptions[0])
        except* Exception as eg:  # one connection's failure must not end the node
            log.error("bulk connection failed", exc_info=eg)

    await trio.serve_listeners(handler, listeners)
