"""Syslog ingest: RFC 5424 and RFC 3164 messages over TCP and UDP, and over TLS.

``serve_syslog`` listens on one address with both protocols (TCP is bound first;
with port 0 UDP then takes the same port number); ``serve_syslog_tls`` listens
on TCP with TLS (RFC 5425) and a client check. Each message becomes one
record, topic ``syslog`` unless told otherwise, line = the message exactly as
received without its framing. Messages are not parsed: RFC 5424, RFC 3164 and
anything else a device sends are all kept as they are.

Framing (RFC 6587), decided per message on TCP:

* octet counting, ``MSG-LEN SP MSG`` — a run of digits followed by a space at
  the start of a frame is a length (``123 <34>1 2024-...``). A single trailing
  LF inside the counted bytes is dropped (some senders count it).
* otherwise non-transparent framing: the message runs up to the next LF
  (a CR before it is kept, like every other byte). Empty messages are skipped.
* UDP: one message per datagram; one trailing LF is dropped.

An LF that remains inside a message (possible only with octet counting or UDP)
cannot be inside a record, so it is written as the two characters ``\\n``, as
the HTTP ingest does.

Malformed input is counted (``SyslogStats``) and never stops the listener:

* a length of zero, of more than 10 digits or beyond ``MAX_SKIP_RECORDS``
  times the max record size (``9999999999``): ``malformed``; the bytes after it
  are discarded up to the next frame start, an LF or an octet-count header
  (``DIGITS SP <PRI>``), where framing resumes: an absurd length cannot
  swallow the messages after it;
* a message longer than the max record size: ``oversized``, discarded (an
  octet-counted one of a plausible length is skipped by its length, so framing
  stays in step);
* a connection holds at most one max-size message and one read in memory;
  idle connections are closed (``-ingest.idle-timeout``) and connections are
  limited with the fast port's (``-ingest.max-connections``).
* a connection that ends inside an octet-counted frame: ``malformed``; the
  bytes that did arrive are kept as a record (as the TCP listeners keep a
  partial last line).

Event time (``oklog.ingest.eventtime``): a message's TIMESTAMP — RFC 5424
(``<PRI>1 2026-11-30T16:40:25.123456+01:00``; also without the ``1 `` version,
as rsyslog reads it) or RFC 3164 (``<PRI>Nov 30 16:40:25``: no year, no zone,
taken as the node's local time in the year that puts it nearest to now) — is
the record's time when it lies inside the event-time window; a nil (``-``),
missing, malformed or out-of-window timestamp gives arrival time. The line is
the message as received either way, so the event time stays in it.

Writing is the fast port's: each TCP connection appends to its own active
segment (``oklog.ingest.listener.Connection``) flushed by size or age; all UDP
datagrams share one segment flushed by age or size. Nothing is synced before
a segment flushes — syslog senders don't wait for acknowledgements anyway.
The messages of one read (TCP) or wake-up (UDP) are stamped and sorted by
ULID as one batch; a batch that would sort before what its segment already
holds flushes that segment first and starts a new one (``segments_cut``), so
every segment stays in ULID order.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import re
import socket
from dataclasses import dataclass
from datetime import datetime

import trio

import oklog._fast as _fast
from oklog.ingest.eventtime import EventWindow, Stamper
from oklog.ingest.listener import (
    Access,
    Connection,
    ConnectionGate,
    HeldBytes,
    IngestSettings,
    ListenerStats,
    aclose_quietly,
    serve_gated,
)
from oklog.ingest.log import IngestLog
from oklog.node.state import SyslogStats as SyslogStatsDict
from oklog.records.record import ULID_LEN, validate_topic

log = logging.getLogger("oklog.ingest.syslog")

SYSLOG_TOPIC = b"syslog"
READ_SIZE = 1 << 20
MAX_LEN_DIGITS = 10
UDP_MAX_DATAGRAM = 65536
UDP_BATCH = 1024  # datagrams taken per wake-up before writing
UDP_RCVBUF = 4 << 20
BIND_ATTEMPTS = 20  # port 0: tries to find a number free for both TCP and UDP

MAX_SKIP_RECORDS = 4  # counted lengths above this many max records are not believed
RESYNC_TAIL = 16  # bytes kept while resynchronising: a frame header may be cut by a read

_DIGITS = frozenset(b"0123456789")
_FRAME_START = re.compile(rb"\n|(?<![0-9])[1-9][0-9]{0,9} <[0-9]{1,3}>")


@dataclass
class SyslogStats:
    connections: int = 0
    connections_total: int = 0
    messages_tcp: int = 0
    messages_udp: int = 0
    malformed: int = 0
    oversized: int = 0
    idle_closed: int = 0
    event_time: int = 0  # records stamped with their message's TIMESTAMP
    event_time_outside: int = 0  # TIMESTAMPs outside the window: arrival time
    segments_cut: int = 0  # segments flushed early to keep ULID order

    def as_dict(self) -> SyslogStatsDict:
        return SyslogStatsDict(
            connections=self.connections,
            connections_total=self.connections_total,
            messages_tcp=self.messages_tcp,
            messages_udp=self.messages_udp,
            malformed=self.malformed,
            oversized=self.oversized,
            idle_closed=self.idle_closed,
            event_time=self.event_time,
            event_time_outside=self.event_time_outside,
            segments_cut=self.segments_cut,
        )


def clean_message(msg: bytes) -> bytes:
    """Drop one trailing LF; escape any other LF as the two bytes ``\\n``."""
    if msg.endswith(b"\n"):
        msg = msg[:-1]
    return msg.replace(b"\n", b"\\n") if b"\n" in msg else msg


class SyslogFramer:
    """RFC 6587 framing of one TCP stream, octet counting or LF, per message. Pure."""

    def __init__(self, max_size: int, stats: SyslogStats | None = None) -> None:
        self.max_size = max_size
        self.stats = stats if stats is not None else SyslogStats()
        self._buf = b""
        self._skip = 0  # bytes of an oversized counted frame still to drop
        self._to_lf = False  # dropping up to and including the next LF
        self._resync = False  # dropping up to the next frame start

    def feed(self, data: bytes) -> list[bytes]:
        """Messages completed by ``data`` (framing removed)."""
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos, end = 0, len(buf)
        go_on = True
        while go_on and pos < end:
            pos, go_on = self._step(buf, pos, out)
        self._buf = buf[pos:]
        return out

    def _step(self, buf: bytes, pos: int, out: list[bytes]) -> tuple[int, bool]:
        """One framing step from ``pos`` (messages appended to ``out``):
        (the next position, False when the rest must wait for more data)."""
        if self._skip:
            n = min(self._skip, len(buf) - pos)
            self._skip -= n
            return pos + n, True
        if self._resync:
            return self._step_resync(buf, pos)
        if self._to_lf:
            i = buf.find(b"\n", pos)
            if i < 0:
                return len(buf), False
            self._to_lf = False
            return i + 1, True
        if buf[pos] in _DIGITS:
            step = self._step_counted(buf, pos, out)
            if step is not None:
                return step
        return self._step_lf(buf, pos, out)

    def _step_resync(self, buf: bytes, pos: int) -> tuple[int, bool]:
        m = _FRAME_START.search(buf, pos)
        if m is None:
            return max(pos, len(buf) - RESYNC_TAIL), False
        self._resync = False
        return (m.end() if m.group() == b"\n" else m.start()), True

    def _step_counted(self, buf: bytes, pos: int, out: list[bytes]) -> tuple[int, bool] | None:
        """Octet counting at a digit; None when the digits are not a length
        (no space after them): the message is LF-framed."""
        end = len(buf)
        j = pos
        while j < end and buf[j] in _DIGITS and j - pos <= MAX_LEN_DIGITS:
            j += 1
        if j - pos > MAX_LEN_DIGITS:
            self._bad(f"length of more than {MAX_LEN_DIGITS} digits")
            self._resync = True
            return j, True
        if j == end:
            return pos, False  # can't tell yet: wait for more
        if buf[j] != 0x20:
            return None
        length = int(buf[pos:j])
        if length == 0 or length > MAX_SKIP_RECORDS * self.max_size:
            self._bad("zero length" if length == 0 else f"length {length} is not believable")
            self._resync = True
            return j + 1, True
        if length > self.max_size:
            self.stats.oversized += 1
            log.info("syslog: dropped a %d-byte message (limit %d)", length, self.max_size)
            self._skip = length
            return j + 1, True
        if end - (j + 1) < length:
            return pos, False  # the frame is not complete yet
        out.append(clean_message(buf[j + 1 : j + 1 + length]))
        return j + 1 + length, True

    def _step_lf(self, buf: bytes, pos: int, out: list[bytes]) -> tuple[int, bool]:
        """Non-transparent framing: up to the next LF."""
        end = len(buf)
        i = buf.find(b"\n", pos)
        if i < 0:
            if end - pos > self.max_size:
                self._oversized()
                self._to_lf = True
                return end, False
            return pos, False
        if i - pos > self.max_size:
            self._oversized()
        elif i > pos:
            out.append(buf[pos:i])
        return i + 1, True

    def _oversized(self) -> None:
        self.stats.oversized += 1
        log.info("syslog: dropped a message longer than %d bytes", self.max_size)

    @property
    def buffered(self) -> int:
        """Bytes held for a message not complete yet."""
        return len(self._buf)

    def finish(self) -> list[bytes]:
        """At end of stream: what is left, as a last message (idempotent)."""
        rest, self._buf = self._buf, b""
        if not rest or self._skip or self._to_lf or self._resync:
            return []
        j = 0
        while j < len(rest) and rest[j] in _DIGITS:
            j += 1
        if 0 < j < len(rest) and rest[j] == 0x20:
            self._bad("stream ended inside a counted frame")
            rest = rest[j + 1 :]
        return [clean_message(rest)] if rest else []

    def _bad(self, why: str) -> None:
        self.stats.malformed += 1
        log.info("syslog: malformed frame (%s)", why)


def datagram_message(data: bytes, max_size: int, stats: SyslogStats) -> bytes | None:
    msg = clean_message(data)
    if not msg:
        return None
    if len(msg) > max_size:
        stats.oversized += 1
        log.info("syslog: dropped a %d-byte datagram (limit %d)", len(msg), max_size)
        return None
    return msg


# -- event time -------------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate(
    (b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"), 1
)}


def _rfc3164_seconds(ts: bytes, now: float) -> int | None:
    """Epoch seconds of ``Mmm dd hh:mm:ss``: local time, in whichever of last,
    this or next year puts it nearest to ``now``; None if not a real time."""
    month = _MONTHS.get(ts[:3].lower())
    if month is None:
        return None
    day_s, hms = ts[3:].split()
    day, hh, mm, ss = int(day_s), int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
    year = datetime.fromtimestamp(now).year
    best: float | None = None
    for y in (year - 1, year, year + 1):
        try:
            t = datetime(y, month, day, hh, mm, ss).timestamp()  # naive: the node's local zone
        except (ValueError, OverflowError, OSError):  # Feb 29 off leap years, 24:00:00, ...
            continue
        if best is None or abs(t - now) < abs(best - now):
            best = t
    return None if best is None else int(best)


def event_times(msgs: list[bytes], now: float) -> list[int | None]:
    """Each message's TIMESTAMP in ns since the epoch; None where it has none
    (``-``, no PRI, not a time a calendar has). Never raises. RFC 5424 times
    are read by the C helper for the whole batch; RFC 3164 ones (second
    resolution: a burst shares them) are worked out once per batch."""
    found = _fast.syslog_times(msgs)
    texts = {t for t in found if isinstance(t, bytes)}
    ns = {t: None if (sec := _rfc3164_seconds(t, now)) is None else sec * 1_000_000_000 for t in texts}
    return [ns[t] if isinstance(t, bytes) else t for t in found]


# -- I/O --------------------------------------------------------------------------------


class SyslogWriter:
    """One connection's (or the UDP socket's) batches into its active segment,
    each stamped at event time where it can be and sorted; the segment stays in
    ULID order (see the module docstring)."""

    def __init__(self, conn: Connection, window: EventWindow, stats: SyslogStats) -> None:
        self.conn = conn
        self.window = window
        self.stats = stats
        self.last = b""  # the greatest ULID in the active segment

    async def write(self, msgs: list[bytes]) -> None:
        if not msgs:
            return
        conn = self.conn
        st = Stamper(self.window)
        times = event_times(msgs, st.now / 1000)
        records, _ = st.stamp_group(
            conn.settings.topic, msgs, times, True, conn.settings.max_record_size
        )
        self.stats.event_time += st.event_stamped
        self.stats.event_time_outside += st.outside
        if st.event_stamped:
            records.sort()  # ULIDs are unique, so byte order is ULID order
        if conn.segment is not None and records[0][:ULID_LEN] < self.last:
            self.stats.segments_cut += 1
            await conn.flush()
        records.append(b"")
        await conn.write(b"\n".join(records), len(records) - 1)
        self.last = records[-2][:ULID_LEN]


async def handle_syslog_tcp(
    stream: trio.abc.Stream,
    ilog: IngestLog,
    settings: IngestSettings,
    stats: SyslogStats,
    gate: ConnectionGate | None = None,
    window: EventWindow | None = None,
) -> None:
    conn = Connection(ilog, settings, ListenerStats(), durable=False)
    out = SyslogWriter(conn, window or EventWindow(), stats)
    framer = SyslogFramer(settings.max_record_size, stats)
    stats.connections += 1
    stats.connections_total += 1
    held = HeldBytes(gate)
    try:
        while data := await conn.receive(stream):
            msgs = framer.feed(data)
            stats.messages_tcp += len(msgs)
            await out.write(msgs)
            if not held.hold(framer.buffered):
                log.warning(
                    "syslog connection closed: partial frames over %d bytes held node-wide",
                    gate.max_buffered if gate is not None else 0,
                )
                break
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        pass
    except OSError as e:  # the disk failed: end this connection, not the node
        log.error("syslog write failed, closing the connection: %s", e)
    finally:
        held.hold(0)
        stats.connections -= 1
        stats.idle_closed += conn.idle_closed
        with trio.CancelScope(shield=True):
            try:
                msgs = framer.finish()
                stats.messages_tcp += len(msgs)
                await out.write(msgs)
                await conn.flush()
            except OSError:
                log.exception("flushing a syslog connection's segment failed")
            await aclose_quietly(stream)


async def serve_syslog_udp(
    sock: socket.socket,
    ilog: IngestLog,
    settings: IngestSettings,
    stats: SyslogStats,
    window: EventWindow | None = None,
) -> None:
    """Read datagrams from a bound non-blocking socket into one shared segment."""
    conn = Connection(ilog, settings, ListenerStats(), durable=False)
    out = SyslogWriter(conn, window or EventWindow(), stats)
    limit = settings.max_record_size
    try:
        while True:
            with trio.move_on_at(conn.deadline) as timer:
                await trio.lowlevel.wait_readable(sock)
            if timer.cancelled_caught:
                await conn.flush()
                continue
            msgs: list[bytes] = []
            for _ in range(UDP_BATCH):
                try:
                    data = sock.recv(UDP_MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError as e:  # e.g. ICMP errors surfacing; keep serving
                    log.debug("syslog udp recv: %s", e)
                    break
                msg = datagram_message(data, limit, stats)
                if msg is not None:
                    msgs.append(msg)
            stats.messages_udp += len(msgs)
            await out.write(msgs)
    finally:
        with trio.CancelScope(shield=True):
            try:
                await conn.flush()
            except OSError:
                log.exception("flushing the syslog UDP segment failed")


def _udp_socket(host: str, port: int) -> socket.socket:
    family, type_, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, type_, proto)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        except OSError:
            pass
        sock.bind(addr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def _bind(host: str, port: int) -> tuple[list[trio.SocketListener], socket.socket, int]:
    for attempt in range(BIND_ATTEMPTS):
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        try:
            return listeners, _udp_socket(host, bound), bound
        except OSError as e:
            for ln in listeners:
                await ln.aclose()
            if port != 0 or e.errno != errno.EADDRINUSE or attempt == BIND_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


class SyslogTCPHandler:
    """A syslog TCP port's accepted connections: the gate, ``access`` (TLS and
    the client check; None: plain TCP), then ``handle_syslog_tcp``."""

    def __init__(
        self,
        ilog: IngestLog,
        settings: IngestSettings,
        stats: SyslogStats,
        gate: ConnectionGate,
        access: Access | None,
        window: EventWindow | None,
        what: str,
    ) -> None:
        self.ilog = ilog
        self.settings = settings
        self.stats = stats
        self.gate = gate
        self.access = access
        self.window = window
        self.what = what

    async def __call__(self, stream: trio.SocketStream) -> None:
        try:
            await serve_gated(stream, self.gate, self.access, self.handle)
        except Exception:  # one connection's failure must not end the listener
            log.exception("%s connection failed", self.what)

    async def handle(self, stream: trio.abc.Stream) -> None:
        await handle_syslog_tcp(stream, self.ilog, self.settings, self.stats, self.gate, self.window)


async def serve_syslog_tls(
    host: str,
    port: int,
    ilog: IngestLog,
    settings: IngestSettings,
    stats: SyslogStats,
    access: Access,
    *,
    topic: bytes | str = SYSLOG_TOPIC,
    gate: ConnectionGate | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve syslog over TLS (RFC 5425) on TCP ``host:port``; reports (host, port) when bound.

    ``access`` (``oklog.net.auth.ingest_gate``) does the handshake and checks the
    client: a certificate verified against ``-tls.client-ca``, or else the token
    line when tokens are on. Framing after it is the TCP listener's (RFC 5425
    prescribes octet counting; LF framing is taken too, as on plain TCP)."""
    settings = dataclasses.replace(settings, topic=validate_topic(topic))
    listeners = await trio.open_tcp_listeners(port, host=host if host not in ("", "0.0.0.0") else None)
    bound = listeners[0].socket.getsockname()[1]
    tcp_gate = gate if gate is not None else ConnectionGate(settings.max_connections)
    handler = SyslogTCPHandler(ilog, settings, stats, tcp_gate, access, None, "syslog TLS")
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started((host, bound))


async def serve_syslog(
    host: str,
    port: int,
    ilog: IngestLog,
    settings: IngestSettings,
    stats: SyslogStats,
    *,
    topic: bytes | str = SYSLOG_TOPIC,
    gate: ConnectionGate | None = None,
    window: EventWindow | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve syslog on TCP and UDP ``host:port``; reports (host, port) when bound."""
    settings = dataclasses.replace(settings, topic=validate_topic(topic))
    listeners, udp, bound = await _bind(host or "0.0.0.0", port)
    tcp_gate = gate if gate is not None else ConnectionGate(settings.max_connections)
    handler = SyslogTCPHandler(ilog, settings, stats, tcp_gate, None, window, "syslog")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_syslog_udp, udp, ilog, settings, stats, window)
            await nursery.start(trio.serve_listeners, handler, listeners)
            task_status.started((host, bound))
    finally:
        udp.close()
