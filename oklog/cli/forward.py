"""``oklog forward``: stdin to ingest nodes.

A reader thread takes stdin a buffer at a time (whole lines only) into a bounded
queue (``-buffer`` bytes; when full, ``-policy block`` stops reading stdin and
``drop`` drops whole chunks, counted and reported); the sender drains it to one
node at a time, chosen at random among the addresses given (a name resolving to
several hosts counts as several), failing over with exponential backoff.

Modes:

* ``fast``    (port 7651) bytes pass through verbatim; the chunk being written when
              a connection broke is sent again on the next one (it may arrive twice,
              with different ULIDs).
* ``durable`` (port 7652) the node fsyncs each batch and answers ``+N``; only what
              was not acknowledged is sent again after a failure.
* ``bulk``    (port 7653) the forwarder stamps ULIDs itself and sends whole
              segments; each is acknowledged once replicated in the store tier. A
              retried segment carries the same ULIDs, so queries drop the copies:
              no line is lost or duplicated in results.

A node that stops reading (SIGSTOP, a hung process) is left after
``-write-timeout``: a write that makes no progress for that long, or (durable)
no acknowledgement for that long while records wait for one, counts as a lost
connection, and the address is tried last for a while. Bulk waits for a reply
at least BULK_REPLY_TIMEOUT (the node acknowledges after replication).

Once the input has ended, a forwarder that delivers nothing for ``-give-up``
(no node reachable, or none accepting) stops, prints how many bytes were not
delivered and exits 1.

``-topic`` names the records' topic: bulk frames carry it in every record; a
fast or durable connection opens with a topic line (see oklog.ingest.listener).
"""

from __future__ import annotations

import collections
import os
import random
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from oklog.addr import parse_addr
from oklog.human import describe_error, format_duration, format_size
from oklog.records.record import (
    DEFAULT_TOPIC,
    TOPIC_PREAMBLE,
    RecordError,
    ULIDSource,
    stamp_lines,
    validate_topic,
)
from oklog.units import DEFAULT_BULK_PORT, DEFAULT_DURABLE_PORT, DEFAULT_FAST_PORT

READ_SIZE = 1 << 20
PORTS = {"fast": DEFAULT_FAST_PORT, "durable": DEFAULT_DURABLE_PORT, "bulk": DEFAULT_BULK_PORT}
DURABLE_WINDOW = 8 << 20  # unacknowledged bytes in flight
BULK_SIZE = 2 << 20
BULK_AGE = 1.0
BULK_WINDOW = 16 << 20  # bytes of bulk frames sent ahead of their replies
REFUSED_PROBE = 0.05  # seconds to watch a new connection for an immediate close
WRITE_TIMEOUT = 10.0  # default -write-timeout: no write (or durable ack) progress → fail over
GIVE_UP = 60.0  # default -give-up: input ended and nothing delivered for this long → exit 1
BULK_REPLY_TIMEOUT = 30.0  # bulk: the node answers within its own 20 s ack timeout
AVOID = 30.0  # seconds an address that failed is tried after the others


def log(msg: str) -> None:
    print(f"oklog forward: {msg}", file=sys.stderr, flush=True)


def resolve(addrs: list[str], default_port: int = DEFAULT_FAST_PORT, said: dict[str, str] | None = None) -> list[tuple[str, int]]:
    """Every address a name resolves to; a name that does not resolve is
    logged (once per cause when ``said`` remembers what was logged)."""
    out: list[tuple[str, int]] = []
    said = {} if said is None else said
    for a in addrs:
        host, port = parse_addr(a, default_port, default_host="localhost")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            what = f"cannot resolve {host} ({e.strerror if isinstance(e, socket.gaierror) else 'not a host name'})"
            if said.get(a) != what:
                said[a] = what
                log(what + " (retrying)")
            continue
        said.pop(a, None)
        for info in infos:
            target = (str(info[4][0]), int(info[4][1]))
            if target not in out:
                out.append(target)
    return out


def add_prefix(chunk: bytes, prefix: bytes) -> bytes:
    """Prefix every line of a chunk of whole lines (ending in LF)."""
    if not prefix or not chunk:
        return chunk
    return prefix + chunk[:-1].replace(b"\n", b"\n" + prefix) + b"\n"


class GiveUp(Exception):
    """Input ended and nothing was delivered for the give-up time; ``pending``
    are the bytes the sender still held (the queue's are added by the caller)."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"no node accepted data for {format_duration(waited)} after the input ended")
        self.pending = 0
        self.pending_lines = 0

    def add(self, data: bytes) -> None:
        self.pending += len(data)
        self.pending_lines += data.count(b"\n")


def send_all(sock: socket.socket, data: bytes, timeout: float) -> None:
    """``sendall`` that fails when the node accepts no byte for ``timeout``
    seconds (a stopped or hung node's buffers fill and stay full)."""
    if isinstance(sock, ssl.SSLSocket):  # send flags are refused on TLS; its sendall times each send
        sock.settimeout(timeout)
        try:
            sock.sendall(data)
        except TimeoutError:
            raise TimeoutError(f"the node accepted no data for {format_duration(timeout)}") from None
        finally:
            sock.settimeout(None)
        return
    view = memoryview(data)
    while view:
        _, w, _ = select.select([], [sock], [], timeout)
        if not w:
            raise TimeoutError(f"the node accepted no data for {format_duration(timeout)}")
        try:
            n = sock.send(view, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            continue
        view = view[n:]


class Connector:
    """Connects to a random live address, with backoff and load-shedding
    detection; addresses that failed lately are tried after the others."""

    def __init__(
        self, addrs: list[str], mode: str, max_backoff: float, topic: bytes = b"",
        write_timeout: float = WRITE_TIMEOUT, give_up: float = GIVE_UP, token: str = "", tls: ssl.SSLContext | None = None,
    ) -> None:
        self.addrs = addrs
        self.tls = tls  # an ssl.SSLContext (-tls.ca)
        self.mode = mode
        self.max_backoff = max_backoff
        self.write_timeout = write_timeout
        self.give_up = give_up
        self.input_ended: float | None = None  # set by the reader at end of input
        self.last_progress = time.monotonic()
        self.current: tuple[str, int] | None = None
        self._failed_at: dict[tuple[str, int], float] = {}
        self._said: dict[tuple[str, int], str] = {}  # last failure logged per address
        self._unresolved: dict[str, str] = {}  # last resolution failure logged per name
        # fast and durable connections name their topic first (bulk records carry it)
        self.preamble = TOPIC_PREAMBLE + topic + b"\n" if topic and mode != "bulk" else b""
        if token:  # the token line comes first (oklog.net.auth)
            self.preamble = b"\x01oklog-token " + token.encode() + b"\n" + self.preamble

    def progress(self) -> None:
        """A node accepted data (fast), acknowledged records (durable, bulk)."""
        self.last_progress = time.monotonic()

    def failed(self) -> None:
        """The current connection broke or hung: try its address last for a while."""
        if self.current is not None:
            self._failed_at[self.current] = time.monotonic()

    def check_give_up(self) -> None:
        if self.input_ended is None:
            return
        waited = time.monotonic() - max(self.last_progress, self.input_ended)
        if waited > self.give_up:
            raise GiveUp(self.give_up)

    def _order(self, targets: list[tuple[str, int]]) -> list[tuple[str, int]]:
        random.shuffle(targets)
        now = time.monotonic()
        return sorted(targets, key=lambda t: now - self._failed_at.get(t, -AVOID) < AVOID)

    def _say(self, target: tuple[str, int], what: str) -> None:
        """Log a failure to reach an address once, not at every retry."""
        if self._said.get(target) != what:
            self._said[target] = what
            log(f"{target[0]}:{target[1]}: {what} (retrying)")

    def connect(self) -> socket.socket:
        backoff = 0.05
        while True:
            self.check_give_up()
            for host, port in self._order(resolve(self.addrs, PORTS[self.mode], self._unresolved)):
                try:
                    s = socket.create_connection((host, port), timeout=5)
                except OSError as e:
                    self._say((host, port), describe_error(e))
                    continue
                # A node shedding load closes new connections at once.
                r, _, _ = select.select([s], [], [], REFUSED_PROBE)
                if r and self.mode != "durable":
                    try:
                        closed = s.recv(1, socket.MSG_PEEK) == b""
                    except OSError:
                        closed = True
                    if closed:
                        self._say((host, port), "refused the connection (busy); trying another")
                        s.close()
                        continue
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.tls is not None:
                    try:
                        s = self.tls.wrap_socket(s, server_hostname=host)
                    except OSError as e:
                        log(f"{host}:{port}: TLS: {e}")
                        s.close()
                        continue
                if self.preamble:
                    try:
                        send_all(s, self.preamble, self.write_timeout)
                    except OSError as e:
                        self._say((host, port), describe_error(e))
                        s.close()
                        continue
                self.current = (host, port)
                if self._said.pop((host, port), None) is not None:
                    log(f"{host}:{port}: connected")
                return s
            time.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)


@dataclass
class Counters:
    dropped_lines: int = 0
    dropped_chunks: int = 0


class LineQueue:
    """Chunks of whole lines between the stdin reader and the sender, bounded in bytes."""

    def __init__(self, limit: int, policy: str, counters: Counters) -> None:
        self.limit = limit
        self.policy = policy
        self.counters = counters
        self._q: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._cv = threading.Condition()
        self.closed = False

    def put(self, chunk: bytes) -> None:
        with self._cv:
            while self._size + len(chunk) > self.limit and self._q:
                if self.policy == "drop":
                    self.counters.dropped_chunks += 1
                    self.counters.dropped_lines += chunk.count(b"\n")
                    return
                self._cv.wait()
            self._q.append(chunk)
            self._size += len(chunk)
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    def get(self, timeout: float | None = None) -> bytes | None:
        """A chunk; b"" on timeout; None when closed and empty."""
        with self._cv:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._q:
                if self.closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return b""
                self._cv.wait(remaining)
            chunk = self._q.popleft()
            self._size -= len(chunk)
            self._cv.notify_all()
            return chunk


def read_stdin(fd: int, q: LineQueue, prefix: bytes, on_end: Callable[[], None] | None = None) -> None:
    partial = b""
    try:
        while True:
            data = os.read(fd, READ_SIZE)
            if not data:
                break
            buf = partial + data if partial else data
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                partial = buf
                continue
            partial = buf[cut:]
            chunk = add_prefix(buf[:cut], prefix)
            q.put(chunk)
        if partial:
            q.put(add_prefix(partial + b"\n", prefix))
    finally:
        if on_end is not None:
            on_end()
        q.close()


# -- senders --------------------------------------------------------------------------


def send_fast(q: LineQueue, conn: Connector) -> None:
    sock: socket.socket | None = None
    last = b""
    chunk: bytes | None = b""
    try:
        while (chunk := q.get()) is not None:
            sock = _send_chunk(sock, conn, chunk)
            last = chunk
        # End of input: the node closes its side once it has written everything.
        # A reset instead means it dropped the connection (shedding load,
        # crashing): the last chunk goes elsewhere, as after any broken send.
        while sock is not None and last and not _finish(sock, conn.write_timeout):
            log("connection reset at the end; resending the last chunk elsewhere")
            conn.failed()
            chunk = last
            sock = _send_chunk(None, conn, last)
        sock = None
    except GiveUp as g:
        g.add(chunk or b"")
        raise
    finally:
        if sock is not None:
            _finish(sock, conn.write_timeout)


def _send_chunk(sock: socket.socket | None, conn: Connector, chunk: bytes) -> socket.socket:
    while True:
        if sock is None:
            sock = conn.connect()
        try:
            send_all(sock, chunk, conn.write_timeout)
            conn.progress()
            return sock
        except OSError as e:
            log(f"connection to {_peer(conn)} lost ({describe_error(e)}); resending the current chunk elsewhere")
            conn.failed()
            sock.close()
            sock = None


def _readable(sock: socket.socket, timeout: float) -> bool:
    """Bytes to read: TLS may hold decrypted bytes that select cannot see."""
    pending = getattr(sock, "pending", None)
    if pending is not None and pending():
        return True
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)


def _peer(conn: Connector) -> str:
    return f"{conn.current[0]}:{conn.current[1]}" if conn.current else "the node"


def _finish(sock: socket.socket, timeout: float = WRITE_TIMEOUT) -> bool:
    """Half-close and wait for the node to close: False if it reset instead."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(timeout)
        while sock.recv(65536):
            pass
    except TimeoutError:
        pass  # still writing after the timeout: it has the bytes
    except OSError:
        sock.close()
        return False
    sock.close()
    return True


class _Unacked:
    """Records sent on the durable port and not yet acknowledged."""

    def __init__(self) -> None:
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)

    def ack(self, n: int) -> None:
        while n and self.chunks:
            head = self.chunks[0]
            count = head.count(b"\n")
            if count <= n:
                self.chunks.popleft()
                self.size -= len(head)
                n -= count
                continue
            cut = 0
            for _ in range(n):
                cut = head.index(b"\n", cut) + 1
            self.chunks[0] = head[cut:]
            self.size -= cut
            n = 0

    def all(self) -> bytes:
        return b"".join(self.chunks)


def send_durable(q: LineQueue, conn: Connector) -> None:
    unacked = _Unacked()
    try:
        _send_durable(q, conn, unacked)
    except GiveUp as g:
        g.add(unacked.all())
        raise


def _send_durable(q: LineQueue, conn: Connector, unacked: _Unacked) -> None:
    _Durable(q, conn, unacked).run()


class _Durable:
    """The durable port's sender: records go out while fewer than DURABLE_WINDOW
    bytes await their ``+N`` acknowledgement; a lost connection resends them all."""

    def __init__(self, q: LineQueue, conn: Connector, unacked: _Unacked) -> None:
        self.q = q
        self.conn = conn
        self.unacked = unacked
        self.acks = b""  # an acknowledgement line received in part
        self.eof = False
        self.last_ack = time.monotonic()

    def run(self) -> None:
        sock: socket.socket | None = None
        while True:
            if sock is None:
                sock = self._connect()
                continue
            try:
                if self._step(sock):
                    return
            except (OSError, ValueError) as e:
                log(
                    f"durable connection to {_peer(self.conn)} lost ({describe_error(e)}); "
                    f"resending {format_size(self.unacked.size)} not acknowledged"
                )
                self.conn.failed()
                sock.close()
                sock = None
                self.eof = False  # after reconnecting: resend what is unacknowledged, then shut down again

    def _connect(self) -> socket.socket | None:
        """A new connection with every unacknowledged record resent, or None if that failed."""
        sock = self.conn.connect()
        self.acks = b""
        self.last_ack = time.monotonic()
        if self.unacked.size:
            try:
                send_all(sock, self.unacked.all(), self.conn.write_timeout)
            except OSError as e:
                log(f"durable connection to {_peer(self.conn)} lost ({describe_error(e)}); trying another node")
                self.conn.failed()
                sock.close()
                return None
        return sock

    def _window_open(self) -> bool:
        return not self.eof and self.unacked.size < DURABLE_WINDOW

    def _step(self, sock: socket.socket) -> bool:
        """Send a chunk if the window allows, read acknowledgements; True once all is acknowledged."""
        if self._window_open():
            self._send_next(sock)
        if self.eof and not self.unacked.size:
            sock.close()
            return True
        if _readable(sock, 0 if self._window_open() else 0.2):
            self._read_acks(sock)
        elif self.unacked.size and time.monotonic() - self.last_ack > self.conn.write_timeout:
            raise TimeoutError(f"no acknowledgement for {format_duration(self.conn.write_timeout)}")
        return False

    def _send_next(self, sock: socket.socket) -> None:
        chunk = self.q.get(timeout=0.05)
        if chunk is None:
            self.eof = True
            if not hasattr(sock, "pending"):  # TLS: no half-close; wait for the acks, then close
                sock.shutdown(socket.SHUT_WR)
        elif chunk:
            if not self.unacked.size:
                self.last_ack = time.monotonic()  # the wait for an ack starts now
            self.unacked.add(chunk)
            send_all(sock, chunk, self.conn.write_timeout)

    def _read_acks(self, sock: socket.socket) -> None:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the node closed the connection")
        *lines, self.acks = (self.acks + data).split(b"\n")
        for ln in lines:
            if ln.startswith(b"+"):
                if not ln[1:].strip().isdigit():
                    text = ln[:80].decode("utf-8", "replace")
                    raise ConnectionError(f'unexpected reply from the node: "{text}"')
                self.unacked.ack(int(ln[1:]))
                self.last_ack = time.monotonic()
                self.conn.progress()


def send_bulk(
    q: LineQueue, conn: Connector, topic: bytes, size: int = BULK_SIZE, age: float = BULK_AGE, window: int = BULK_WINDOW
) -> None:
    """Frames are pipelined: up to ``window`` bytes of frames are sent before
    their replies arrive (in order). On an error or a lost connection, every
    frame not yet answered OK is resent on a new connection; they carry the
    same ULIDs, so a frame that was committed after all is not duplicated."""
    ulids = ULIDSource()
    link = _BulkLink(conn)
    pending: list[bytes] = []
    pending_size = 0
    started = time.monotonic()
    done = False
    try:
        while not done:
            chunk = q.get(timeout=max(0.01, age - (time.monotonic() - started)) if pending else None)
            if chunk is None:
                done = True
            elif chunk:
                if not pending:
                    started = time.monotonic()
                pending.append(chunk)
                pending_size += len(chunk)
            if not pending or (not done and pending_size < size and time.monotonic() - started < age):
                continue
            raw = b"".join(pending)
            lines = raw[:-1].split(b"\n")
            pending, pending_size = [], 0
            body = stamp_lines(lines, ulids.headers(len(lines), topic))
            link.send(b"BULK %d\n" % len(body) + body, len(raw), len(lines))
            while link.inflight_bytes > window:
                link.wait_reply()
        while link.inflight:
            link.wait_reply()
    except GiveUp as g:
        for data in pending:
            g.add(data)
        g.pending += sum(n for n, _ in link.inputs)
        g.pending_lines += sum(k for _, k in link.inputs)
        raise
    finally:
        link.close()


class _BulkLink:
    """One bulk connection with its unanswered frames, oldest first."""

    def __init__(self, conn: Connector) -> None:
        self.conn = conn
        self.sock: socket.socket | None = None
        self.inflight: collections.deque[bytes] = collections.deque()
        self.inputs: collections.deque[tuple[int, int]] = collections.deque()  # input bytes, lines per frame
        self.inflight_bytes = 0
        self.buf = b""
        self.backoff = 0.05

    def send(self, frame: bytes, input_bytes: int = 0, lines: int = 0) -> None:
        self.inflight.append(frame)
        self.inputs.append((input_bytes, lines))
        self.inflight_bytes += len(frame)
        if self.sock is None:
            self._reconnect()
            return  # _reconnect sent every in-flight frame, this one included
        try:
            send_all(self.sock, frame, self.conn.write_timeout)
        except OSError as e:
            self._failed(e)
        self._take_ready_replies()

    def wait_reply(self) -> None:
        """Block until the oldest frame is answered OK (resending on failure)."""
        while True:
            try:
                if self.sock is None:
                    self._reconnect()
                    continue
                self._handle(self._line())
                return
            except OSError as e:
                self._failed(e)

    def _take_ready_replies(self) -> None:
        while self.sock is not None and self.inflight:
            if not _readable(self.sock, 0):
                return
            try:
                self._handle(self._line())
            except OSError as e:
                self._failed(e)

    def _handle(self, reply: bytes) -> None:
        if not reply.startswith(b"OK"):
            raise ConnectionError("the node answered " + reply.decode("utf-8", "replace"))
        if not self.inflight:
            raise ConnectionError("the node answered a frame never sent")
        self.inflight_bytes -= len(self.inflight.popleft())
        self.inputs.popleft()
        self.backoff = 0.05
        self.conn.progress()

    def _line(self) -> bytes:
        assert self.sock is not None
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("the node closed the connection")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.strip()

    def _failed(self, e: Exception) -> None:
        log(
            f"bulk connection to {_peer(self.conn)} failed ({describe_error(e)}); "
            f"resending {len(self.inflight)} unanswered segments"
        )
        self.conn.failed()
        self.close()
        time.sleep(self.backoff)
        self.backoff = min(self.backoff * 2, self.conn.max_backoff)

    def _reconnect(self) -> None:
        sock = self.conn.connect()
        sock.settimeout(max(BULK_REPLY_TIMEOUT, self.conn.write_timeout))
        self.sock, self.buf = sock, b""
        try:
            for frame in self.inflight:
                send_all(sock, frame, self.conn.write_timeout)
        except OSError as e:
            self._failed(e)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def forward_main(
    addrs: list[str],
    prefixes: list[str] | None = None,
    max_backoff: float = 1.0,
    mode: str = "fast",
    topic: str = "",
    buffer: int = 64 << 20,
    policy: str = "block",
    write_timeout: float = WRITE_TIMEOUT,
    give_up: float = GIVE_UP,
    token: str = "",
    tls_ca: str = "",
) -> int:
    prefix = "".join(p + " " for p in (prefixes or [])).encode()
    try:
        topic_b = validate_topic(topic) if topic else b""
        for a in addrs:
            parse_addr(a, PORTS[mode])
    except (RecordError, ValueError) as e:
        log(str(e))
        return 2
    counters = Counters()
    q = LineQueue(buffer, policy, counters)
    tls = None
    if tls_ca:
        from oklog.net.tls import client_context

        tls = client_context(tls_ca)
    conn = Connector(
        addrs, mode, max_backoff, topic_b, write_timeout, give_up,
        token or os.environ.get("OKLOG_TOKEN", ""), tls,
    )

    def ended() -> None:
        conn.input_ended = time.monotonic()

    reader = threading.Thread(
        target=read_stdin, args=(sys.stdin.fileno(), q, prefix, ended), daemon=True
    )
    reader.start()
    try:
        if mode == "fast":
            send_fast(q, conn)
        elif mode == "durable":
            send_durable(q, conn)
        else:
            send_bulk(q, conn, topic_b or DEFAULT_TOPIC)
    except KeyboardInterrupt:
        return 130
    except GiveUp as g:
        _gave_up(g, q, mode)
        return 1
    if counters.dropped_lines:
        log(f"dropped {counters.dropped_lines} lines in {counters.dropped_chunks} chunks (buffer full, -policy drop)")
    return 0


def _gave_up(g: GiveUp, q: LineQueue, mode: str) -> None:
    """Say what was not delivered: what the sender held and what is still queued."""
    while (chunk := q.get(timeout=0)) is not None and chunk:
        g.add(chunk)
    note = " (fast mode: bytes sent before may be lost too)" if mode == "fast" else ""
    size = f" ({format_size(g.pending)})" if g.pending >= 1024 else ""
    lines = f"{g.pending_lines} line{'s' if g.pending_lines != 1 else ''}"
    log(f"giving up: {g}; {g.pending} bytes{size}, {lines}, not delivered{note}")
