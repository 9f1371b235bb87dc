"""The store tier's HTTP API.

GET|HEAD /store/query    the cluster's answer (fans out to store members)
GET|HEAD /store/_query   this node's answer only
POST     /store/replicate  a sorted segment body to keep
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import trio

from oklog.http import HTTPError, Request, Response, Router, Write
from oklog.query.engine import Matcher, QueryError
from oklog.query.format import FORMATS, NATIVE_MODES
from oklog.query.params import MAX_KEY_EXCL, QueryParams, parse_bool, parse_params
from oklog.record import RecordError, ulid_ms
from oklog.store.log import SegmentError, StoreLog
from oklog.store.query import execute, plan_query

STREAM_CHUNK = 1 << 20


class LocalStore:
    """This node's store as a replication target (no HTTP hop)."""

    def __init__(self, store: StoreLog, name: str = "local") -> None:
        self.store = store
        self.name = name

    async def replicate(self, data: bytes) -> None:
        await trio.to_thread.run_sync(self.store.write, data, False)


def stats_headers(nodes: int, segments: int, size: int, errors: int, started: float) -> dict[str, str]:
    return {
        "X-Oklog-Nodes-Queried": str(nodes),
        "X-Oklog-Segments-Queried": str(segments),
        "X-Oklog-Max-Data-Set-Size": str(size),
        "X-Oklog-Error-Count": str(errors),
        "X-Oklog-Duration": f"{time.monotonic() - started:.6f}s",
    }


def _rfc3339(ms: int) -> str:
    """RFC 3339 with nanoseconds' layout, as the original's clients parse it (Go RFC3339Nano)."""
    sec, rem = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{rem:03d}Z"


def _header_text(text: str) -> str:
    """A query term echoed in a header: bytes a header cannot carry become %XX."""
    return "".join(c if 0x20 <= ord(c) < 0x7F and c != "%" else f"%{ord(c) & 0xFF:02X}" for c in text)


def param_headers(params: QueryParams, now_ms: int | None = None) -> dict[str, str]:
    """The query as the node understood it, in the original's ``X-Oklog-From``,
    ``-To``, ``-Q`` and ``-Regex`` headers (its CLI requires them). An open
    upper bound reads as the time of the query."""
    lo = ulid_ms(params.lo)
    hi = params.hi_excl
    to = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    try:
        if len(hi) == 27:  # a ULID bound, inclusive of itself
            to = ulid_ms(hi[:26])
        elif hi != MAX_KEY_EXCL:  # a time bound covers its whole millisecond
            to = max(ulid_ms(hi) - 1, lo)
    except RecordError:
        pass  # the very end of ULID time: reads as now
    return {
        "X-Oklog-From": _rfc3339(lo),
        "X-Oklog-To": _rfc3339(to),
        "X-Oklog-Q": _header_text(params.query.q.decode("latin-1")),
        "X-Oklog-Regex": "true" if params.query.regex else "false",
    }


def parse_request(req: Request) -> tuple[QueryParams, Matcher]:
    try:
        params = parse_params(req.query)
        if len(params.terms) <= 1 and not params.without and not params.where:
            return params, Matcher(params.query)
        from oklog.query.terms import build_matcher

        m = build_matcher(
            list(params.terms), params.regex, params.icase, list(params.without), params.topic, params.where
        )
        if parse_bool("skipped", req.arg("skipped")) and getattr(m, "where", None) is not None:
            m.where.want_skipped = True  # type: ignore[union-attr]  # /store/_hits counting skipped lines
        return params, m  # type: ignore[return-value]  # the scan uses what both offer
    except QueryError as e:
        raise HTTPError(400, str(e)) from None


GO_CLIENT = "go-http-client/"


def parse_format(req: Request):
    """``format=raw|lines|ulid|time|ulidtime|json`` (default raw: whole records).

    The original OK Log CLI (a Go client that sends no format) reads records
    as ``ULID SP LINE``, without topics: it gets ``ulid``, so its output is
    what it always was."""
    name = req.arg("format")
    if name is None and req.headers.get("user-agent", "").lower().startswith(GO_CLIENT):
        name = "ulid"
    name = name or "raw"
    if name not in FORMATS:
        raise HTTPError(400, f"format={name!r}: use one of {', '.join(FORMATS)}")
    fields = req.arg("fields")
    if fields:  # -fields a,b: the chosen fields of each line, in logfmt
        from oklog.query.fields import project
        from oklog.query.format import lines_only

        names = [n.strip() for n in fields.split(",") if n.strip()][:64]
        return lambda buf: project(lines_only(buf), names)
    return FORMATS[name]


async def local_query(
    store: StoreLog, limiter: trio.CapacityLimiter, req: Request
) -> Response:
    started = time.monotonic()
    params, matcher = parse_request(req)
    fmt = parse_format(req)
    plan = await trio.to_thread.run_sync(plan_query, store, params)
    headers = stats_headers(1, plan.segments, plan.bytes, 0, started)
    headers.update(param_headers(params))
    if req.method == "HEAD":
        plan.close()
        return Response(200, headers=headers)

    async def stream(write: Write) -> None:
        if fmt in NATIVE_MODES:  # cut to the output by the scan itself
            await execute(store, matcher, plan, _chunked(write), limiter, fmt=fmt)
        else:  # formats that grow the data: formatted a piece at a time as it is sent
            await execute(store, matcher, plan, _formatted(write, fmt), limiter)

    return Response(200, headers=headers, stream=stream, content_type="text/plain; charset=utf-8")


async def local_hits(store: StoreLog, limiter: trio.CapacityLimiter, req: Request) -> Response:
    """``/store/_hits``: this node's matches as ``ULID LF`` lines in ULID order
    (see oklog.query.count): what the coordinator merges and counts."""
    from oklog.query.count import ulid_lines
    from oklog.query.fields import by_lines

    started = time.monotonic()
    params, matcher = parse_request(req)
    by = req.arg("by")
    plan = await trio.to_thread.run_sync(plan_query, store, params)
    headers = stats_headers(1, plan.segments, plan.bytes, 0, started)

    async def stream(write: Write) -> None:
        async def emit(data: bytes) -> None:
            await _chunked(write)(by_lines(data, by) if by else ulid_lines(data))

        await execute(store, matcher, plan, emit, limiter)

    return Response(200, headers=headers, stream=stream, content_type="text/plain; charset=utf-8")


def _chunked(write: Write) -> Callable[[bytes], Awaitable[None]]:
    async def emit(data: bytes) -> None:
        view = memoryview(data)
        for i in range(0, len(view), STREAM_CHUNK):
            await write(bytes(view[i : i + STREAM_CHUNK]))

    return emit


FORMAT_PIECE = 256 << 10


def _formatted(write: Write, fmt) -> Callable[[bytes], Awaitable[None]]:
    """Format and send about ``FORMAT_PIECE`` of records at a time, so a slow
    reader holds one formatted piece and the scan (a few units ahead) waits
    for it. On the loop: a piece is about a millisecond of the C helper, and
    formatting in worker threads spread short-lived buffers over their malloc
    arenas, which kept them resident."""

    async def emit(data: bytes) -> None:
        for piece in record_pieces(data, FORMAT_PIECE):
            await write(fmt(piece))

    return emit


def record_pieces(data: bytes, size: int):
    """``data`` cut after the last record end before every ``size`` bytes."""
    i = 0
    while i < len(data):
        j = data.rfind(b"\n", i, i + size) + 1
        if j <= i:
            j = data.find(b"\n", i + size) + 1 or len(data)
        yield data[i:j]
        i = j


def store_router(
    store: StoreLog, limiter: trio.CapacityLimiter, query_handler=None, compaction_pending: Callable[[], bool] | None = None
) -> Router:
    r = Router()

    async def _query(req: Request) -> Response:
        return await local_query(store, limiter, req)

    async def _hits(req: Request) -> Response:
        return await local_hits(store, limiter, req)

    async def replicate(req: Request) -> Response:
        body = await req.body()
        try:
            segs = await trio.to_thread.run_sync(store.write, body, True)
        except SegmentError as e:
            raise HTTPError(400, f"bad segment: {e}") from None
        store.replications_received += 1
        return Response(200, "".join(f"{seg.name}\n" for seg in segs).encode())

    async def segments(req: Request) -> Response:
        segs = store.segments()
        return Response.json(
            {
                "segments": [{"name": x.name, "first": x.first, "last": x.last, "size": x.size} for x in segs],
                "bytes": sum(x.size for x in segs),
                # true while maintenance has segments to validate or compact, so
                # sizes may still change (rebalance waits for false)
                "compaction_pending": bool(compaction_pending and compaction_pending()),
            }
        )

    def _named(req: Request):
        name = req.arg("name") or ""
        for seg in store.segments():
            if seg.name == name:
                return seg
        raise HTTPError(404, f"no segment {name!r}")

    async def segment(req: Request) -> Response:
        """A segment's records, plain whatever the file's format: what
        /store/replicate takes, on nodes of this version and older ones."""
        seg = _named(req)
        try:
            data = await trio.to_thread.run_sync(store.records, seg)
        except FileNotFoundError:
            raise HTTPError(404, f"segment {seg.name} was compacted away") from None
        return Response(200, data, content_type="application/octet-stream")

    async def delete_segment(req: Request) -> Response:
        """Rebalancing: drop a segment whose records are safely elsewhere (to trash)."""
        seg = _named(req)
        trash = store.root + "/trash"
        store.fs.mkdirs(trash)
        store.trash(seg, trash, int(time.time() * 1000))
        return Response(200, b"OK\n")

    r.add("GET", "/store/segments", segments)
    r.add("GET", "/store/segment", segment)
    r.add("DELETE", "/store/segment", delete_segment)
    r.add("GET|HEAD", "/store/_query", _query)
    r.add("GET", "/store/_hits", _hits)
    r.add("GET|HEAD", "/store/query", query_handler or _query)
    r.add("POST", "/store/replicate", replicate)
    return r
