"""A fixed, deterministic stand-in for a node: for snapshot tests, screenshots and demos.

Every call to ``cluster_state`` advances a sample counter by one refresh (2 s of
the stub's clock), so rates and sparklines fill in exactly the same way on every
run. Queries and the tail return the same records every time.
"""

from __future__ import annotations

import asyncio
import math
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from oklog.node.state import (
    ByIngestState,
    CompactionStats,
    ConsumerStats,
    HealthWarning,
    IngestStats,
    MemberMeta,
    MemberRow,
    NodeState,
    Pipeline,
    StoreStats,
)
from oklog.records.record import encode_ulid, ulid_ms
from oklog.tui.client import EndpointMissing, Hits, NodeUnreachable, QueryRequest, RecordStream

T = TypeVar("T")
T0 = 1_795_464_000.0  # 2026-11-23T19:20:00Z
STEP = 2.0

LINES = [
    ("api", "GET /v1/users/8812 200 12ms"),
    ("api", "POST /v1/orders 201 48ms"),
    ("worker", "job 5521 done: resized 3 images in 1.2s"),
    ("api", "GET /v1/orders?limit=50 200 31ms"),
    ("auth", "login ok user=ana ip=10.0.3.7"),
    ("api", "GET /v1/users/1207 404 3ms"),
    ("worker", "job 5522 failed: timeout after 30s (will retry)"),
    ("auth", "login failed user=bob ip=10.0.9.12: bad password"),
    ("api", "DELETE /v1/sessions/77 204 5ms"),
    ("db", "slow query 812ms: SELECT * FROM orders WHERE status = 'open'"),
]


def records(n: int, start_ms: int, step_ms: int = 137) -> bytes:
    out = []
    for i in range(n):
        topic, line = LINES[i % len(LINES)]
        ulid = encode_ulid(start_ms + i * step_ms, 0x1234_5678_9ABC + i)
        out.append(ulid + b" " + topic.encode() + b" " + line.encode() + b"\n")
    return b"".join(out)


def query_body(n: int) -> bytes:
    """What every stub query scans: ``n`` records over the ten minutes before T0."""
    return records(n, int(T0 * 1000) - 600_000, max(1, 600_000 // max(1, n)))


# id, role, API address, state, incarnation, last heard (s ago), uptime (s)
MEMBERS = [
    ("ingest-1", "ingest", "10.0.0.1:7650", "alive", 3, 0.0, 86_400 * 3 + 3_725),
    ("ingest-2", "ingest", "10.0.0.2:7650", "alive", 1, 0.8, 86_400 * 3 + 3_700),
    ("store-1", "store", "10.0.0.3:7650", "alive", 2, 0.4, 86_400 * 9 + 61),
    ("store-2", "store", "10.0.0.4:7650", "suspect", 5, 7.2, 3_480),
]


def rate_at(k: int) -> float:
    return 1200 + 500 * math.sin(k / 4) + 150 * math.sin(k / 1.7)


def zeroed(td: type[T]) -> T:
    """A ``td`` with every field it always carries set to zero, empty or null
    (fields a node sends only sometimes are left out)."""
    required = td.__required_keys__  # type: ignore[attr-defined]  # a TypedDict class's attribute
    out = {k: _zero(t) for k, t in typing.get_type_hints(td).items() if k in required}  # in definition order
    return cast(T, out)


def _zero(t: Any) -> object:
    if typing.is_typeddict(t):
        return zeroed(t)
    if typing.get_origin(t) is list:
        return []
    if type(None) in typing.get_args(t):
        return None
    return {int: 0, float: 0.0, str: "", bool: False}[t]


def member_row(mid: str, role: str, addr: str, state: str, inc: int, ago: float, up: float,
               now: float, me: str) -> MemberRow:
    heard = now - (0.0 if mid == me else ago)
    return MemberRow(id=mid, role=role, gossip_addr=addr.replace(":7650", ":7659"), api_addr=addr,
                     state=state, incarnation=inc, meta_version=inc, last_heard=heard,
                     state_since=heard if state == "suspect" else now - up, self=mid == me,
                     uptime_seconds=up, meta=MemberMeta(api_addr=addr, started=now - up))


def _pipeline(now: float) -> Pipeline:
    p = zeroed(Pipeline)
    p["time"] = now
    p["recent"]["window_seconds"] = 60.0
    p["streams"]["max_subscribers"] = 64
    return p


def ingest_pipeline(now: float, records_in: float, lag: float) -> Pipeline:
    ing = zeroed(IngestStats)
    ing["segments"] = ByIngestState(active=3, flushed=2, pending=1)
    ing["bytes"] = ByIngestState(active=5_242_880, flushed=33_554_432, pending=16_777_216)
    ing["oldest_flushed_age_seconds"] = lag
    ing["records_in"] = int(records_in)
    ing["bytes_in"] = int(records_in * 112)
    ing["flushes"], ing["commits"] = 1_873, 1_870
    ing["connections"], ing["connections_total"] = 3, 41
    p = _pipeline(now)
    p["ingest"] = ing
    return p


def store_pipeline(now: float, failed: int, failing: str = "") -> Pipeline:
    p = _pipeline(now)
    if failing:
        p["warnings"] = [HealthWarning(
            level="error", kind="replicate", subject=failing,
            text=f"replication to store member {failing} failing (3 failures in the last 1m, "
                 "last 4s ago): timed out after 10s")]
        p["recent"]["failures"]["replicate"] = 3
    st = p["store"] = zeroed(StoreStats)
    st["segments"], st["bytes"] = 214, 27_487_790_694
    st["segments_written"], st["bytes_written"] = 3_112, 61_203_111_936
    st["replications_received"] = 1_556
    c = p["consumer"] = zeroed(ConsumerStats)
    c["state"], c["batches"], c["segments_consumed"] = "gathering", 1_556, 3_740
    c["bytes_consumed"], c["replications_ok"], c["replications_failed"] = 30_601_555_968, 1_553 - failed, failed
    c["last_error"] = "store-2: timed out after 10s" if failed else ""
    c["factor_effective"] = 2
    comp = p["compaction"] = zeroed(CompactionStats)
    comp["runs"], comp["merges"], comp["duplicates_dropped_bytes"] = 97, 388, 1_204_000
    comp["segments_in"], comp["segments_out"] = 1_552, 388
    comp["bytes_in"], comp["bytes_out"] = 24_696_061_952, 23_494_885_376
    comp["trashed"], comp["trash_bytes"], comp["purged"] = 12, 1_503_238_553, 40
    return p


class StubClient:
    def __init__(self, node: str = "10.0.0.1:7650", *, tail_missing: bool = False,
                 query_records: int = 40, query_errors: str = "") -> None:
        self.node = node
        self.query_errors = query_errors  # non-empty: queries answer 206 with this X-Oklog-Errors
        self.query_records = query_records
        self.tail_filters: list[tuple[str, bool]] = []
        self.k = 0
        self.records_in = 4_100_000.0
        self.tail_missing = tail_missing
        self.down = False  # True: every cluster_state call fails like a dead node

    def now(self) -> float:
        return T0 + STEP * self.k

    async def aclose(self) -> None:
        return None

    async def cluster_state(self) -> NodeState:
        """The document a gossip node answers: every member, this node's own
        pipeline only (the app fetches the others' from them, as from real nodes)."""
        self.k += 1
        if self.down:
            raise NodeUnreachable("ConnectError: [Errno 111] Connection refused")
        now = self.now()
        self.records_in += rate_at(self.k) * STEP
        lag = 1.5 + (self.k % 3) * 0.4
        me = next((m for m in MEMBERS if m[2] == self.node), MEMBERS[0])
        if me[0] == "ingest-1":
            pipeline = ingest_pipeline(now, self.records_in, lag)
        elif me[0] == "ingest-2":
            pipeline = ingest_pipeline(now, self.records_in * 0.8, 0.9)
        else:
            pipeline = store_pipeline(now, failed=0 if me[0] == "store-1" else 3,
                                      failing="store-2" if me[0] == "store-1" else "")
        return NodeState(self=me[0], role=me[1], uptime_seconds=me[6], replication_factor=2,
                         members=[member_row(*m, now, me[0]) for m in MEMBERS], pipeline=pipeline)

    @asynccontextmanager
    async def query(self, request: QueryRequest, now: float | None = None
                    ) -> AsyncIterator[RecordStream]:
        body = query_body(self.query_records)
        wanted = [r for r in body.splitlines(keepends=True) if request.q.encode() in r.split(b" ", 2)[2]]
        step = 8 if len(wanted) < 1000 else 997  # buffers that do not line up with pages
        stats = {"nodes queried": "2", "segments queried": "14", "max data set size": "1879048192",
                 "error count": "0", "duration": "0.004121s"}
        if self.query_errors:
            stats = stats | {"error count": "1", "errors": self.query_errors}
        yield RecordStream(206 if self.query_errors else 200, stats, _in_buffers(wanted, step))

    async def hits(self, request: QueryRequest, step: str, now: float | None = None) -> Hits:
        """The stub query's records per bucket, within the request's from/to."""
        from oklog.query.params import parse_bound
        from oklog.units import parse_duration

        step_ms = round(parse_duration(step) * 1000)
        p = request.params(now)
        lo = parse_bound(str(p["from"]), upper=False) if "from" in p else b"0" * 26
        hi = parse_bound(str(p["to"]), upper=True) if "to" in p else b"\x7f"
        buckets: dict[int, int] = {}
        total = 0
        for r in query_body(self.query_records).splitlines():
            if request.q.encode() in r.split(b" ", 2)[2] and lo <= r[:26] < hi:
                k = ulid_ms(r[:26]) // step_ms * step_ms
                buckets[k] = buckets.get(k, 0) + 1
                total += 1
        await asyncio.sleep(0)
        complete = not self.query_errors
        return Hits(total, step_ms, buckets, complete, self.query_errors, 200 if complete else 206)

    @asynccontextmanager
    async def tail(self, q: str, regex: bool) -> AsyncIterator[RecordStream]:
        if self.tail_missing:
            raise EndpointMissing(404, "not found")
        self.tail_filters.append((q, regex))
        t = int(T0 * 1000)
        lines = [r for r in records(25, t - 5_000, 200).splitlines(keepends=True)
                 if q.encode() in r.split(b" ", 2)[2]]
        # A line with terminal escapes and a bidi override, then the node's notice
        # that it dropped records for this stream.
        lines.append(encode_ulid(t, 1) + b" worker build \x1b[32mOK\x1b[0m\r \xe2\x80\xaetxt.exe\n")
        lines.append(encode_ulid(t, 2) + b" oklog oklog: stream dropped 120 records (client too slow)\n")
        yield RecordStream(200, {}, _live(b"".join(lines)))


async def _in_buffers(lines: list[bytes], step: int) -> AsyncIterator[bytes]:
    """``lines`` as a streamed answer: ``step`` records a buffer."""
    for i in range(0, len(lines), step):
        yield b"".join(lines[i : i + step])
        await asyncio.sleep(0)


async def _live(body: bytes) -> AsyncIterator[bytes]:
    """A live stream: ``body``, then nothing more, but not over."""
    yield body
    await asyncio.Event().wait()
    yield b""


class StubClientFactory:
    """node → StubClient, remembering each so tests can look at them."""

    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.clients: dict[str, StubClient] = {}

    def __call__(self, node: str) -> StubClient:
        c = self.clients.get(node) or StubClient(node, **self.kw)
        self.clients[node] = c
        return c

    def clock(self) -> float:
        return max((c.now() for c in self.clients.values()), default=T0)
