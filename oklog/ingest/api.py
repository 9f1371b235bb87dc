"""The ingest tier's HTTP API (paths and semantics of the original system).

GET  /ingest/next         id of the oldest flushed segment, now pending; 404 if none
GET  /ingest/read?id=     the pending segment's records
GET  /ingest/pending?id=  200 while the segment is pending (handed out, unsettled); 404 if not
POST /ingest/commit?id=   the store tier has it: delete
POST /ingest/failed?id=   the store tier gave up: back to flushed
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from oklog.ingest.log import IngestLog
from oklog.net.http import Handler, HTTPError, Request, Response, Router


def _id(req: Request) -> str:
    seg_id = req.arg("id")
    if not seg_id:
        raise HTTPError(400, "missing id")
    return seg_id


class LocalIngest:
    """This node's ingest log as a consumer source (no HTTP hop)."""

    def __init__(self, log: IngestLog, name: str = "local") -> None:
        self.log = log
        self.name = name

    async def next(self) -> str | None:
        return self.log.next()

    async def read(self, seg_id: str) -> bytes:
        return await trio.to_thread.run_sync(self.log.read, seg_id)

    async def pending(self, seg_id: str) -> bool:
        return self.log.pending(seg_id)

    async def commit(self, seg_id: str) -> None:
        self.log.commit(seg_id)

    async def failed(self, seg_id: str) -> None:
        self.log.failed(seg_id)


def ingest_router(log: IngestLog) -> Router:
    r = Router()

    async def next_(req: Request) -> Response:
        seg_id = log.next()
        if seg_id is None:
            raise HTTPError(404, "no flushed segments")
        return Response(200, seg_id.encode())

    async def read(req: Request) -> Response:
        seg_id = _id(req)
        try:
            data = await trio.to_thread.run_sync(log.read, seg_id)
        except (KeyError, FileNotFoundError):
            raise HTTPError(404, f"segment {seg_id} is not pending") from None
        return Response(200, data, content_type="application/octet-stream")

    async def pending(req: Request) -> Response:
        seg_id = _id(req)
        if not log.pending(seg_id):
            raise HTTPError(404, f"segment {seg_id} is not pending")
        return Response(200, b"pending\n")

    def _transition(fn: Callable[[str], None]) -> Handler:
        async def handler(req: Request) -> Response:
            seg_id = _id(req)
            try:
                fn(seg_id)
            except (KeyError, FileNotFoundError):
                raise HTTPError(404, f"segment {seg_id} is not pending") from None
            return Response(200, b"OK\n")

        return handler

    r.add("GET", "/ingest/next", next_)
    r.add("GET", "/ingest/read", read)
    r.add("GET", "/ingest/pending", pending)
    r.add("POST", "/ingest/commit", _transition(log.commit))
    r.add("POST", "/ingest/failed", _transition(log.failed))
    return r
