"""TCP ingest listeners: newline records in, stamped records into segments.

Each connection appends to its own active segment. Data is taken a buffer at a
time: split on LF, stamped with a batch of monotonic ULIDs and written with one
call; the partial last line waits for the next read. A segment flushes when it
reaches the flush size or age.

* fast:    fsync only when a segment flushes.
* durable: every batch is fsynced before more is read from the connection; the
           node then answers ``+N\\n`` (records made durable by that batch) so a
           client can know what was accepted. Clients that don't care ignore it.

Records take the listener's topic (``-ingest.topic``, default ``default``),
unless the connection opens with a topic line: the bytes ``\\x01oklog-topic
NAME\\n`` before the first record (``oklog forward -topic`` sends it). The
leading SOH byte keeps it apart from any text a producer writes.
"""

from __future__ import annotations

import logging
import math
import resource
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from oklog.ingest.log import ActiveSegment, IngestLog
from oklog.node.state import Gate
from oklog.records.record import (
    DEFAULT_TOPIC,
    MAX_TOPIC_LEN,
    TOPIC_PREAMBLE,
    RecordError,
    ULIDSource,
    stamp_lines,
    validate_topic,
)

log = logging.getLogger("oklog.ingest")

# The accept step of a TCP ingest port (``oklog.net.auth.ingest_gate``): the
# stream to read after TLS and/or the token line, or None when refused.
Access = Callable[[trio.abc.Stream], Awaitable[trio.abc.Stream | None]]

READ_SIZE = 1 << 20  # bytes per receive
THREAD_WRITE_MIN = 64 << 10  # writes at least this big go to a worker thread


FDS_PER_CONNECTION = 2  # its socket and its active segment
FD_HEADROOM_MIN = 256  # descriptors kept for the API, segment files and peers
MAX_BUFFERED = 64 << 20  # partial lines and frames held across all ingest connections


@dataclass
class ListenerStats:
    connections: int = 0
    connections_total: int = 0
    connections_refused: int = 0
    records_split: int = 0
    write_errors: int = 0
    bad_topic_lines: int = 0
    idle_closed: int = 0


def raise_nofile() -> int:
    """Raise the soft limit on open files to the hard limit; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit from %d: %s", soft, e)
    return soft


def ingest_connection_budget(nofile: int) -> int:
    """TCP ingest connections a process with ``nofile`` descriptors takes, so
    that a quarter (at least FD_HEADROOM_MIN) stays free for the API (``/health``
    must answer while producers flood the ingest ports)."""
    headroom = max(FD_HEADROOM_MIN, nofile // 4)
    return max(1, (nofile - headroom) // FDS_PER_CONNECTION)


def api_connection_budget(nofile: int) -> int:
    """API connections within the headroom ``ingest_connection_budget`` leaves,
    less what segment files, peers and outgoing calls need."""
    headroom = max(FD_HEADROOM_MIN, nofile // 4)
    return max(16, headroom - 96)


class ConnectionGate:
    """Admission for every TCP ingest connection (fast, durable, bulk, syslog):
    at most ``max_connections`` (0: no flag limit) and at most ``fd_budget``
    open at once. A connection counts from accept to close; idle ones are
    closed by the listeners' idle timeout, so they cannot hold a slot for good."""

    def __init__(self, max_connections: int = 0, fd_budget: int = 0, max_buffered: int = MAX_BUFFERED) -> None:
        self.max_connections = max_connections
        self.fd_budget = fd_budget
        self.max_buffered = max_buffered
        self.open = 0
        self.refused = 0
        self.refused_fds = 0
        self.buffered = 0  # bytes of incomplete lines/frames held by open connections
        self.shed = 0  # connections closed because their partial data went over max_buffered

    def hold(self, was: int, now: int) -> bool:
        """A connection's partial data went from ``was`` to ``now`` bytes; False
        when that takes the total over the budget (the connection is then closed,
        its partial data kept as a record as on any close)."""
        self.buffered += now - was
        if self.max_buffered and now > was and self.buffered > self.max_buffered:
            self.shed += 1
            return False
        return True

    def admit(self) -> bool:
        if self.max_connections and self.open >= self.max_connections:
            self.refused += 1
            return False
        if self.fd_budget and self.open >= self.fd_budget:
            self.refused += 1
            self.refused_fds += 1
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def as_dict(self, nofile: int | None = None) -> Gate:
        """Its figures; ``nofile``, the process's descriptor limit, is read when not given."""
        return Gate(
            open=self.open,
            max_connections=self.max_connections,
            fd_budget=self.fd_budget,
            refused=self.refused,
            refused_fds=self.refused_fds,
            buffered_bytes=self.buffered,
            shed=self.shed,
            nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0] if nofile is None else nofile,
        )


def refuse(stream: trio.SocketStream) -> None:
    """Load shedding: close at once with RST so a forwarder tries another member."""
    try:
        stream.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    stream.socket.close()


@dataclass(frozen=True)
class IngestSettings:
    flush_size: int
    flush_age: float
    max_record_size: int
    topic: bytes = DEFAULT_TOPIC
    max_connections: int = 0  # 0: unlimited
    idle_timeout: float = 0.0  # close a connection silent this long (0: never)


def split_long(lines: list[bytes], limit: int) -> tuple[list[bytes], int]:
    """Split lines longer than ``limit`` into limit-sized records; count splits."""
    out: list[bytes] = []
    splits = 0
    for ln in lines:
        if len(ln) <= limit:
            out.append(ln)
        else:
            pieces = [ln[i : i + limit] for i in range(0, len(ln), limit)]
            splits += len(pieces) - 1
            out.extend(pieces)
    return out, splits


class Connection:
    """One producer connection's state: its ULID source, segment and partial line."""

    def __init__(self, log_: IngestLog, settings: IngestSettings, stats: ListenerStats, durable: bool):
        self.log = log_
        self.settings = settings
        self.stats = stats
        self.durable = durable
        self.ulids = ULIDSource()
        self.segment: ActiveSegment | None = None
        self.deadline = math.inf
        self.partial = b""
        self.topic = settings.topic
        self.opening = True  # a topic line may still come
        self.idle_closed = False

    def _topic_line(self, buf: bytes, final: bool) -> bytes | None:
        """Take a topic line off the start of the connection: the bytes after
        it, or None while they cannot tell yet. RecordError for a bad one."""
        head = buf[: len(TOPIC_PREAMBLE)]
        if not TOPIC_PREAMBLE.startswith(head):
            self.opening = False
            return buf
        if len(buf) < len(TOPIC_PREAMBLE):
            if final:
                self.opening = False
                return buf
            return None
        end = buf.find(b"\n", 0, len(TOPIC_PREAMBLE) + MAX_TOPIC_LEN + 1)
        if end < 0:
            if final or len(buf) > len(TOPIC_PREAMBLE) + MAX_TOPIC_LEN:
                raise RecordError("topic line without an end")
            return None
        self.topic = validate_topic(buf[len(TOPIC_PREAMBLE) : end])
        self.opening = False
        return buf[end + 1 :]

    def take(self, data: bytes, final: bool = False) -> tuple[bytes, int]:
        """Turn received bytes into stamped records; keep the partial line."""
        limit = self.settings.max_record_size
        buf = self.partial + data if self.partial else data
        if self.opening:
            self.partial = b""
            rest = self._topic_line(buf, final)
            if rest is None:
                self.partial = buf
                return b"", 0
            buf = rest
        cut = buf.rfind(b"\n")
        if final:
            if not buf:
                return b"", 0
            body, self.partial = (buf[:-1] if buf.endswith(b"\n") else buf), b""
        elif cut < 0:
            if len(buf) <= limit:
                self.partial = buf
                return b"", 0
            # A line still growing past the limit: cut whole limit-sized records now.
            keep = len(buf) % limit
            body, self.partial = buf[: len(buf) - keep], buf[len(buf) - keep :]
            pieces = len(body) // limit
            self.stats.records_split += pieces
            lines = [body[i : i + limit] for i in range(0, len(body), limit)]
            headers = self.ulids.headers(len(lines), self.topic)
            return stamp_lines(lines, headers), len(lines)
        else:
            body, self.partial = buf[:cut], buf[cut + 1 :]
        lines = body.split(b"\n")
        if len(body) > limit and max(map(len, lines)) > limit:
            lines, splits = split_long(lines, limit)
            self.stats.records_split += splits
            log.info("split %d over-long records (limit %d bytes)", splits, limit)
        headers = self.ulids.headers(len(lines), self.topic)
        return stamp_lines(lines, headers), len(lines)

    async def write(self, records: bytes, n: int) -> None:
        if not n:
            return
        if self.segment is None:
            self.segment = self.log.new_segment()
            self.deadline = trio.current_time() + self.settings.flush_age
        seg = self.segment
        if len(records) >= THREAD_WRITE_MIN:
            await trio.to_thread.run_sync(seg.write, records, n)
        else:
            seg.write(records, n)
        if self.durable:
            await trio.to_thread.run_sync(seg.sync)
        if seg.size >= self.settings.flush_size:
            await self.flush()

    async def receive(self, stream: trio.abc.ReceiveStream) -> bytes:
        """The producer's next bytes (b"" at EOF, or once it has sent nothing
        for the idle timeout); the active segment is flushed meanwhile
        whenever it reaches its flush age."""
        idle = self.settings.idle_timeout
        idle_at = trio.current_time() + idle if idle > 0 else math.inf
        while True:
            with trio.move_on_at(min(self.deadline, idle_at)) as timer:
                data = await stream.receive_some(READ_SIZE)
            if not timer.cancelled_caught:
                return bytes(data)
            if trio.current_time() >= idle_at:
                self.idle_closed = True
                return b""
            await self.flush()

    async def flush(self) -> None:
        seg, self.segment = self.segment, None
        self.deadline = math.inf
        if seg is not None:
            await trio.to_thread.run_sync(seg.flush, not self.durable)


class HeldBytes:
    """One connection's buffered partial data, counted against the gate's
    node-wide bound (``ConnectionGate.hold``); no gate, no bound."""

    def __init__(self, gate: ConnectionGate | None) -> None:
        self.gate = gate
        self.held = 0

    def hold(self, now: int) -> bool:
        """The connection now holds ``now`` bytes; False when that is over the bound."""
        if self.gate is None:
            return True
        ok = self.gate.hold(self.held, now)
        self.held = now
        return ok


async def handle_connection(
    stream: trio.abc.Stream,
    log_: IngestLog,
    settings: IngestSettings,
    stats: ListenerStats,
    durable: bool = False,
    gate: ConnectionGate | None = None,
) -> None:
    conn = Connection(log_, settings, stats, durable)
    stats.connections += 1
    stats.connections_total += 1
    held = HeldBytes(gate)
    try:
        while data := await conn.receive(stream):
            await _take_and_write(conn, stream, data)
            if not held.hold(len(conn.partial)):
                log.warning(
                    "ingest connection closed: partial lines over %d bytes held node-wide",
                    gate.max_buffered if gate is not None else 0,
                )
                break
        await _take_and_write(conn, stream, b"", final=True)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        # The producer went away; a partial line is kept as it is on disk below.
        pass
    except RecordError as e:  # a bad topic line: nothing of this connection was taken
        stats.bad_topic_lines += 1
        log.warning("ingest connection closed: %s", e)
        conn.partial = b""
    except OSError as e:
        # The disk failed (full, EIO, file too large): end this connection, not
        # the node. Nothing unwritten was acknowledged; the producer reconnects.
        stats.write_errors += 1
        log.error("ingest write failed, closing the connection: %s", e)
    finally:
        held.hold(0)
        stats.connections -= 1
        stats.idle_closed += conn.idle_closed
        await _write_rest(conn)
        await aclose_quietly(stream)


async def _take_and_write(conn: Connection, stream: trio.abc.Stream, data: bytes, final: bool = False) -> None:
    """Stamp and write what ``data`` completes; a durable connection is told how many."""
    records, n = conn.take(data, final=final)
    await conn.write(records, n)
    if conn.durable and n:
        await stream.send_all(b"+%d\n" % n)


async def _write_rest(conn: Connection) -> None:
    """A closed connection's partial line as its last record, its segment flushed."""
    with trio.CancelScope(shield=True):
        try:
            if conn.partial:
                try:
                    records, n = conn.take(b"", final=True)
                except RecordError:  # it ended inside its topic line: no record
                    records, n = b"", 0
                await conn.write(records, n)
            await conn.flush()
        except OSError:
            log.exception("flushing a closed connection's segment failed")


async def serve_gated(
    stream: trio.SocketStream,
    gate: ConnectionGate,
    access: Access | None,
    handle: Callable[[trio.abc.Stream], Awaitable[None]],
) -> bool:
    """One accepted TCP connection: admitted by ``gate`` (else refused with an
    RST, and False), through ``access`` (TLS and/or the token line,
    ``oklog.net.auth.ingest_gate``; None: it was refused there), then ``handle``;
    the gate's slot is given back however that ends."""
    if not gate.admit():
        refuse(stream)
        return False
    try:
        admitted = stream if access is None else await access(stream)
        if admitted is not None:
            await handle(admitted)
    finally:
        gate.release()
    return True


async def aclose_quietly(stream: trio.abc.Stream) -> None:
    try:
        await stream.aclose()
    except (trio.BrokenResourceError, OSError):
        pass


async def serve_ingest(
    host: str,
    port: int,
    log_: IngestLog,
    settings: IngestSettings,
    stats: ListenerStats,
    *,
    durable: bool = False,
    gate: ConnectionGate | None = None,
    access: Access | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    listeners = await trio.open_tcp_listeners(port, host=host if host not in ("", "0.0.0.0") else None)
    bound = listeners[0].socket.getsockname()
    task_status.started((host, bound[1]))
    g = gate if gate is not None else ConnectionGate(settings.max_connections)

    async def handle(stream: trio.abc.Stream) -> None:
        await handle_connection(stream, log_, settings, stats, durable, g)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            if not await serve_gated(stream, g, access, handle):
                stats.connections_refused += 1
        except Exception:  # a bug in one connection must not end the listener (and the node)
            log.exception("ingest connection failed")

    await trio.serve_listeners(handler, listeners)
