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
from oklog.query.format import FORMATS
from oklog.query.params import QueryParams, parse_params
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


def parse_request(req: Request) -> tuple[QueryParams, Matcher]:
    try:
        params = parse_params(req.query)
        return params, Matcher(params.query)
    except QueryError as e:
        raise HTTPError(400, str(e)) from None


def parse_format(req: Request):
    """``format=raw|lines|ulid|time|ulidtime|json`` (default raw: whole records)."""
    name = req.arg("format", "raw") or "raw"
    if name not in FORMATS:
        raise HTTPError(400, f"format={name!r}: use one of {', '.join(FORMATS)}")
    return FORMATS[name]


async def local_query(
    store: StoreLog, limiter: trio.CapacityLimiter, req: Request
) -> Response:
    started = time.monotonic()
    params, matcher = parse_request(req)
    fmt = parse_format(req)
    plan = await trio.to_thread.run_sync(plan_query, store, params)
    headers = stats_headers(1, plan.segments, plan.bytes, 0, started)
    if req.method == "HEAD":
        plan.close()
        return Response(200, headers=headers)

    async def stream(write: Write) -> None:
        await execute(store, matcher, plan, _chunked(write), limiter, fmt=fmt)

    return Response(200, headers=headers, stream=stream, content_type="text/plain; charset=utf-8")


def _chunked(write: Write) -> Callable[[bytes], Awaitable[None]]:
    async def emit(data: bytes) -> None:
        view = memoryview(data)
        for i in range(0, len(view), STREAM_CHUNK):
            await write(bytes(view[i : i + STREAM_CHUNK]))

    return emit


def store_router(
    store: StoreLog, limiter: trio.CapacityLimiter, query_handler=None, compaction_pending: Callable[[], bool] | None = None
) -> Router:
    r = Router()

    async def _query(req: Request) -> Response:
        return await local_query(store, limiter, req)

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
    r.add("GET|HEAD", "/store/query", query_handler or _query)
    r.add("POST", "/store/replicate", replicate)
    return r
