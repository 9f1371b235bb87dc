"""Live tail: records as they are written at ingest, filtered, fanned in.

* ``Tap`` sits on the ingest write path (``IngestLog.tap``): every batch of
  records written to any segment goes into one shared ring of recent batches
  (``RING_BYTES``). Each subscriber reads the ring at its own position, so
  publishing costs the same whatever the number of subscribers and never
  waits; a subscriber that falls behind the ring's tail loses what it skipped,
  and the loss is counted and reported to its client.
* ``GET /ingest/_stream?q=&regex=&topic=`` streams this node's matching records.
* ``GET /store/stream?q=&regex=&topic=&window=&format=`` on any node streams the
  whole cluster's: it follows ``/ingest/_stream`` of every live ingest member
  (this node's tap directly), picks up members that join and drops dead ones
  without the client reconnecting, and drops copies of a ULID seen within the
  window (default 3 s; seconds or a Go duration such as ``3s``, ``500ms``).

Records are ``ULID SP TOPIC SP LINE LF`` as in query results. Notices are
in-band records of topic ``oklog`` whose line starts ``oklog: stream ``: a loss is
``oklog: stream dropped N records (client too slow)``, a member that cannot be
followed ``oklog: stream not following MEMBER: REASON``.

Both endpoints end when their client goes away, whether or not records flow:
the connection's socket is checked every ``CHECK_INTERVAL``, and a write the
client has not taken within ``WRITE_TIMEOUT`` ends the stream. Each node holds
at most ``max_subscribers`` tap subscribers and as many ``/store/stream``
clients; beyond that both answer 503 with the reason.
"""

from __future__ import annotations

import collections
import functools
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import trio

from oklog.net.http import ClientGone, HTTPError, Request, Response, Write
from oklog.node.state import StreamStats
from oklog.query.engine import Matcher, Query, QueryError
from oklog.query.format import FORMATS, apply_chunked
from oklog.query.params import parse_bool
from oklog.records.dedup import DedupWindow
from oklog.records.framing import Carry, TornRecord
from oklog.records.record import ULIDSource, stamp_lines, validate_topic
from oklog.units import parse_duration

log = logging.getLogger("oklog.stream.server")

RING_BYTES = 16 << 20  # recent batches kept for subscribers, shared by all of them
READ_MAX = 256 << 10  # bytes a subscriber takes from the ring at a time
SEND_BUFFER = 512 << 10  # kernel send buffer of a stream's connection
MAX_PARTIAL = 16 << 20  # bytes a member may send without a record's end
DEFAULT_MAX_SUBSCRIBERS = 256
FOLLOW_INTERVAL = 1.0  # seconds between membership checks of a cluster stream
CHECK_INTERVAL = 1.0  # seconds between checks that a stream's client is still there
WRITE_TIMEOUT = 60.0  # a client that takes nothing for this long is ended
MARKER_TOPIC = b"oklog"
RETRY_AFTER = "5"


class SubscriberLimit(Exception):
    pass


class MemberError(Exception):
    """A member's stream answered wrongly (status, framing)."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _printable(text: str) -> str:
    """Remote text made safe for one record line (no LF to forge records with)."""
    return _CONTROL.sub(" ", text)[:500]


class Subscriber:
    """A position in the tap's ring."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap
        self.seq = tap._next_seq  # next batch to read
        self.records = tap._records  # records published before that batch

    async def get(self, max_bytes: int = READ_MAX) -> tuple[list[bytes], int]:
        """Wait for data; return (batches, records dropped since the last call)."""
        tap = self.tap
        while True:
            with tap.lock:
                ring = tap._ring
                if ring and self.seq < tap._next_seq:
                    first_seq, _, first_records = ring[0]
                    dropped = 0
                    if self.seq < first_seq:  # fell behind the ring's tail
                        dropped = first_records - self.records
                        self.seq, self.records = first_seq, first_records
                        tap.dropped += dropped
                    i = self.seq - first_seq
                    chunks: list[bytes] = []
                    size = 0
                    while i < len(ring):
                        _, data, _ = ring[i]
                        if chunks and size + len(data) > max_bytes:
                            break
                        chunks.append(data)
                        size += len(data)
                        i += 1
                    self.seq = first_seq + i
                    self.records = ring[i][2] if i < len(ring) else tap._records
                    return chunks, dropped
                tap._waiting += 1
                wake = tap._event
            try:
                await wake.wait()
            finally:
                with tap.lock:
                    tap._waiting -= 1


class Tap:
    """Fan-out of ingest batches to live subscribers; publishing never blocks."""

    def __init__(
        self,
        max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS,
        ring_bytes: int = RING_BYTES,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self.lock = threading.Lock()
        self.max_subscribers = max_subscribers
        self.write_timeout = write_timeout  # a stream whose client takes nothing this long ends
        self.ring_bytes = ring_bytes
        self._ring: collections.deque[tuple[int, bytes, int]] = (
            collections.deque()
        )  # (seq, batch, records before)
        self._ring_size = 0
        self._next_seq = 0
        self._records = 0
        self._subs: set[Subscriber] = set()
        self._waiting = 0
        self._event = trio.Event()
        self._wake_pending = False
        self._token: trio.lowlevel.TrioToken | None = None
        # Figures for /cluster/state.
        self.dropped = 0  # records subscribers lost by falling behind
        self.refused = 0  # subscriptions and cluster streams refused at the limit
        self.clients = 0  # /store/stream clients being served

    def __call__(self, data: bytes) -> None:
        """Called on the ingest path (any thread) with a batch of whole records."""
        if not self._subs:
            return
        n = data.count(b"\n")
        with self.lock:
            if not self._subs:
                return
            self._ring.append((self._next_seq, data, self._records))
            self._next_seq += 1
            self._records += n
            self._ring_size += len(data)
            while self._ring_size > self.ring_bytes and len(self._ring) > 1:
                self._ring_size -= len(self._ring.popleft()[1])
            wake = self._waiting > 0 and not self._wake_pending
            if wake:
                self._wake_pending = True
        if wake and self._token is not None:
            try:
                self._token.run_sync_soon(self._wake_all)
            except trio.RunFinishedError:
                pass

    def _wake_all(self) -> None:
        with self.lock:
            event, self._event = self._event, trio.Event()
            self._wake_pending = False
        event.set()

    @property
    def full(self) -> bool:
        return len(self._subs) >= self.max_subscribers

    def subscribe(self) -> Subscriber:
        self._token = trio.lowlevel.current_trio_token()
        with self.lock:
            if len(self._subs) >= self.max_subscribers:
                self.refused += 1
                raise SubscriberLimit(
                    f"this node's stream subscriber limit ({self.max_subscribers}) is reached"
                )
            s = Subscriber(self)
            self._subs.add(s)
        return s

    def unsubscribe(self, s: Subscriber) -> None:
        with self.lock:
            self._subs.discard(s)
            if self._ring and s.seq < self._ring[0][0]:
                self.dropped += self._ring[0][2] - s.records
            if not self._subs:  # nobody reads the ring: free it
                self._ring.clear()
                self._ring_size = 0

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def stats(self) -> StreamStats:
        with self.lock:
            # Records subscribers have fallen behind by but not yet noticed
            # (one stuck in a write) count as dropped already.
            lost = 0
            if self._ring:
                first_seq, _, first_records = self._ring[0]
                lost = sum(first_records - s.records for s in self._subs if s.seq < first_seq)
            return {
                "subscribers": len(self._subs),
                "clients": self.clients,
                "max_subscribers": self.max_subscribers,
                "dropped": self.dropped + lost,
                "refused": self.refused,
            }


class StreamFilter:
    def __init__(self, matcher: Matcher, topic: bytes | None) -> None:
        self.matcher = matcher
        self.topic = topic
        self._topic_re = (
            re.compile(rb"^[0-9A-Z]{26} " + re.escape(topic) + rb" .*\n", re.M)
            if topic is not None
            else None
        )

    def apply(self, data: bytes) -> bytes:
        if self._topic_re is not None:
            data = b"".join(self._topic_re.findall(data))
        if not data or self.matcher.match_all:
            return data
        return b"".join(data[s:e] for s, e in self.matcher.scan(data))


def parse_filter(req: Request) -> StreamFilter:
    try:
        regex = parse_bool("regex", req.arg("regex"))
        q = (req.arg("q") or "").encode("latin-1")
        topic = req.arg("topic")
        return StreamFilter(Matcher(Query(q, regex)), validate_topic(topic) if topic else None)
    except (QueryError, ValueError) as e:
        raise HTTPError(400, str(e)) from None


def parse_window(text: str | None) -> float:
    """``window``: seconds (``3``, ``2.5``) or a Go duration (``3s``, ``500ms``, ``1m30s``),
    which is what the original OK Log client sends."""
    if text is None or text == "":
        return 3.0
    try:
        window = parse_duration(text)
    except ValueError:
        raise HTTPError(
            400, f"window={text!r}: use seconds or a duration such as 3s, 500ms, 1m30s"
        ) from None
    if not 0 <= window <= 3600:
        raise HTTPError(400, f"window={text!r}: must be between 0 and 1h")
    return window


def notice(line: bytes, source: ULIDSource) -> bytes:
    return stamp_lines([line], source.headers(1, MARKER_TOPIC))


def marker(dropped: int, source: ULIDSource) -> bytes:
    return notice(b"oklog: stream dropped %d records (client too slow)" % dropped, source)


def busy(what: str) -> Response:
    return Response(
        503,
        f"{what}; retry later, or raise -stream.max-subscribers on this node\n".encode(),
        headers={"Retry-After": RETRY_AFTER},
    )


# -- the client's connection ------------------------------------------------------

_TCP_ESTABLISHED = 1
_TCP_INFO = getattr(socket, "TCP_INFO", None)


def client_present(sock: trio.socket.SocketType) -> bool:
    """Whether the peer of ``sock`` is still connected: it has neither closed
    (FIN, RST) nor had the socket closed under it. Without TCP_INFO (not
    Linux) every open socket counts as present."""
    if sock.fileno() < 0:
        return False
    if _TCP_INFO is None:
        return True
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 8)
    except OSError:
        return False
    state: int = struct.unpack_from("B", info)[0]
    return state == _TCP_ESTABLISHED


class Guard:
    """Runs a stream body for as long as its client is there.

    Hypercorn swallows write errors and reports its own read timeout as a
    disconnect, so neither says reliably whether the client has gone; the
    socket does. A write the client does not take within ``write_timeout``
    (the shielded send in hypercorn cannot be cancelled) is ended by shutting
    the socket down, which fails the write."""

    def __init__(
        self, req: Request, write_timeout: float = WRITE_TIMEOUT, interval: float = CHECK_INTERVAL
    ) -> None:
        self.req = req
        self.write_timeout = write_timeout
        self.interval = interval
        self._writing_since: float | None = None
        self.gone = False

    async def run(self, body: Callable[[Write], Awaitable[None]], write: Write) -> None:
        if self.req.socket is not None:
            # The kernel would grow a stuck client's send buffer to tcp_wmem's
            # maximum (4 MiB by default), copying and holding that much per stream.
            try:
                self.req.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            except OSError:
                pass
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch, nursery.cancel_scope)
            await body(functools.partial(self._timed_write, write))
            nursery.cancel_scope.cancel()
        if self.gone:
            raise ClientGone

    async def _timed_write(self, write: Write, chunk: bytes) -> None:
        """``write``, timed: ``_gone`` ends a client that has not taken it in time."""
        self._writing_since = trio.current_time()
        try:
            await write(chunk)
        finally:
            self._writing_since = None

    def _gone(self) -> bool:
        sock = self.req.socket
        if sock is None:
            return self.req.disconnected
        if not client_present(sock):
            return True
        since = self._writing_since
        if since is not None and trio.current_time() - since > self.write_timeout:
            log.info(
                "stream client %s took nothing for %.0f s: ending it",
                self.req.scope.get("client"),
                self.write_timeout,
            )
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        return False

    async def _watch(self, scope: trio.CancelScope) -> None:
        while True:
            if not self.req.disconnected:
                with trio.move_on_after(self.interval):
                    await self.req.wait_disconnect()
            else:
                await trio.sleep(self.interval)
            if self._gone():
                self.gone = True
                scope.cancel()
                return


async def follow_tap(tap: Tap, flt: StreamFilter, send: Write) -> None:
    """Send this node's matching records as they are written, with an in-band
    marker whenever the subscriber fell behind. Raises SubscriberLimit."""
    sub = tap.subscribe()
    markers = ULIDSource()
    try:
        while True:
            chunks, dropped = await sub.get()
            out = flt.apply(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            if dropped:
                out += marker(dropped, markers)
            if out:
                await send(out)
    finally:
        tap.unsubscribe(sub)


def ingest_stream_handler(tap: Tap) -> Callable[[Request], Awaitable[Response]]:
    """``/ingest/_stream``: this node's matching records (see ``IngestStream``)."""
    return IngestStream(tap).handle


class IngestStream:
    """The ``/ingest/_stream`` endpoint: one tap subscriber per client."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap

    async def handle(self, req: Request) -> Response:
        flt = parse_filter(req)
        tap = self.tap
        if tap.full:
            tap.refused += 1
            return busy(f"this node's stream subscriber limit ({tap.max_subscribers}) is reached")
        return Response(200, stream=_TapStream(req, tap, flt).run)


class _TapStream:
    """One client's ``/ingest/_stream``, for as long as the client is there."""

    def __init__(self, req: Request, tap: Tap, flt: StreamFilter) -> None:
        self.req = req
        self.tap = tap
        self.flt = flt

    async def run(self, write: Write) -> None:
        await Guard(self.req, self.tap.write_timeout).run(self.body, write)

    async def body(self, write: Write) -> None:
        try:
            await follow_tap(self.tap, self.flt, write)
        except SubscriberLimit as e:
            await write(notice(f"oklog: stream not following this node: {e}".encode(), ULIDSource()))


def cluster_stream_handler(
    members: Callable[[], list[tuple[str, str | None]]],
    tap: Tap,
    local_ingest: bool,
    on_error: Callable[[], None] | None = None,
    client_options: Callable[[], dict[str, Any]] | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    """``/store/stream``: follow every live ingest member's tap (see ``ClusterStream``)."""
    return ClusterStream(members, tap, local_ingest, on_error, client_options).handle


class ClusterStream:
    """The ``/store/stream`` endpoint of one node. An error reading the membership
    is logged and counted (``on_error``); a stream keeps the members it follows
    and tries again at the next check. ``client_options`` gives the follow
    client's ``auth`` and ``verify``: a member's ``/ingest/_stream`` is internal
    and wants this node's proof (and TLS when on)."""

    def __init__(
        self,
        members: Callable[[], list[tuple[str, str | None]]],
        tap: Tap,
        local_ingest: bool,
        on_error: Callable[[], None] | None = None,
        client_options: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.members = members
        self.tap = tap
        self.local_ingest = local_ingest
        self.on_error = on_error
        self.client_options = client_options
        self._client: httpx.AsyncClient | None = None

    def follow_client(self) -> httpx.AsyncClient:
        """Shared by this node's cluster streams (a client each would cost its
        TLS context, about 1 MB), and apart from the node's own: follows are
        long-lived and must not take its query and replication connections."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(None, connect=3),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
                **(self.client_options() if self.client_options is not None else {}),
            )
        return self._client

    async def handle(self, req: Request) -> Response:
        flt = parse_filter(req)
        window = parse_window(req.arg("window"))
        fmt_name = req.arg("format", "raw") or "raw"
        if fmt_name not in FORMATS:
            raise HTTPError(400, f"format={fmt_name!r}: use one of {', '.join(FORMATS)}")
        tap = self.tap
        if tap.clients >= tap.max_subscribers:
            tap.refused += 1
            return busy(f"this node's stream client limit ({tap.max_subscribers}) is reached")
        # latin-1 as parsed: q's bytes reach the member as the client sent them.
        member_qs = urlencode(
            {k: v[-1] for k, v in req.query.items() if k in ("q", "regex", "topic")},
            encoding="latin-1",
        )
        follow = _Follow(self, flt, DedupWindow(window), FORMATS[fmt_name], member_qs)
        return Response(200, stream=functools.partial(self._serve, req, follow))

    async def _serve(self, req: Request, follow: _Follow, write: Write) -> None:
        tap = self.tap
        tap.clients += 1
        try:
            await Guard(req, tap.write_timeout).run(follow.run, write)
        finally:
            tap.clients -= 1


class _Follow:
    """One client's cluster stream: a follower per live ingest member feeding one
    channel, deduplicated and formatted on the way to the client."""

    def __init__(
        self,
        owner: ClusterStream,
        flt: StreamFilter,
        dedup: DedupWindow,
        fmt: Callable[[bytes], bytes] | None,
        member_qs: str,
    ) -> None:
        self.owner = owner
        self.flt = flt
        self.dedup = dedup
        self.fmt = fmt
        self.member_qs = member_qs
        # One chunk in hand: a slow client makes the taps drop (counted), not grow.
        self.tx, self.rx = trio.open_memory_channel[bytes](1)
        self.followed: dict[str, trio.CancelScope] = {}
        self.notices = ULIDSource()

    async def run(self, write: Write) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.membership, nursery, self.owner.follow_client())
            async for data in self.rx:
                out = self.dedup.filter(data, time.monotonic()) if len(self.followed) > 1 else data
                if out:
                    await write(apply_chunked(self.fmt, out) if self.fmt else out)

    async def unavailable(self, name: str, reason: str) -> None:
        line = _printable(f"oklog: stream not following {name}: {reason}")
        await self.tx.send(notice(line.encode("utf-8", "replace"), self.notices))

    async def follow_local(self, name: str, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                try:
                    await follow_tap(self.owner.tap, self.flt, self.tx.send)
                except SubscriberLimit as e:
                    await self.unavailable(name, str(e))
                await trio.sleep(FOLLOW_INTERVAL)

    async def follow_remote(
        self, client: httpx.AsyncClient, name: str, api: str, scope: trio.CancelScope
    ) -> None:
        failing = ""
        with scope:
            while True:
                try:
                    await self._read_member(client, f"http://{api}/ingest/_stream?{self.member_qs}")
                    reason = "its stream ended"
                except (httpx.HTTPError, MemberError, TornRecord) as e:
                    reason = str(e) or type(e).__name__
                except Exception as e:  # nothing a member sends ends the stream (logged)
                    log.exception("following %s's stream failed", name)
                    reason = f"unexpected error {type(e).__name__}"
                log.info("stream from %s ended: %s", name, reason)
                if reason != failing:
                    failing = reason
                    await self.unavailable(name, reason)
                await trio.sleep(FOLLOW_INTERVAL)

    async def _read_member(self, client: httpx.AsyncClient, url: str) -> None:
        async with client.stream("GET", url) as resp:
            if resp.status_code != 200:
                head = b""
                async for chunk in resp.aiter_raw():
                    head += chunk
                    if len(head) >= 200:
                        break
                text = head[:200].decode("utf-8", "replace").strip()
                raise MemberError(f"{resp.status_code} {text}")
            carry = Carry(MAX_PARTIAL)
            async for chunk in resp.aiter_raw():
                whole = carry.feed(chunk)
                if whole:
                    await self.tx.send(whole)

    def _live(self) -> dict[str, str | None] | None:
        try:
            return {name: api for name, api in self.owner.members()}
        except Exception:  # a bad membership row must not end streams (logged)
            log.exception("stream: reading the membership failed; carrying on")
            if self.owner.on_error is not None:
                self.owner.on_error()
            return None

    async def membership(self, nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
        while True:
            live = self._live()
            if live is not None:
                for name in list(self.followed):
                    if name not in live:
                        self.followed.pop(name).cancel()
                for name, api in live.items():
                    if name not in self.followed:
                        self._start(nursery, client, name, api)
            await trio.sleep(FOLLOW_INTERVAL)

    def _start(
        self, nursery: trio.Nursery, client: httpx.AsyncClient, name: str, api: str | None
    ) -> None:
        scope = trio.CancelScope()
        self.followed[name] = scope
        if api is None:
            if self.owner.local_ingest:
                nursery.start_soon(self.follow_local, name, scope)
        else:
            nursery.start_soon(self.follow_remote, client, name, api, scope)
