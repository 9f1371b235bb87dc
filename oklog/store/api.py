"""The store tier's HTTP API.

GET|HEAD /store/query    the cluster's answer (fans out to store members)
GET|HEAD /store/_query   this node's answer only
POST     /store/replicate  a sorted segment body to keep

Records are immutable once stored. Every write of records whose ULIDs were
chosen elsewhere (replication from peers, the consumer's batches, which carry
the bulk port's client ULIDs) goes through ``Immutable``: a record whose ULID
the store already holds is dropped — silently if its bytes are the same (a
retried replication), as a *conflict* otherwise (counted, logged; the stored
text is kept). ``/store/replicate`` also refuses (400) a body with a ULID more
than ``FUTURE_SKEW`` ahead of this node's clock and drops (counts) records
older than retention, which retention would remove anyway: a forged time can
neither outlive retention nor steer disk-usage eviction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable

import numpy as np
import trio

from oklog.http import HTTPError, Request, Response, Router, Write
from oklog.query.engine import Matcher, QueryError, seek
from oklog.query.format import FORMATS
from oklog.query.params import QueryParams, parse_params
from oklog.record import ULID_LEN, ms_floor, ulid_ms
from oklog.store.log import Segment, SegmentError, StoreLog, validate_records
from oklog.store.query import execute, plan_query

log = logging.getLogger("oklog.store.api")

STREAM_CHUNK = 1 << 20
FUTURE_SKEW = 300.0  # seconds a client ULID may be ahead of this node's clock
_LOOK_AGAIN = 5  # overlapping segments read again when compaction replaced one meanwhile


def ulid_window_error(body: bytes, skew: float = FUTURE_SKEW, retain: float | None = None, now: float | None = None) -> str | None:
    """Why a sorted body's ULIDs lie outside [now - retain, now + skew], or None."""
    now = time.time() if now is None else now
    first = ulid_ms(body[:ULID_LEN])
    last_start = body.rfind(b"\n", 0, len(body) - 1) + 1
    last = ulid_ms(body[last_start : last_start + ULID_LEN])
    if last > (now + skew) * 1000:
        return f"ULID {body[last_start : last_start + ULID_LEN].decode()} is {last / 1000 - now:.0f} s in the future (at most {skew:.0f} s)"
    if retain is not None and first < (now - retain) * 1000:
        return f"ULID {body[:ULID_LEN].decode()} is older than the {retain:.0f} s retention"
    return None


def _keys(buf: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ULIDs as S26, record starts, record ends incl. LF) of a record buffer."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    ends = np.flatnonzero(arr == 0x0A) + 1
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1]
    keys = np.ascontiguousarray(arr[starts[:, None] + np.arange(ULID_LEN)]).view(f"S{ULID_LEN}").ravel()
    return keys, starts, ends


def _successor(ulid: bytes) -> bytes:
    """The smallest key above ``ulid`` (an exclusive upper bound that holds it)."""
    return ulid + b"\x00"


class Immutable:
    """Writes into ``store`` that never replace a stored record (see the module doc)."""

    def __init__(self, store: StoreLog, retain: float | None = None) -> None:
        self.store = store
        self.retain = retain
        self._lock = threading.Lock()  # check and write as one step
        self.conflicts = 0
        self.duplicates_dropped = 0
        self.expired_dropped = 0
        self.refused_future = 0

    def as_dict(self) -> dict:
        return {
            "record_conflicts": self.conflicts,
            "duplicates_dropped": self.duplicates_dropped,
            "expired_dropped": self.expired_dropped,
            "refused_future": self.refused_future,
        }

    def drop_expired(self, body: bytes, now: float | None = None) -> bytes:
        """``body`` without its records older than retention (counted)."""
        if self.retain is None or not body:
            return body
        now = time.time() if now is None else now
        cutoff = ms_floor(int((now - self.retain) * 1000))
        if body[:ULID_LEN] >= cutoff:
            return body
        cut = seek(body, cutoff)
        n = body.count(b"\n", 0, cut)
        self.expired_dropped += n
        log.warning("replicate: dropped %d records older than the %.0f s retention", n, self.retain)
        return body[cut:]

    def write(self, body: bytes) -> tuple[list[Segment], int, int]:
        """Store a sorted, valid body's records the store does not hold yet.
        Returns (segments written, records already held, conflicts)."""
        with self._lock:
            kept, same, conflicts = self._drop_held(body)
            segs = self.store.write(kept, False) if kept else []
        self.duplicates_dropped += same
        self.conflicts += conflicts
        return segs, same, conflicts

    def _held(self, lo: bytes, hi_excl: bytes) -> bytes:
        for _ in range(_LOOK_AGAIN):
            try:
                return b"".join(self.store.read_range(seg, lo, hi_excl) for seg in self.store.overlapping(lo, hi_excl))
            except FileNotFoundError:
                continue  # compacted away under us: its records are in the new segment
        raise OSError("store segments kept changing while checking for held records")

    def _drop_held(self, body: bytes) -> tuple[bytes, int, int]:
        if not body:
            return body, 0, 0
        last_start = body.rfind(b"\n", 0, len(body) - 1) + 1
        held = self._held(body[:ULID_LEN], _successor(body[last_start : last_start + ULID_LEN]))
        if not held:
            return body, 0, 0
        hk, hs, he = _keys(held)
        order = np.argsort(hk, kind="stable")
        hk_sorted = hk[order]
        bk, bs, be = _keys(body)
        idx = np.searchsorted(hk_sorted, bk)
        found = idx < len(hk_sorted)
        found[found] = hk_sorted[idx[found]] == bk[found]
        if not found.any():
            return body, 0, 0
        same = conflicts = 0
        for i in np.flatnonzero(found):
            j = order[idx[i]]
            if body[bs[i] : be[i]] == held[hs[j] : he[j]]:
                same += 1
                continue
            conflicts += 1
            if conflicts <= 3:
                log.warning(
                    "record conflict: ULID %s is stored with other text; the stored text is kept",
                    body[bs[i] : bs[i] + ULID_LEN].decode("latin-1"),
                )
        if conflicts > 3:
            log.warning("record conflicts: %d in one body; stored texts kept", conflicts)
        keep = np.flatnonzero(~found)
        return b"".join(body[bs[k] : be[k]] for k in keep), same, conflicts


class LocalStore:
    """This node's store as a replication target (no HTTP hop)."""

    def __init__(self, store: StoreLog, name: str = "local", immutable: Immutable | None = None) -> None:
        self.store = store
        self.name = name
        self.immutable = immutable if immutable is not None else Immutable(store)

    async def replicate(self, data: bytes) -> None:
        await trio.to_thread.run_sync(self.immutable.write, data)


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
    store: StoreLog,
    limiter: trio.CapacityLimiter,
    query_handler=None,
    compaction_pending: Callable[[], bool] | None = None,
    immutable: Immutable | None = None,
) -> Router:
    r = Router()
    imm = immutable if immutable is not None else Immutable(store)

    async def _query(req: Request) -> Response:
        return await local_query(store, limiter, req)

    def _replicate(body: bytes) -> tuple[list[Segment], int, int, int]:
        validate_records(body)
        why = ulid_window_error(body)
        if why is not None:
            imm.refused_future += 1
            raise HTTPError(400, f"refused: {why}")
        before = imm.expired_dropped
        body = imm.drop_expired(body)
        segs, same, conflicts = imm.write(body)
        return segs, same, conflicts, imm.expired_dropped - before

    async def replicate(req: Request) -> Response:
        body = await req.body()
        try:
            segs, same, conflicts, expired = await trio.to_thread.run_sync(_replicate, body)
        except SegmentError as e:
            raise HTTPError(400, f"bad segment: {e}") from None
        store.replications_received += 1
        headers = {"X-Oklog-Held": str(same), "X-Oklog-Conflicts": str(conflicts), "X-Oklog-Expired": str(expired)}
        return Response(200, "".join(f"{seg.name}\n" for seg in segs).encode(), headers=headers)

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
        seg = _named(req)
        try:
            data = await trio.to_thread.run_sync(store.fs.read, store.path(seg))
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
