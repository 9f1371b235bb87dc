"""Live tail: records as they are written at ingest, filtered, fanned in.

* ``Tap`` sits on the ingest write path (``IngestLog.tap``): every batch of
  records written to any segment is offered to each subscriber's bounded queue.
  Publishing never blocks ingest: a subscriber whose queue is full (its client
  reads too slowly) loses the batch and the loss is counted.
* ``GET /ingest/_stream?q=&regex=&topic=`` streams this node's matching records.
* ``GET /store/stream?q=&regex=&topic=&window=&format=`` on any node streams the
  whole cluster's: it follows ``/ingest/_stream`` of every live ingest member
  (this node's tap directly), picks up members that join and drops dead ones
  without the client reconnecting, and drops copies of a ULID seen within the
  window (default 3 s).

Records are ``ULID SP TOPIC SP LINE LF`` as in query results. A loss is reported
in-band as a marker record of topic ``oklog``, line
``oklog: stream dropped N records (client too slow)``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import trio

from oklog.http import HTTPError, Request, Response, Write
from oklog.query.engine import Matcher, Query, QueryError
from oklog.query.format import apply_chunked
from oklog.query.params import parse_bool
from oklog.record import ULIDSource, stamp_lines, validate_topic

log = logging.getLogger("oklog.stream")

QUEUE_BYTES = 4 << 20  # per subscriber
FOLLOW_INTERVAL = 1.0  # seconds between membership checks of a cluster stream
MARKER_TOPIC = b"oklog"


class Subscriber:
    def __init__(self, tap: Tap, limit: int) -> None:
        self.tap = tap
        self.limit = limit
        self._q: collections.deque[bytes] = collections.deque()
        self._size = 0
        self.dropped = 0
        self._token = trio.lowlevel.current_trio_token()
        self._wake = trio.Event()

    def offer(self, data: bytes) -> None:
        """Called on the ingest path (any thread): enqueue or count as dropped."""
        with self.tap.lock:
            if self._size + len(data) > self.limit:
                self.dropped += data.count(b"\n")
                return
            self._q.append(data)
            self._size += len(data)
        try:
            self._token.run_sync_soon(self._wake.set)
        except trio.RunFinishedError:
            pass

    async def get(self) -> tuple[list[bytes], int]:
        """Wait for data; return (chunks, records dropped since last call)."""
        while True:
            with self.tap.lock:
                if self._q or self.dropped:
                    chunks = list(self._q)
                    self._q.clear()
                    self._size = 0
                    dropped, self.dropped = self.dropped, 0
                    return chunks, dropped
                self._wake = trio.Event()
                wake = self._wake
            await wake.wait()


class Tap:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._subs: set[Subscriber] = set()
        self.published = 0

    def __call__(self, data: bytes) -> None:
        if not self._subs:
            return
        self.published += 1
        for s in list(self._subs):
            s.offer(data)

    def subscribe(self, limit: int = QUEUE_BYTES) -> Subscriber:
        s = Subscriber(self, limit)
        with self.lock:
            self._subs.add(s)
        return s

    def unsubscribe(self, s: Subscriber) -> None:
        with self.lock:
            self._subs.discard(s)

    @property
    def subscribers(self) -> int:
        return len(self._subs)


@dataclass(frozen=True)
class StreamFilter:
    matcher: Matcher
    topic: bytes | None

    def apply(self, data: bytes) -> bytes:
        if self.topic is not None:
            data = _topic_only(data, self.topic)
        if not data or self.matcher.match_all:
            return data
        return b"".join(data[s:e] for s, e in self.matcher.scan(data))


def _topic_only(data: bytes, topic: bytes) -> bytes:
    needle = b" " + topic + b" "
    return b"".join(r + b"\n" for r in data.split(b"\n")[:-1] if r[26 : 28 + len(topic)] == needle)


def parse_filter(req: Request) -> StreamFilter:
    try:
        regex = parse_bool("regex", req.arg("regex"))
        q = (req.arg("q") or "").encode("latin-1")
        topic = req.arg("topic")
        return StreamFilter(Matcher(Query(q, regex)), validate_topic(topic) if topic else None)
    except (QueryError, ValueError) as e:
        raise HTTPError(400, str(e)) from None


def marker(dropped: int, source: ULIDSource) -> bytes:
    line = b"oklog: stream dropped %d records (client too slow)" % dropped
    return stamp_lines([line], source.headers(1, MARKER_TOPIC))


async def follow_tap(tap: Tap, flt: StreamFilter, send) -> None:
    """Send this node's matching records as they are written, with an in-band
    marker whenever the subscriber's queue overflowed."""
    sub = tap.subscribe()
    markers = ULIDSource()
    try:
        while True:
            chunks, dropped = await sub.get()
            out = flt.apply(b"".join(chunks))
            if dropped:
                out += marker(dropped, markers)
            if out:
                await send(out)
    finally:
        tap.unsubscribe(sub)


def ingest_stream_handler(tap: Tap):
    async def handler(req: Request) -> Response:
        flt = parse_filter(req)

        async def stream(write: Write) -> None:
            await follow_tap(tap, flt, write)

        return Response(200, stream=stream)

    return handler


class Dedup:
    """ULIDs seen within the last ``window`` seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: dict[bytes, float] = {}
        self._order: collections.deque[tuple[float, bytes]] = collections.deque()

    def filter(self, data: bytes) -> bytes:
        now = time.monotonic()
        while self._order and now - self._order[0][0] > self.window:
            _, u = self._order.popleft()
            self._seen.pop(u, None)
        out = []
        for rec in data.split(b"\n")[:-1]:
            u = rec[:26]
            if u in self._seen:
                continue
            self._seen[u] = now
            self._order.append((now, u))
            out.append(rec)
        if not out:
            return b""
        out.append(b"")
        return b"\n".join(out)


def cluster_stream_handler(
    members: Callable[[], list[tuple[str, str | None]]],
    tap: Tap | None,
    client: Callable[[], httpx.AsyncClient | None],
    on_error: Callable[[], None] | None = None,
):
    """``/store/stream``: follow every live ingest member's tap. An error reading
    the membership is logged and counted (``on_error``); the stream keeps the
    members it follows and tries again at the next check."""

    async def handler(req: Request) -> Response:
        flt = parse_filter(req)
        try:
            window = float(req.arg("window", "3") or 3)
        except ValueError:
            raise HTTPError(400, "window must be seconds") from None
        from oklog.query.format import FORMATS

        fmt_name = req.arg("format", "raw") or "raw"
        if fmt_name not in FORMATS:
            raise HTTPError(400, f"format={fmt_name!r}: use one of {', '.join(FORMATS)}")
        fmt = FORMATS[fmt_name]
        member_qs = req.scope.get("query_string", b"").decode("latin-1")

        async def stream(write: Write) -> None:
            # One chunk in hand: a slow client makes the taps drop (counted), not grow.
            tx, rx = trio.open_memory_channel[bytes](1)
            dedup = Dedup(window)
            followed: dict[str, trio.CancelScope] = {}

            async def follow_local(scope: trio.CancelScope) -> None:
                assert tap is not None
                with scope:
                    await follow_tap(tap, flt, tx.send)

            async def follow_remote(name: str, api: str, scope: trio.CancelScope) -> None:
                c = client()
                if c is None:
                    return
                url = f"http://{api}/ingest/_stream?{member_qs}"
                with scope:
                    while True:
                        try:
                            async with c.stream("GET", url, timeout=httpx.Timeout(None, connect=3)) as resp:
                                if resp.status_code != 200:
                                    raise RuntimeError(f"{resp.status_code}")
                                rest = b""
                                async for chunk in resp.aiter_raw():
                                    buf = rest + chunk
                                    cut = buf.rfind(b"\n") + 1
                                    rest = buf[cut:]
                                    if cut:
                                        await tx.send(buf[:cut])
                        except (httpx.HTTPError, RuntimeError) as e:
                            log.info("stream from %s ended: %s", name, e)
                        await trio.sleep(FOLLOW_INTERVAL)

            async def membership(nursery: trio.Nursery) -> None:
                while True:
                    try:
                        live = {name: api for name, api in members()}
                    except Exception:
                        log.exception("stream: reading the membership failed; carrying on")
                        if on_error is not None:
                            on_error()
                        await trio.sleep(FOLLOW_INTERVAL)
                        continue
                    for name in list(followed):
                        if name not in live:
                            followed.pop(name).cancel()
                    for name, api in live.items():
                        if name in followed:
                            continue
                        scope = trio.CancelScope()
                        followed[name] = scope
                        if api is None:
                            if tap is not None:
                                nursery.start_soon(follow_local, scope)
                        else:
                            nursery.start_soon(follow_remote, name, api, scope)
                    await trio.sleep(FOLLOW_INTERVAL)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(membership, nursery)
                async for data in rx:
                    out = dedup.filter(data)
                    if out:
                        await write(apply_chunked(fmt, out) if fmt else out)

        return Response(200, stream=stream)

    return handler
