"""The Fluent forward protocol (Fluentd ``out_forward``, Fluent Bit ``forward``,
fluent-logger) on ``-ingest.fluent ADDR`` (TCP; off by default, 24224 usual).

A connection carries msgpack arrays, in any of the protocol's four modes::

    Message                  [tag, time, record(, option)]
    Forward                  [tag, [[time, record], ...](, option)]
    PackedForward            [tag, bin: msgpack stream of [time, record](, option)]
    CompressedPackedForward  the same, option {"compressed": "gzip"}

* topic: the tag, sanitized as Loki label values are (``app.web`` → ``app_web``).
* line: the record's ``log``, else ``message`` field (bytes kept, LF as
  ``\\n``), after a ``{k=v,...} `` prefix (the Loki push's form) of its other
  fields; a record with neither is written as that prefix alone. A record
  that is not a map is written as compact JSON.
* time: integer seconds, a float, or the EventTime extension (type 0: two
  big-endian uint32, seconds and nanoseconds), under the event-time rules of
  ``oklog.ingest.eventtime``.
* ``chunk`` option: the node answers ``{"ack": chunk}`` only after the
  message's records are written, fsynced and flushed (the HTTP push path's
  durable write), so a shipper that waits for acks resends what a crash lost
  (at-least-once).

Everything a connection has sent when the node reads it (up to the messages
complete in that read) is written as one batch: one fsync per read, not per
message. Bounds: one message may be at most ``max_message`` bytes (the
connection is closed once more than that is buffered, and a gzip body may not
decompress beyond it); a begun message must get its next bytes within
``partial_timeout`` (a peer declaring a huge length and going quiet holds
nothing for long); msgpack nesting is bounded by the decoder. Malformed
msgpack ends that connection (the stream cannot be resynchronized); a
well-formed message of the wrong shape is skipped, counted and not acked. No
shared-key handshake (``HELO``/``PING``): run it on a trusted network.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from oklog.ingest.eventtime import EventWindow
from oklog.ingest.httpingest import (
    MAX_BODY,
    Batch,
    decode_body,
    fields_prefix,
    sanitize_topic,
    write_batch,
)
from oklog.ingest.listener import Access, ConnectionGate, IngestSettings, refuse
from oklog.ingest.log import IngestLog
from oklog.net.http import HTTPError
from oklog.node.state import FluentStats as FluentStatsDict

log = logging.getLogger("oklog.ingest.fluent")

READ_SIZE = 1 << 16
PARTIAL_TIMEOUT = 30.0  # seconds a begun message may wait for its next bytes
MAX_DEPTH = 32  # nesting converted into JSON; deeper values are written as text
MESSAGE_FIELDS = (b"log", b"message")
# What decoding a peer's msgpack raises: FormatError, StackError, ExtraData,
# the max_*_len bounds (ValueError), an array or map as a map key (TypeError).
MSGPACK_ERRORS = (msgpack.UnpackException, ValueError, TypeError)


@dataclass
class FluentStats:
    connections: int = 0
    connections_total: int = 0
    messages: int = 0
    records: int = 0
    acks: int = 0
    bad_messages: int = 0  # well-formed msgpack of the wrong shape: skipped
    bad_streams: int = 0  # malformed msgpack or over the size bound: connection closed
    write_errors: int = 0

    def as_dict(self) -> FluentStatsDict:
        return FluentStatsDict(
            connections=self.connections,
            connections_total=self.connections_total,
            messages=self.messages,
            records=self.records,
            acks=self.acks,
            bad_messages=self.bad_messages,
            bad_streams=self.bad_streams,
            write_errors=self.write_errors,
        )


class BadMessage(ValueError):
    """A msgpack value that is not a forward-protocol message."""


def _unpacker(limit: int) -> msgpack.Unpacker:
    return msgpack.Unpacker(
        raw=True,
        strict_map_key=False,
        max_buffer_size=limit,
        max_bin_len=limit,
        max_str_len=limit,
        max_array_len=limit // 2 or 1,
        max_map_len=limit // 4 or 1,
        max_ext_len=limit,
    )


def event_time(value: Any) -> int | None:
    """A forward-protocol time as unix nanoseconds."""
    if isinstance(value, msgpack.ExtType):
        if value.code != 0 or len(value.data) != 8:
            raise BadMessage(f"unknown time extension {value.code}")
        sec, nsec = struct.unpack(">II", value.data)
        return int(sec) * 1_000_000_000 + int(nsec)
    if isinstance(value, bool):
        raise BadMessage("time is a boolean")
    if isinstance(value, int):
        return value * 1_000_000_000
    if isinstance(value, float):
        if value != value or abs(value) > 1e12:
            raise BadMessage("time out of range")
        return int(value * 1e9)
    raise BadMessage(f"time must be an integer, a float or an EventTime, not {type(value).__name__}")


def _jsonable(v: Any, depth: int = 0) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if depth >= MAX_DEPTH:
        return repr(v)
    if isinstance(v, list | tuple):
        return [_jsonable(x, depth + 1) for x in v]
    if isinstance(v, dict):
        return {_key(k): _jsonable(x, depth + 1) for k, x in v.items()}
    if isinstance(v, msgpack.ExtType):
        return {"ext": v.code, "data": v.data.hex()}
    return v


def _key(k: Any) -> str:
    return k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)


def record_line(record: Any) -> bytes:
    if not isinstance(record, dict):
        text = json.dumps(_jsonable(record), separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8", "surrogatepass")
    fields = dict(record)
    message = None
    for name in MESSAGE_FIELDS:
        for k in (name, name.decode()):
            if k in fields:
                message = fields.pop(k)
                break
        if message is not None:
            break
    prefix = fields_prefix({_key(k): _jsonable(v) for k, v in fields.items()})
    if message is None:
        return prefix.rstrip(b" ")
    if isinstance(message, str):
        message = message.encode("utf-8", "surrogatepass")
    if not isinstance(message, bytes):
        message = json.dumps(_jsonable(message), separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
    return prefix + message.replace(b"\n", b"\\n")


def _entries(entries: Iterable[Any], out_lines: list[bytes], out_times: list[int | None]) -> None:
    for e in entries:
        if not isinstance(e, list | tuple) or len(e) != 2:
            raise BadMessage("an entry must be [time, record]")
        out_times.append(event_time(e[0]))
        out_lines.append(record_line(e[1]))


def parse_message(
    msg: Any, default: bytes, limit: int
) -> tuple[bytes, list[bytes], list[int | None], bytes | None]:
    """One forward-protocol message → (topic, lines, event times, chunk id or None)."""
    if not isinstance(msg, list | tuple) or len(msg) < 2:
        raise BadMessage("a message must be an array [tag, ...]")
    tag = msg[0]
    if not isinstance(tag, bytes | str):
        raise BadMessage("the tag must be a string")
    topic = sanitize_topic(_key(tag)) or default
    second = msg[1]
    lines: list[bytes] = []
    times: list[int | None] = []
    if isinstance(second, int | float | msgpack.ExtType) and not isinstance(second, bool):
        if len(msg) not in (3, 4):
            raise BadMessage("Message mode is [tag, time, record(, option)]")
        times.append(event_time(second))
        lines.append(record_line(msg[2]))
        option = msg[3] if len(msg) == 4 else None
    elif isinstance(second, list | tuple):
        if len(msg) > 3:
            raise BadMessage("Forward mode is [tag, entries(, option)]")
        option = msg[2] if len(msg) == 3 else None
        _entries(second, lines, times)
    elif isinstance(second, bytes):
        if len(msg) > 3:
            raise BadMessage("PackedForward mode is [tag, entries(, option)]")
        option = msg[2] if len(msg) == 3 else None
        _packed_entries(_unpacked_data(second, option, limit), limit, lines, times)
    else:
        raise BadMessage("the second element must be a time, an entry array or packed entries")
    return topic, lines, times, _chunk(option)


def _unpacked_data(data: bytes, option: Any, limit: int) -> bytes:
    """PackedForward entries, decompressed when the option says gzip."""
    if not isinstance(option, dict):
        return data
    comp = option.get(b"compressed", option.get("compressed"))
    if comp in (b"gzip", "gzip"):
        try:
            return decode_body(data, "gzip", limit)
        except HTTPError as e:  # the HTTP push's bounds, another transport
            raise BadMessage(f"compressed entries: {e.message}") from None
    if comp not in (None, b"text", "text"):
        raise BadMessage(f"unknown compression {comp!r}")
    return data


def _packed_entries(data: bytes, limit: int, lines: list[bytes], times: list[int | None]) -> None:
    up = _unpacker(max(limit, 1))
    end = 0  # where the last complete entry ended (tell() counts a partial one too)
    try:
        up.feed(data)
        for entry in up:
            _entries((entry,), lines, times)
            end = up.tell()
    except BadMessage:
        raise
    except MSGPACK_ERRORS as e:
        raise BadMessage(f"packed entries are not msgpack: {e}") from None
    if end != len(data):
        raise BadMessage("packed entries end inside an entry")


def _chunk(option: Any) -> bytes | None:
    """The option map's ``chunk`` id (None without one)."""
    if option is not None and not isinstance(option, dict):
        raise BadMessage("the option must be a map")
    if not option:
        return None
    c = option.get(b"chunk", option.get("chunk"))
    if isinstance(c, str):
        return c.encode()
    return c if isinstance(c, bytes) else None


class FluentConnection:
    def __init__(
        self,
        stream: trio.abc.Stream,
        ilog: IngestLog,
        settings: IngestSettings,
        stats: FluentStats,
        window: EventWindow,
        max_message: int,
        limiter: trio.CapacityLimiter,
        partial_timeout: float = PARTIAL_TIMEOUT,
    ) -> None:
        self.partial_timeout = partial_timeout
        self.stream = stream
        self.ilog = ilog
        self.settings = settings
        self.stats = stats
        self.window = window
        self.max_message = max_message
        self.limiter = limiter
        self.unpacker = _unpacker(max_message)
        self.boundary = 0  # stream offset where the last complete message ended

    def _take(self, data: bytes | bytearray) -> tuple[Batch, list[bytes], str | None]:
        """Feed received bytes; the complete messages' batch, their chunk ids, and
        why the stream is beyond repair (or None)."""
        batch = Batch()
        chunks: list[bytes] = []
        try:
            self.unpacker.feed(data)
            for msg in self.unpacker:
                self.boundary = self.unpacker.tell()
                self.stats.messages += 1
                try:
                    topic, lines, times, chunk = parse_message(msg, self.settings.topic, self.max_message)
                except BadMessage as e:
                    self.stats.bad_messages += 1
                    log.info("fluent: message skipped: %s", e)
                    continue
                batch.add(topic, lines, times)
                if chunk is not None:
                    chunks.append(chunk)
        except msgpack.BufferFull:
            return batch, chunks, f"a message exceeds {self.max_message} bytes"
        except MSGPACK_ERRORS as e:
            return batch, chunks, f"malformed msgpack: {e}"
        return batch, chunks, None

    async def run(self) -> None:
        fed = 0
        while True:
            # A message begun must finish in time: a peer declaring a huge length
            # and going quiet would otherwise hold its buffer forever.
            partial = fed > self.boundary
            idle = self.settings.idle_timeout or math.inf
            with trio.move_on_after(self.partial_timeout if partial else idle) as waited:
                data = await self.stream.receive_some(READ_SIZE)
            if waited.cancelled_caught:
                if not partial:
                    log.debug("fluent: closing a connection idle for %ss", idle)
                    return
                self.stats.bad_streams += 1
                log.warning("fluent: closing connection: a message unfinished after %ss", self.partial_timeout)
                return
            if not data:
                return
            fed += len(data)
            batch, chunks, broken = await trio.to_thread.run_sync(self._take, data, limiter=self.limiter)
            if batch.records:
                try:
                    await trio.to_thread.run_sync(
                        write_batch, self.ilog, batch, self.settings, self.window, limiter=self.limiter
                    )
                except OSError as e:
                    self.stats.write_errors += 1
                    log.error("fluent: write failed, connection closed unacknowledged: %s", e)
                    return
                self.stats.records += batch.records
            for c in chunks:
                await self.stream.send_all(msgpack.packb({"ack": _as_str(c)}))
                self.stats.acks += 1
            if broken is not None:
                self.stats.bad_streams += 1
                log.warning("fluent: closing connection: %s", broken)
                return


def _as_str(chunk: bytes) -> str | bytes:
    """Chunk ids are base64 text, and shippers compare the ack as a string."""
    try:
        return chunk.decode("utf-8")
    except UnicodeDecodeError:
        return chunk


async def serve_fluent(
    host: str,
    port: int,
    ilog: IngestLog,
    settings: IngestSettings,
    stats: FluentStats,
    *,
    window: EventWindow | None = None,
    max_message: int = MAX_BODY,
    partial_timeout: float = PARTIAL_TIMEOUT,
    gate: ConnectionGate | None = None,
    access: Access | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the Fluent forward protocol on TCP ``host:port``. ``access``
    (``oklog.net.auth.ingest_gate``) does the TLS handshake and checks the client
    as on the other TCP ingest ports: a certificate verified against
    ``-tls.client-ca``, or else a token line before the first message."""
    listeners = await trio.open_tcp_listeners(port, host=host if host not in ("", "0.0.0.0") else None)
    task_status.started((host, listeners[0].socket.getsockname()[1]))
    limiter = trio.CapacityLimiter(4)
    win = window or EventWindow()

    tcp_gate = gate if gate is not None else ConnectionGate(settings.max_connections)

    async def handler(raw: trio.SocketStream) -> None:
        if not tcp_gate.admit():
            refuse(raw)
            return
        stats.connections += 1
        stats.connections_total += 1
        try:
            stream: trio.abc.Stream | None = raw if access is None else await access(raw)
            if stream is None:
                return  # refused (counted by the gate)
            async with stream:
                await FluentConnection(
                    stream, ilog, settings, stats, win, max_message, limiter, partial_timeout
                ).run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            log.debug("fluent connection ended: %s", e)
        except Exception:
            log.exception("fluent connection failed")
        finally:
            stats.connections -= 1
            tcp_gate.release()

    await trio.serve_listeners(handler, listeners)
