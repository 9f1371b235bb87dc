"""``oklog stream``: live tail of the cluster to stdout.

Records are handled a received buffer at a time (formatting is one pass of the
C helper), so a file or a pipe keeps up with a node's ingest rate. The node's
in-band notices (records it dropped because this client fell behind, members
it cannot follow) are taken out of the output and said on stderr.

When the node it is attached to goes away, it resumes from another store
member (learnt from ``/cluster/state``) without a gap or a duplicate: it
follows the new member's live stream at once and, for ``-catchup``, queries the
store for records since shortly before the last one it received, printing only
those it has not printed (the ingest tier hands records to the store within a
few seconds). What that cannot recover (records a dead ingest node had not
handed to the store) is said on stderr with its time range.
"""

from __future__ import annotations

import collections
import json
import os
import re
import select
import ssl
import sys
import time
from argparse import Namespace
from collections.abc import Callable
from typing import Any, NoReturn

from oklog.addr import parse_addr
from oklog.cli.http import (
    MAX_HEAD,
    NO_ACCESS,
    Access,
    Response,
    ResponseError,
    get,
    request,
    urlencode,
)
from oklog.records.framing import Carry
from oklog.records.record import ms_floor
from oklog.units import DEFAULT_API_PORT

MARGIN = 5.0  # seconds before the last received record that a catch-up starts from
RETAIN_BYTES = 64 << 20  # received data kept to know what was printed (bounded)
CATCHUP_INTERVAL = 1.0
CATCHUP_MAX_RECORDS = 2_000_000  # beyond this a catch-up stops and says so
CONNECT_TIMEOUT = 5.0
HEAD_BUF = 2 * MAX_HEAD  # receive buffer of the stream's response head

_NOTICE = re.compile(rb"^[0-9A-Z]{26} oklog (oklog: stream [^\n]*)\n", re.M)
_DROPPED = re.compile(rb"oklog: stream dropped (\d+) records")
_LINE_ULID = re.compile(rb"^[0-9A-Z]{26}(?= )", re.M)


def say(text: str) -> None:
    print(f"oklog stream: {text}", file=sys.stderr, flush=True)


class StreamError(Exception):
    pass


class Refused(Exception):
    """The node answered the stream request with a client error: do not retry."""


class LiveStream:
    """``GET /store/stream`` (the shared client, TLS with ``-tls.ca``), its endless
    chunked body decoded a buffer at a time; ``read`` waits at most ``timeout`` for data."""

    def __init__(self, host: str, port: int, path: str, access: Access = NO_ACCESS) -> None:
        try:
            resp = request(host, port, "GET", path, CONNECT_TIMEOUT, HEAD_BUF, token=access.token, tls=access.tls)
        except ResponseError as e:
            raise StreamError(str(e)) from None
        self.status = resp.status
        if resp.status != 200:
            _refuse(resp)
        self.sock, rest = resp.detach()
        self.buf = bytearray(rest)
        self._remaining = 0  # payload bytes left in the current chunk

    def _recv(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise StreamError("the node closed the stream")
        self.buf += data

    def read(self, timeout: float) -> bytes:
        """Decoded body bytes available within ``timeout`` (maybe b"")."""
        out = self._decode()
        if out:
            return out
        # TLS may hold decrypted bytes the socket no longer shows to select.
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0
        ready = pending or select.select([self.sock], [], [], timeout)[0]
        if ready:
            self.sock.settimeout(CONNECT_TIMEOUT)
            self._recv()
        return self._decode()

    def _decode(self) -> bytes:
        out = []
        buf = self.buf
        pos = 0
        while pos < len(buf):
            if self._remaining:
                take = min(self._remaining, len(buf) - pos)
                out.append(bytes(buf[pos : pos + take]))
                pos += take
                self._remaining -= take
                if self._remaining:
                    break
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            line = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
            if not line:  # the CRLF after a chunk's payload
                pos = eol + 2
                continue
            try:
                size = int(line, 16)
            except ValueError:
                raise StreamError(f"bad chunk header {line[:20]!r}") from None
            pos = eol + 2
            if size == 0:
                raise StreamError("the node ended the stream")
            self._remaining = size
        del buf[:pos]
        return b"".join(out)

    def close(self) -> None:
        self.sock.close()


def _get(host: str, port: int, path: str, timeout: float, access: Access) -> tuple[int, dict[str, str], bytes]:
    try:
        return get(host, port, path, timeout, access)
    except ResponseError as e:
        raise StreamError(str(e)) from None


def _refuse(resp: Response) -> NoReturn:
    """A stream request answered with an error: Refused (4xx, do not retry) or StreamError."""
    status_line = f"{resp.status} {resp.reason}".strip()
    resp.sock.settimeout(2)
    try:
        body = resp.read()[:4096]
    except (OSError, ResponseError):
        body = b""
    finally:
        resp.sock.close()
    text = body.decode("utf-8", "replace").strip()
    last = text.splitlines()[-1] if text else status_line
    if 400 <= resp.status < 500:
        raise Refused(last)
    raise StreamError(f"{resp.status}: {last}")


def cluster_members(host: str, port: int, access: Access = NO_ACCESS) -> tuple[list[tuple[str, int]], list[dict[str, Any]]]:
    """(API addresses of alive store members, every member) from /cluster/state."""
    status, _, body = _get(host, port, "/cluster/state", CONNECT_TIMEOUT, access)
    if status != 200:
        return [], []
    members = json.loads(body).get("members", [])
    store = []
    for m in members:
        addr = m.get("api_addr")
        if m.get("state") == "alive" and "store" in str(m.get("role", "")) and isinstance(addr, str):
            try:
                store.append(parse_addr(addr, DEFAULT_API_PORT, default_host="localhost"))
            except ValueError:
                continue
    return store, members


class Output:
    def __init__(self, fd: int, fmt: Callable[[bytes], bytes]) -> None:
        self.fd = fd
        self.fmt = fmt

    def records(self, data: bytes) -> None:
        if data:
            _write(self.fd, self.fmt(data))


class Received:
    """What was printed recently, as the buffers received (no work per record
    until a catch-up needs their ULIDs)."""

    def __init__(self) -> None:
        self.chunks: collections.deque[tuple[float, bytes]] = collections.deque()
        self.size = 0
        self.last = 0.0  # when records last arrived
        self.trimmed_at = 0.0  # newest receive time dropped for the byte bound

    def add(self, data: bytes) -> None:
        now = time.time()
        self.last = now
        self.chunks.append((now, data))
        self.size += len(data)
        while self.chunks and (self.size > RETAIN_BYTES or now - self.chunks[0][0] > 2 * MARGIN):
            if self.size > RETAIN_BYTES:
                self.trimmed_at = self.chunks[0][0]
            self.size -= len(self.chunks.popleft()[1])


class CatchUp:
    """After a reconnect: the store's records since ``since`` that were not printed."""

    def __init__(self, since: float, received: Received) -> None:
        self.since = since
        self.since_ulid = ms_floor(int(since * 1000))
        self.seen: set[bytes] = set()
        for _, data in received.chunks:
            self._note(data)
        self.started = time.monotonic()
        self.next_poll = self.started
        self.found = 0
        self.incomplete = ""

    def _note(self, data: bytes) -> None:
        lo = self.since_ulid
        self.seen.update(u for u in _LINE_ULID.findall(data) if u >= lo)

    def live(self, data: bytes) -> None:
        self._note(data)

    def poll(self, host: str, port: int, params: str, access: Access = NO_ACCESS) -> bytes:
        """Query the store once; the records not printed yet."""
        self.next_poll = time.monotonic() + CATCHUP_INTERVAL
        path = f"/store/query?from={self.since_ulid.decode()}&{params}"
        status, headers, body = _get(host, port, path, 60.0, access)
        if status not in (200, 206):
            raise StreamError(f"catch-up query: {status} {body[:200].decode('utf-8', 'replace').strip()}")
        if status == 206 or headers.get("x-oklog-errors"):
            self.incomplete = headers.get("x-oklog-errors", "partial answer")
        new = []
        for rec in body.split(b"\n")[:-1]:
            u = rec[:26]
            if u not in self.seen:
                self.seen.add(u)
                new.append(rec)
        if len(self.seen) > CATCHUP_MAX_RECORDS:
            raise StreamError(f"catch-up stopped after {len(self.seen)} records")
        self.found += len(new)
        if not new:
            return b""
        new.append(b"")
        return b"\n".join(new)


def _stamp(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def stream_main(ns: Namespace, out_fd: int | None = None, max_seconds: float = 0.0) -> int:
    return _Follower(ns, out_fd, max_seconds).run()


class _Follower:
    """``oklog stream``: one cluster stream at a time, moving to another member
    when it breaks and catching up from the store on what was missed."""

    def __init__(self, ns: Namespace, out_fd: int | None, max_seconds: float) -> None:
        from oklog.cli.query import format_name
        from oklog.query.format import FORMATS

        fmt = FORMATS[format_name(ns.ulid, ns.time, False)]
        assert fmt is not None
        self.out = Output(sys.stdout.fileno() if out_fd is None else out_fd, fmt)
        self.first = parse_addr(ns.store, DEFAULT_API_PORT, default_host="localhost")
        params = {"q": ns.q, "regex": "true" if ns.regex else "false"}
        if ns.topic:
            params["topic"] = ns.topic
        self.filter_qs = urlencode(params)
        self.path = "/store/stream?" + urlencode(params | {"window": f"{ns.window:g}"})
        self.catchup_for = getattr(ns, "catchup", 15.0)
        self.access = Access.of(ns)
        self.received = Received()
        self.members: list[tuple[str, int]] = [self.first]
        self.current = self.first
        self.dropped_total = 0
        self.backoff = 0.1
        self.resume_since: float | None = None  # a catch-up from then is due
        self.catchup: CatchUp | None = None  # under way on the current connection
        self.deadline = time.monotonic() + max_seconds if max_seconds else None

    def _running(self) -> bool:
        return self.deadline is None or time.monotonic() < self.deadline

    def run(self) -> int:
        while self._running():
            try:
                live = LiveStream(self.current[0], self.current[1], self.path, self.access)
            except Refused as e:
                say(str(e))
                return 1
            except (OSError, StreamError) as e:
                say(f"{self.current[0]}:{self.current[1]}: {e}")
                self.current = _next_member(self.members, self.current)
                if self.current == self.first or len(self.members) == 1:
                    time.sleep(self.backoff)
                    self.backoff = min(self.backoff * 2, 5.0)
                continue
            self.backoff = 0.1
            self._learn_members()
            connected_at = time.time()
            self.catchup = self._start_catchup()
            try:
                self._pump(live)
                return 0
            except (OSError, StreamError) as e:
                say(f"{self.current[0]}:{self.current[1]}: {e}; resuming from another member")
                if self.catchup is None:  # else the catch-up under way is started over
                    self.resume_since = max(self.received.last, connected_at) - MARGIN
            finally:
                live.close()
            self.current = _next_member(self.members, self.current)
        return 0

    def _learn_members(self) -> None:
        try:
            found, _ = cluster_members(*self.current, self.access)
        except (OSError, ValueError, StreamError):
            found = []
        if found:
            self.members = found if self.current in found else [self.current, *found]

    def _start_catchup(self) -> CatchUp | None:
        if self.resume_since is None:
            return None
        since = self.resume_since
        if self.received.trimmed_at > since:
            say(
                f"records from {_stamp(since)} to {_stamp(self.received.trimmed_at)} may be printed twice "
                "(too many to remember)"
            )
            since = self.received.trimmed_at
        say(
            f"resumed from {self.current[0]}:{self.current[1]}; catching up from {_stamp(since)} "
            f"for {self.catchup_for:g}s"
        )
        return CatchUp(since, self.received)

    def _pump(self, live: LiveStream) -> None:
        carry = Carry()
        while self._running():
            chunk = live.read(0.2 if self.catchup is not None else 1.0)
            if chunk and (data := self._notices(carry.feed(chunk))):
                self.received.add(data)
                if self.catchup is not None:
                    self.catchup.live(data)
                self.out.records(data)
            if self.catchup is not None and time.monotonic() >= self.catchup.next_poll:
                self.catchup = self._poll(self.catchup)

    def _poll(self, catchup: CatchUp) -> CatchUp | None:
        """One catch-up query; the catch-up still under way, or None when it is over."""
        try:
            data = catchup.poll(self.current[0], self.current[1], self.filter_qs, self.access)
        except (OSError, StreamError) as e:
            say(f"catch-up from {_stamp(catchup.since)} failed: {e}; records of that time may be missing")
            return None
        if data:
            self.received.add(data)
            self.out.records(data)
        if time.monotonic() - catchup.started >= self.catchup_for:
            _report(catchup, self.current, self.access)
            self.resume_since = None
            return None
        return catchup

    def _notices(self, data: bytes) -> bytes:
        """``data`` without the stream's in-band notices, which go to stderr."""
        if not data or b" oklog oklog: stream " not in data:
            return data
        for line in _NOTICE.findall(data):
            m = _DROPPED.match(line)
            if m:
                self.dropped_total += int(m.group(1))
                say(
                    f"{self.current[0]}:{self.current[1]} dropped {int(m.group(1))} records: this client "
                    f"or its output fell behind ({self.dropped_total} dropped in all)"
                )
            else:
                say(line[len(b"oklog: stream ") :].decode("utf-8", "replace"))
        return _NOTICE.sub(b"", data)


def _report(catchup: CatchUp, node: tuple[str, int], access: Access) -> None:
    try:
        _, members = cluster_members(*node, access)
    except (OSError, ValueError, StreamError):
        members = []
    text = f"caught up {catchup.found} records written from {_stamp(catchup.since)} while disconnected"
    if catchup.incomplete:
        text += f"; the store's answer was incomplete: {catchup.incomplete}"
    say(text)
    for m in members:
        if "ingest" in str(m.get("role", "")) and m.get("state") != "alive":
            say(
                f"records {m.get('id')} ({m.get('state')}) received after {_stamp(catchup.since)} and had "
                "not handed to the store are missing until it is back"
            )


def _next_member(members: list[tuple[str, int]], current: tuple[str, int]) -> tuple[str, int]:
    if current not in members:
        return members[0] if members else current
    return members[(members.index(current) + 1) % len(members)]


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
