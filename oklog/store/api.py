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
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator

import numpy as np
import trio

from oklog.net.http import MAX_BODY, RETRY_AFTER, HTTPError, Request, Response, Router, Write
from oklog.node.state import ImmutableStats
from oklog.query.engine import Matcher, QueryError
from oklog.query.format import FORMATS, NATIVE_MODES
from oklog.query.params import MAX_KEY_EXCL, QueryParams, parse_bool, parse_params
from oklog.query.plan import Plan, execute, plan_query
from oklog.records import segfile
from oklog.records.merge import seek
from oklog.records.record import ULID_LEN, RecordError, ms_floor, ulid_ms
from oklog.store.log import DamagedSegment, Segment, SegmentError, StoreLog, validate_records

log = logging.getLogger("oklog.store.api")

STREAM_CHUNK = 1 << 20
FUTURE_SKEW = 300.0  # seconds a client ULID may be ahead of this node's clock
KEY_SLICES = 8  # a segment's ULIDs are read in this many slices of its time span
KEY_CACHE_BYTES = 24 << 20  # ULID hashes of recently checked segments (8 bytes a record: 3M records)
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


# Both bound the temporaries of checking a consumer batch (run beside the
# batch itself, on every batch that overlaps stored segments): larger steps
# were measured no faster (16 MiB body: 10.8 ms with 8 MiB / 256k, 10.2 ms
# with 2 MiB / 64k) but held 25 MiB instead of 6 MiB while they ran.
_LF_STEP = 2 << 20  # bytes scanned for LFs at a time (the scan's temporary is that size)
HASH_STEP = 1 << 16
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _offsets(buf: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends incl. LF) of the records of a buffer."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    parts = [np.flatnonzero(arr[i : i + _LF_STEP] == 0x0A) + (i + 1) for i in range(0, len(arr), _LF_STEP)]
    ends = np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1]
    return starts, ends


def _hashes(buf: bytes, starts: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each record's ULID (not ordered; equal ULIDs, equal
    hashes): its 26 bytes as four 64-bit words, mixed. 40 bytes of memory per
    record while it runs, in slices of HASH_STEP records."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    window = np.lib.stride_tricks.sliding_window_view(arr, ULID_LEN) if len(arr) >= ULID_LEN else None
    out = np.empty(len(starts), dtype=np.uint64)
    for i in range(0, len(starts), HASH_STEP):
        assert window is not None
        sl = starts[i : i + HASH_STEP]
        padded = np.zeros((len(sl), 32), dtype=np.uint8)
        padded[:, :ULID_LEN] = window[sl]
        w = padded.view(np.uint64)
        out[i : i + HASH_STEP] = (w[:, 0] * _MIX) ^ (w[:, 1] * np.uint64(0xC2B2AE3D27D4EB4F)) ^ (
            w[:, 2] * np.uint64(0x165667B19E3779F9)
        ) ^ w[:, 3]
    return out


def _ulids(buf: bytes, starts: np.ndarray) -> np.ndarray:
    """The ULIDs of the records starting at ``starts``, as S26."""
    if not len(starts):
        return np.zeros(0, dtype=f"S{ULID_LEN}")
    rows = np.lib.stride_tricks.sliding_window_view(np.frombuffer(buf, dtype=np.uint8), ULID_LEN)[starts]
    return np.ascontiguousarray(rows).view(f"S{ULID_LEN}").ravel()


def _successor(ulid: bytes) -> bytes:
    """The smallest key above ``ulid`` (an exclusive upper bound that holds it)."""
    return ulid + b"\x00"


class Immutable:
    """Writes into ``store`` that never replace a stored record (see the module doc)."""

    def __init__(self, store: StoreLog, retain: float | None = None) -> None:
        self.store = store
        self.retain = retain
        self._lock = threading.Lock()  # check and write as one step
        self._key_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._key_bytes = 0
        self._sorted: np.ndarray | None = None  # the last body's sorted hashes
        self.conflicts = 0
        self.duplicates_dropped = 0
        self.expired_dropped = 0
        self.refused_future = 0

    def as_dict(self) -> ImmutableStats:
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

    def write(self, body: bytes, encoded: bytes | None = None) -> tuple[list[Segment], int, int]:
        """Store a sorted, valid body's records the store does not hold yet
        (``encoded``: the body's segment file, kept as the file when the body
        is stored whole). Returns (segments written, records already held, conflicts)."""
        with self._lock:
            self._sorted = None
            kept, same, conflicts = self._drop_held(body)
            segs = self.store.write(kept, False, encoded if kept is body else None) if kept else []
            if len(segs) == 1 and kept is body and self._sorted is not None:
                self._remember(segs[0].name, self._sorted)  # saves reading it back for the next body
        self.duplicates_dropped += same
        self.conflicts += conflicts
        return segs, same, conflicts

    def _segment_hashes(self, seg: Segment) -> np.ndarray:
        """The sorted ULID hashes of a segment, kept for the segments checked
        most recently: consecutive bodies overlap the same recent segments,
        which are then read once, not once per body. A name carries its bytes'
        CRC, so what is kept under a name stays right."""
        hashes = self._key_cache.get(seg.name)
        if hashes is not None:
            self._key_cache.move_to_end(seg.name)
            return hashes
        # Read in slices of time, so a big segment is never copied whole.
        first, last = ulid_ms(seg.first.encode()), ulid_ms(seg.last.encode()) + 1
        step = max(1, -(-(last - first) // KEY_SLICES))
        parts = []
        for ms in range(first, last, step):
            hi = ms_floor(ms + step) if ms + step < last else b"~"
            data = self.store.read_range(seg, ms_floor(ms), hi)
            parts.append(_hashes(data, _offsets(data)[0]))
        hashes = np.sort(np.concatenate(parts))
        self._remember(seg.name, hashes)
        return hashes

    def _remember(self, name: str, hashes: np.ndarray) -> None:
        if name in self._key_cache:
            return
        self._key_cache[name] = hashes
        self._key_bytes += hashes.nbytes
        while self._key_bytes > KEY_CACHE_BYTES and len(self._key_cache) > 1:
            _, old = self._key_cache.popitem(last=False)
            self._key_bytes -= old.nbytes

    def _drop_held(self, body: bytes) -> tuple[bytes, int, int]:
        if not body:
            return body, 0, 0
        last_start = body.rfind(b"\n", 0, len(body) - 1) + 1
        lo, hi = body[:ULID_LEN], _successor(body[last_start : last_start + ULID_LEN])
        if not self.store.overlapping(lo, hi):
            return body, 0, 0
        bs, be = _offsets(body)
        bh = _hashes(body, bs)
        for _ in range(_LOOK_AGAIN):
            try:
                return self._compare(body, bs, be, bh, self.store.overlapping(lo, hi))
            except FileNotFoundError:
                continue  # compacted away under us: its records are in the new segment
        raise OSError("store segments kept changing while checking for held records")

    def _compare(
        self, body: bytes, bs: np.ndarray, be: np.ndarray, bh: np.ndarray, segs: list[Segment]
    ) -> tuple[bytes, int, int]:
        found = np.zeros(len(bh), dtype=np.bool_)
        same = conflicts = 0
        order = np.argsort(bh)
        needles = bh[order]  # sorted, the searches walk the segments' hashes in order
        self._sorted = needles
        for seg in segs:
            hk = self._segment_hashes(seg)
            idx = np.searchsorted(hk, needles)
            hit = idx < len(hk)
            hit[hit] = hk[idx[hit]] == needles[hit]
            if not hit.any():
                continue
            cand = np.zeros(len(bh), dtype=np.bool_)
            cand[order[hit]] = True
            cand &= ~found  # a record held by two segments counts once
            if not cand.any():
                continue
            # Candidates (a hash can collide) are checked against the stored records.
            where = np.flatnonzero(cand)
            bk = _ulids(body, bs[where])
            held = self.store.read_range(seg, bytes(bk[0]), _successor(bytes(bk[-1])))
            cs, ce = _offsets(held)
            ck = _ulids(held, cs)
            at = np.searchsorted(ck, bk)
            for i, key, j in zip(where, bk, at, strict=True):
                if j >= len(ck) or ck[j] != key:
                    continue
                found[i] = True
                if body[bs[i] : be[i]] == held[cs[j] : ce[j]]:
                    same += 1
                    continue
                conflicts += 1
                if conflicts <= 3:
                    log.warning(
                        "record conflict: ULID %s is stored with other text; the stored text is kept",
                        key.decode("latin-1"),
                    )
        if conflicts > 3:
            log.warning("record conflicts: %d in one body; stored texts kept", conflicts)
        if not found.any():
            return body, 0, 0
        keep = np.flatnonzero(~found)
        return b"".join(body[bs[k] : be[k]] for k in keep), same, conflicts


class LocalStore:
    """This node's store as a replication target (no HTTP hop)."""

    local = True

    def __init__(self, store: StoreLog, name: str = "local", immutable: Immutable | None = None) -> None:
        self.store = store
        self.name = name
        self.immutable = immutable if immutable is not None else Immutable(store)

    def takes_encoded(self) -> bool:
        return True  # kept as the segment file when it can be, so a batch is compressed once

    async def replicate(self, data: bytes, encoded: bytes | None = None) -> int:
        await trio.to_thread.run_sync(self.immutable.write, data, encoded)
        return 0


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
Formatter = Callable[[bytes], bytes] | None  # None: records as stored


def parse_format(req: Request) -> Formatter:
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
    status, headers = _plan_status(plan, started)
    headers.update(param_headers(params))
    if req.method == "HEAD":
        plan.close()
        return Response(status, headers=headers)

    async def stream(write: Write) -> None:
        if fmt is None or fmt in NATIVE_MODES:  # cut to the output by the scan itself
            await execute(store, matcher, plan, _chunked(write), limiter, fmt=fmt)
        else:  # formats that grow the data: formatted a piece at a time as it is sent
            await execute(store, matcher, plan, _formatted(write, fmt), limiter)
        plan.check_served()

    return Response(status, headers=headers, stream=stream, content_type="text/plain; charset=utf-8")


def _plan_status(plan: Plan, started: float) -> tuple[int, dict[str, str]]:
    """200, or 206 naming the damaged segments this node cannot serve."""
    why = plan.unserved()
    headers = stats_headers(1, plan.segments, plan.bytes, 1 if why else 0, started)
    if why is None:
        return 200, headers
    headers["X-Oklog-Errors"] = f"this node: {why}"
    return 206, headers


async def local_hits(store: StoreLog, limiter: trio.CapacityLimiter, req: Request) -> Response:
    """``/store/_hits``: this node's matches as ``ULID LF`` lines in ULID order
    (see oklog.query.count): what the coordinator merges and counts."""
    from oklog.query.count import ulid_lines
    from oklog.query.fields import by_lines

    started = time.monotonic()
    params, matcher = parse_request(req)
    by = req.arg("by")
    plan = await trio.to_thread.run_sync(plan_query, store, params)
    status, headers = _plan_status(plan, started)

    async def stream(write: Write) -> None:
        async def emit(data: bytes) -> None:
            await _chunked(write)(by_lines(data, by) if by else ulid_lines(data))

        await execute(store, matcher, plan, emit, limiter)
        plan.check_served()

    return Response(status, headers=headers, stream=stream, content_type="text/plain; charset=utf-8")


def _chunked(write: Write) -> Callable[[bytes], Awaitable[None]]:
    async def emit(data: bytes) -> None:
        if len(data) <= STREAM_CHUNK:  # a block's piece: sent as it is, not copied
            await write(data)
            return
        view = memoryview(data)
        for i in range(0, len(view), STREAM_CHUNK):
            await write(bytes(view[i : i + STREAM_CHUNK]))

    return emit


FORMAT_PIECE = 256 << 10


def _formatted(write: Write, fmt: Callable[[bytes], bytes]) -> Callable[[bytes], Awaitable[None]]:
    """Format and send about ``FORMAT_PIECE`` of records at a time, so a slow
    reader holds one formatted piece and the scan (a few units ahead) waits
    for it. On the loop: a piece is about a millisecond of the C helper, and
    formatting in worker threads spread short-lived buffers over their malloc
    arenas, which kept them resident."""

    async def emit(data: bytes) -> None:
        for piece in record_pieces(data, FORMAT_PIECE):
            await write(fmt(piece))

    return emit


def record_pieces(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` cut after the last record end before every ``size`` bytes."""
    i = 0
    while i < len(data):
        j = data.rfind(b"\n", i, i + size) + 1
        if j <= i:
            j = data.find(b"\n", i + size) + 1 or len(data)
        yield data[i:j]
        i = j


Handler = Callable[[Request], Awaitable[Response]]


def store_router(
    store: StoreLog,
    limiter: trio.CapacityLimiter,
    query_handler: Handler | None = None,
    compaction_pending: Callable[[], bool] | None = None,
    immutable: Immutable | None = None,
) -> Router:
    return StoreRoutes(store, limiter, compaction_pending, immutable).router(query_handler)


class StoreRoutes:
    """The store member's HTTP endpoints: its own part of queries and counts,
    replication into it, and its segments for rebalance and repair."""

    def __init__(
        self,
        store: StoreLog,
        limiter: trio.CapacityLimiter,
        compaction_pending: Callable[[], bool] | None = None,
        immutable: Immutable | None = None,
    ) -> None:
        self.store = store
        self.limiter = limiter
        self.compaction_pending = compaction_pending
        self.imm = immutable if immutable is not None else Immutable(store)

    def router(self, query_handler: Handler | None = None) -> Router:
        r = Router()
        r.add("GET", "/store/segments", self.segments)
        r.add("GET", "/store/segment", self.segment)
        r.add("DELETE", "/store/segment", self.delete_segment)
        r.add("GET|HEAD", "/store/_query", self.query)
        r.add("GET", "/store/_hits", self.hits)
        r.add("GET|HEAD", "/store/query", query_handler or self.query)
        r.add("POST", "/store/replicate", self.replicate)
        return r

    async def query(self, req: Request) -> Response:
        return await local_query(self.store, self.limiter, req)

    async def hits(self, req: Request) -> Response:
        return await local_hits(self.store, self.limiter, req)

    def _replicate(self, body: bytes, encoded: bytes | None = None) -> tuple[list[Segment], int, int, int]:
        """(segments written, records held already, conflicts, records expired).
        ``encoded``: the body as received, a segment file (``body`` is then
        ignored and decoded from it)."""
        imm = self.imm
        keep: bytes | None = None
        if encoded is not None:
            body, idx = segfile.decode_bounded(encoded, MAX_BODY)
            validate_records(body)
            # Kept as the file only when its index says what ours would: queries skip blocks by it.
            keep = encoded if segfile.index_describes(body, idx) else None
        else:
            validate_records(body)
        why = ulid_window_error(body)
        if why is not None:
            imm.refused_future += 1
            raise HTTPError(400, f"refused: {why}")
        before = imm.expired_dropped
        kept = imm.drop_expired(body)
        segs, same, conflicts = imm.write(kept, keep if kept is body else None)
        return segs, same, conflicts, imm.expired_dropped - before

    async def replicate(self, req: Request) -> Response:
        """Plain records, or (from members advertising ``replicate_segfile``)
        their segment file, recognised by the zstd magic: a record starts
        with a ULID, never with it."""
        body = await req.body()
        encoded = None
        if segfile.is_compressed(body[:4]):
            encoded, body = body, b""
            try:
                raw = segfile.read_index(encoded).raw_bytes
            except segfile.FormatError as e:
                raise HTTPError(400, f"bad segment file: {e}") from None
            if raw > MAX_BODY:
                raise HTTPError(413, f"segment file of {raw} bytes of records exceeds the {MAX_BODY}-byte limit")
            req.reserve(raw, "decoded replication bodies")
        try:
            segs, same, conflicts, expired = await trio.to_thread.run_sync(self._replicate, body, encoded)
        except segfile.FormatError as e:
            raise HTTPError(400, f"bad segment file: {e}") from None
        except SegmentError as e:
            raise HTTPError(400, f"bad segment: {e}") from None
        except DamagedSegment as e:
            # Ours, not the sender's: it retries (this member or another) once the scrubber salvaged it.
            raise HTTPError(503, f"{e}; retry", {"Retry-After": RETRY_AFTER}) from None
        self.store.replications_received += 1
        headers = {"X-Oklog-Held": str(same), "X-Oklog-Conflicts": str(conflicts), "X-Oklog-Expired": str(expired)}
        return Response(200, "".join(f"{seg.name}\n" for seg in segs).encode(), headers=headers)

    async def segments(self, req: Request) -> Response:
        segs = self.store.segments()
        # "size" and "bytes" are records' bytes (uncompressed): what moving a
        # segment moves (GET /store/segment sends its records, the receiver
        # compresses them its own way), so rebalance converges; disk bytes
        # are "file_size" and "file_bytes".
        return Response.json(
            {
                "segments": [
                    {"name": x.name, "first": x.first, "last": x.last, "size": x.raw_size, "file_size": x.size}
                    for x in segs
                ],
                "bytes": sum(x.raw_size for x in segs),
                "file_bytes": sum(x.size for x in segs),
                # true while maintenance has segments to validate or compact, so
                # sizes may still change (rebalance waits for false)
                "compaction_pending": bool(self.compaction_pending and self.compaction_pending()),
            }
        )

    def _named(self, req: Request) -> Segment:
        name = req.arg("name") or ""
        for seg in self.store.segments():
            if seg.name == name:
                return seg
        raise HTTPError(404, f"no segment {name!r}")

    async def segment(self, req: Request) -> Response:
        """A segment's records, plain whatever the file's format: what
        /store/replicate takes, on nodes of this version and older ones."""
        seg = self._named(req)
        try:
            data = await trio.to_thread.run_sync(self.store.records, seg)
        except FileNotFoundError:
            raise HTTPError(404, f"segment {seg.name} was compacted away") from None
        except DamagedSegment as e:
            raise HTTPError(503, f"{e}; fetch it from another member or retry", {"Retry-After": RETRY_AFTER}) from None
        return Response(200, data, content_type="application/octet-stream")

    async def delete_segment(self, req: Request) -> Response:
        """Rebalancing: drop a segment whose records are safely elsewhere (to trash)."""
        seg = self._named(req)
        trash = self.store.root + "/trash"
        self.store.fs.mkdirs(trash)
        self.store.trash(seg, trash, int(time.time() * 1000))
        return Response(200, b"OK\n")
