"""``/store/query`` on any store member: fan out, merge, format, stream.

The local member is queried in-process; the others through ``/store/_query``
(raw records). See ``fanout`` for the merge, the roster of members that may
hold records, and the rules for skipping members that keep failing.

An answer never looks more complete than it is: every store member that may
hold records of the queried range and does not answer (dead, left with its
data, unreachable, too slow, skipped after repeated failures, failing
mid-stream) is named in ``X-Oklog-Errors``. The status is 206 unless the
members that did answer are known to hold every record (fewer members missing
than the replication factor, with replication enforced).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypedDict
from urllib.parse import urlencode

import httpx
import trio

from oklog.cluster.swim import MemberInfo
from oklog.net.http import HTTPError, Request, Response, Start, Write
from oklog.query.answer import Verdict, errors_header, replicate_plan, verdict
from oklog.query.context import context_args, with_context
from oklog.query.engine import Matcher
from oklog.query.fanout import (
    Absent,
    Emit,
    MemberHealth,
    Observed,
    Roster,
    complete_without,
    describe,
    merge_streams,
    sanitize,
)
from oklog.query.format import NATIVE_MODES
from oklog.query.params import QueryParams
from oklog.query.plan import execute, plan_query
from oklog.records.framing import Carry
from oklog.records.record import ULID_LEN, ulid_ms
from oklog.store.api import (
    FORMAT_PIECE,
    local_query,
    param_headers,
    parse_format,
    parse_request,
    record_pieces,
    stats_headers,
)
from oklog.store.log import StoreLog

log = logging.getLogger("oklog.query.plan")

CHUNK = 1 << 20
READ_REPAIR_MAX = 20_000  # results larger than this are not checked for read repair
STREAM_IDLE = 60.0  # a member that has answered may pause this long between chunks
Formatter = Callable[[bytes], bytes] | None  # a ``format=`` mode (None: raw records)
Spawn = Callable[..., Any]  # start a background task: ``spawn(async_fn, *args)``


@dataclass(frozen=True)
class StoreMember:
    name: str
    api_addr: str | None  # None: this node


class _Failed:
    """Sent down a member's chunk channel when it fails after answering."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_Chunk = bytes | _Failed
ChunkSender = trio.MemorySendChannel[_Chunk]
ChunkReceiver = trio.MemoryReceiveChannel[_Chunk]


class _Part(Protocol):
    """One member's part of a fan-out (``_Answer`` here, ``hits._Member``)."""

    member: StoreMember
    segments: int
    size: int
    error: str
    partial: bool


class MissingMember(TypedDict):
    id: str
    reason: str


class MissingNow(TypedDict):
    """``pipeline.queries.missing`` of ``/cluster/state`` (``oklog.node.state.Missing``
    declares ``members`` as strings; the node sends these rows)."""

    members: list[MissingMember]
    complete: bool


@dataclass
class _Answer:
    member: StoreMember
    segments: int = 0
    size: int = 0
    error: str = ""
    rx: _Unwrap | None = None
    seen: dict[bytes, bytes] | None = None  # ULID -> record, for read repair
    partial: bool = False  # answered without the records ``error`` names (damaged or quarantined)

    def note(self, chunk: bytes) -> None:
        if self.seen is None:
            return
        for rec in chunk.split(b"\n")[:-1]:
            self.seen[rec[:26]] = rec
        if len(self.seen) > READ_REPAIR_MAX:
            self.seen = None


def member_query_string(req: Request) -> str:
    pairs = [(k, v) for k, vs in req.query.items() if k not in ("format", "fields") for v in vs]
    pairs.append(("format", "raw"))
    return urlencode(pairs, encoding="latin-1")


def observe_gossip(members: Iterable[MemberInfo]) -> list[Observed]:
    """Store members of a gossip view (``MemberInfo`` rows) as the roster sees them."""
    return [_observed(m) for m in members if m.serves("store")]


def _observed(m: MemberInfo) -> Observed:
    meta = m.meta if isinstance(m.meta, dict) else {}
    api = meta.get("api_addr")
    raw_stored = meta.get("store_bytes")
    segs = meta.get("store_segments")
    stored: int | None
    if isinstance(raw_stored, int) and not isinstance(raw_stored, bool):
        stored, holds = raw_stored, raw_stored > 0 or (isinstance(segs, int) and segs > 0)
    else:
        stored, holds = None, True  # unknown: it may hold anything
    raw_lo = meta.get("store_lo_ms")
    lo = raw_lo if type(raw_lo) is int else None  # not advertised (empty, or an older node): it may hold anything
    return Observed(
        m.id,
        None if m.is_self else (api if isinstance(api, str) and api else None),
        m.state,
        float(m.since),
        holds,
        stored,
        m.is_self,
        lo,
    )


def query_hi_ms(hi_excl: bytes) -> int | None:
    """The last millisecond a record below ``hi_excl`` can carry; None: open."""
    if len(hi_excl) < ULID_LEN:
        return None
    try:
        return ulid_ms(hi_excl)
    except (ValueError, KeyError, IndexError):
        return None


def too_many_queries(running: int, limit: int) -> HTTPError:
    return HTTPError(
        429,
        f"too many concurrent queries: {running} running, the limit is {limit} "
        "(-query.max-concurrent); try again shortly",
    )


class Coordinator:
    def __init__(
        self,
        store: StoreLog | None,
        limiter: trio.CapacityLimiter,
        members: Callable[[], list[StoreMember]],
        client: httpx.AsyncClient,
        member_timeout: float = 5.0,
        factor: int = 1,
        spawn: Spawn | None = None,
        *,
        view: Callable[[], list[Observed] | None] | None = None,
        assured: Callable[[], bool] | None = None,
        max_queries: int = 0,
        health: MemberHealth | None = None,
    ) -> None:
        self.factor = factor
        self.spawn = spawn  # start a background task (read repair)
        self.read_repairs = 0
        self.read_repair_records = 0
        self.store = store
        self.limiter = limiter
        self.members = members  # live store members, used when there is no gossip view
        self.view = view  # every store member gossip knows, in any state
        # True when every record is written to `factor` members before it is
        # acknowledged as stored (the consumer's strict mode).
        self.assured = assured or (lambda: False)
        self.client = client
        self.member_timeout = member_timeout
        self.max_queries = max_queries
        self.running = 0
        self.rejected = 0
        self.roster = Roster()
        self.health = health or MemberHealth()
        self.queries = 0
        self.partial = 0
        self.errors = 0  # unexpected errors caught at the query boundary
        self.members_skipped = 0  # member answers not asked for: nothing in the query's range

    # -- admission ------------------------------------------------------------------

    async def handle(self, req: Request) -> Response:
        if self.max_queries and self.running >= self.max_queries:
            self.rejected += 1
            raise too_many_queries(self.running, self.max_queries)
        self.running += 1
        try:
            resp = await self._handle(req)
        except BaseException:
            self.running -= 1
            raise
        return self._hold(resp)

    def _hold(self, resp: Response) -> Response:
        """The query slot is released when the response has been sent."""
        if resp.respond is None and resp.stream is None:
            self.running -= 1
            return resp
        inner_respond, inner_stream = resp.respond, resp.stream
        status, headers = resp.status, resp.headers

        async def respond(start: Start, write: Write) -> None:
            try:
                if inner_respond is not None:
                    await inner_respond(start, write)
                else:
                    await start(status, headers)
                    assert inner_stream is not None
                    await inner_stream(write)
            finally:
                self.running -= 1

        return Response(resp.status, headers=resp.headers, respond=respond, content_type=resp.content_type)

    # -- the members ----------------------------------------------------------------

    def _refresh(self) -> None:
        now = time.time()
        obs = self.view() if self.view is not None else None
        if not obs:
            obs = [
                Observed(m.name, m.api_addr, "alive", now, True, None, m.api_addr is None)
                for m in self.members()
            ]
        self.roster.observe(now, obs)
        self.health.prune(set(self.roster.known))

    def _plan(self, lo: bytes, hi_excl: bytes = b"~") -> tuple[list[StoreMember], list[Absent], int]:
        """Members to ask for records in ``lo`` <= ULID < ``hi_excl``, members
        that may hold some but cannot be asked, and how many were skipped
        because they advertise holding nothing that old."""
        self._refresh()
        known, absent, skipped = self.roster.plan_range(ulid_ms(lo), query_hi_ms(hi_excl))
        now = time.monotonic()
        ask = []
        for k in known:
            why = None if k.is_self else self.health.skipped(k.id, now)
            if why is not None:
                absent.append(Absent(k.id, why))
            else:
                ask.append(StoreMember(k.id, None if k.is_self else k.api_addr))
        if self.store is None:
            ask = [m for m in ask if m.api_addr is not None]
        self.members_skipped += len(skipped)
        return ask, absent, len(skipped)

    def missing(self) -> MissingNow:
        """Store members a query over all time could not ask now, and whether
        the others would still hold every record (for ``/cluster/state``; the
        dashboard shows this rather than assuming replicas cover a loss)."""
        _, absent, _ = self._plan(b"0" * 26)
        return {
            "members": [{"id": a.name, "reason": a.reason} for a in absent],
            "complete": complete_without(len(absent), self.factor, self.assured()),
        }

    def note_answers(self, answers: Iterable[_Part], missing: list[Absent], what: str) -> None:
        """Each remote member's answer goes into its health record; the members
        that failed join ``missing`` (they make the answer partial)."""
        now = time.monotonic()
        for a in answers:
            if a.member.api_addr is not None:
                if a.error and not a.partial:
                    self.health.failed(a.member.name, now, a.error)
                else:
                    self.health.succeeded(a.member.name)
            if a.error:
                how = "answered in part" if a.partial else "failed"
                log.warning("%s: member %s %s: %s", what, a.member.name, how, a.error)
                missing.append(Absent(a.member.name, a.error))

    # -- the query ------------------------------------------------------------------

    def plan_or_503(self, params: QueryParams, what: str) -> tuple[list[StoreMember], list[Absent], int]:
        """``_plan`` for a query: a membership that cannot be read is a 503,
        and so is a range no member can answer (unless all it skipped hold nothing)."""
        try:
            members, absent, skipped = self._plan(params.lo, params.hi_excl)
        except Exception as e:  # the query boundary: any failure reading gossip is a 503, logged
            self.errors += 1
            log.exception("%s: reading the store membership failed", what)
            raise HTTPError(503, f"store membership unavailable: {type(e).__name__}") from None
        if not members and not (skipped and not absent):
            self.partial += 1
            if not absent:
                raise HTTPError(503, "no live store members")
            raise HTTPError(503, "no store member can answer: " + _errors(absent))
        return members, absent, skipped

    def verdict(
        self, answers: Sequence[_Part], missing: list[Absent], members: int, skipped: int
    ) -> Verdict:
        """The status and headers of a fan-out answer (``answer.verdict``), counted."""
        v = verdict(
            answers,
            missing,
            factor=self.factor,
            assured=self.assured(),
            store_members=max(self.roster.total(), members),
            skipped=skipped,
        )
        if not v.complete:
            self.partial += 1
        return v

    def fanout_headers(
        self, answers: Sequence[_Part], missing: list[Absent], v: Verdict, params: QueryParams, started: float
    ) -> dict[str, str]:
        headers = stats_headers(
            len(answers), sum(a.segments for a in answers), sum(a.size for a in answers), len(missing), started
        )
        headers.update(param_headers(params))
        headers.update(v.headers)
        return headers

    async def _handle(self, req: Request) -> Response:
        self.queries += 1
        params, matcher = parse_request(req)  # 400 before any fan-out
        fmt = parse_format(req)
        ctx = context_args(req)  # -A/-B/-C: every record of the range is merged here
        members, absent, skipped = self.plan_or_503(params, "query")
        if ctx is None and self.store is not None and not absent and [m.api_addr for m in members] == [None]:
            resp = await local_query(self.store, self.limiter, req)  # alone: no merge needed
            resp.headers["X-Oklog-Nodes-Skipped"] = str(skipped)
            return resp
        run = _QueryRun(self, members, absent, skipped, params, matcher, fmt)
        run.qs = member_query_string(req)
        run.head = req.method == "HEAD"
        if ctx is not None:
            run.qs, run.params, run.matcher, run.emitter = with_context(req, params, matcher, ctx)
        return Response(200, respond=run.respond)

    def _emitter(self, fmt: Formatter, write: Write) -> Emit:
        """Raw merged records → formatted pieces, each written before the next
        is formatted: a slow reader holds back the merge, and through it the
        members' scans (see ``api._formatted`` for why on the loop)."""
        size = CHUNK if fmt in NATIVE_MODES else FORMAT_PIECE

        async def emit(data: bytes) -> None:
            for piece in record_pieces(data, size):
                await write(piece if fmt is None else fmt(piece))

        return emit

    def _read_repair(self, answers: list[_Answer]) -> None:
        """Records this query saw on fewer than ``factor`` members get copied to
        members that lack them, in the background."""
        if self.spawn is None:
            return
        seen = [a.seen for a in answers]
        if any(s is None for s in seen):
            return
        held = [s for s in seen if s is not None]
        holders: dict[bytes, list[int]] = {}
        for i, s in enumerate(held):
            for u in s:
                holders.setdefault(u, []).append(i)
        plan = replicate_plan(holders, len(answers), self.factor)
        if not plan.copies:
            return
        self.read_repairs += 1
        self.read_repair_records += plan.copy_count
        for i, keys in plan.copies.items():
            recs = sorted(held[holders[u][0]][u] + b"\n" for u in keys)
            self.spawn(self._replicate_to, answers[i].member, b"".join(recs))

    async def _replicate_to(self, member: StoreMember, body: bytes) -> None:
        try:
            if member.api_addr is None:
                assert self.store is not None
                await trio.to_thread.run_sync(self.store.write, body, True)
            else:
                r = await self.client.post(f"http://{member.api_addr}/store/replicate", content=body)
                r.raise_for_status()
        except Exception as e:  # noqa: BLE001 - a background copy: the next query or `oklog repair` tries again
            log.warning("read repair to %s failed: %s", member.name, describe(e))

    async def _member(self, a: _Answer, params: QueryParams, matcher: Matcher, qs: str, head: bool,
                      ready: trio.Event) -> None:
        async def work(tx: ChunkSender, rx: ChunkReceiver) -> None:
            if a.member.api_addr is None:
                await self._local(a, params, matcher, head, ready, tx, rx)
            else:
                await self._remote(a, qs, head, ready, tx, rx)

        await run_member(a, ready, work)

    async def _local(self, a: _Answer, params: QueryParams, matcher: Matcher, head: bool, ready: trio.Event,
                     tx: ChunkSender, rx: ChunkReceiver) -> None:
        assert self.store is not None
        plan = await trio.to_thread.run_sync(plan_query, self.store, params)
        a.segments, a.size = plan.segments, plan.bytes
        if plan.unreadable:  # as a member answering 206: what it can read, and missing for the verdict
            a.error, a.partial = f"{plan.unserved()}", True
        a.rx = None if head else _Unwrap(rx)
        ready.set()
        if head:
            plan.close()
            return

        async def send(chunk: bytes) -> None:
            a.note(chunk)
            await tx.send(chunk)

        await execute(self.store, matcher, plan, send, self.limiter)
        plan.check_served()  # damage found while reading: the merge hears of it as of a member failing

    async def _remote(self, a: _Answer, qs: str, head: bool, ready: trio.Event, tx: ChunkSender,
                      rx: ChunkReceiver) -> None:
        url = f"http://{a.member.api_addr}/store/_query?{qs}"
        resp = await open_member(self.client, "HEAD" if head else "GET", url, self.member_timeout)
        try:
            note_partial(a, resp)
            a.segments = _int(resp.headers.get("X-Oklog-Segments-Queried"))
            a.size = _int(resp.headers.get("X-Oklog-Max-Data-Set-Size"))
            a.rx = None if head else _Unwrap(rx)
            ready.set()
            if head:
                return
            carry = Carry()
            async for chunk in resp.aiter_raw(CHUNK):
                if whole := carry.feed(chunk):
                    a.note(whole)
                    await tx.send(whole)
            if carry.rest:
                raise RuntimeError("its answer ended mid-record")
        finally:
            await resp.aclose()


class _QueryRun:
    """One fanned-out query, from asking the members to the last merged byte:
    the status is decided once every member has begun its answer (or failed)."""

    def __init__(self, coord: Coordinator, members: list[StoreMember], absent: list[Absent], skipped: int,
                 params: QueryParams, matcher: Matcher, fmt: Formatter) -> None:
        self.coord = coord
        self.members = members
        self.absent = absent
        self.skipped = skipped
        self.params = params
        self.matcher = matcher
        self.fmt = fmt
        self.qs = ""
        self.head = False
        self.emitter: Callable[[Formatter, Write], Emit] = coord._emitter
        self.started = time.monotonic()
        self.answers: list[_Answer] = []
        self.streaming: list[_Answer] = []
        self.lost = 0
        self.status = 200

    async def respond(self, start: Start, write: Write) -> None:
        coord = self.coord
        async with trio.open_nursery() as nursery:
            await self._ask(nursery)
            missing = list(self.absent)
            coord.note_answers(self.answers, missing, "query")
            v = coord.verdict(self.answers, missing, len(self.members), self.skipped)
            self.status = v.status
            await start(v.status, coord.fanout_headers(self.answers, missing, v, self.params, self.started))
            if self.head:
                return
            self.streaming = [a for a in self.answers if a.rx is not None]
            self.lost = len(missing)
            streams = [a.rx for a in self.streaming if a.rx is not None]
            await merge_streams(streams, self.emitter(self.fmt, write), self.on_fail)
            if self.lost == 0:
                coord._read_repair(self.answers)

    async def _ask(self, nursery: trio.Nursery) -> None:
        """Start every member's answer; return once each has begun (or failed)."""
        keep = self.coord.factor > 1 and not self.head
        self.answers = [_Answer(m, seen={} if keep else None) for m in self.members]
        ready = []
        for a in self.answers:
            ev = trio.Event()
            ready.append(ev)
            nursery.start_soon(self.coord._member, a, self.params, self.matcher, self.qs, self.head, ev)
        for ev in ready:
            await ev.wait()

    def on_fail(self, i: int, exc: BaseException) -> bool:
        """A member failed mid-stream: carry on without it only if the others hold its records."""
        coord = self.coord
        a = self.streaming[i]
        a.error = describe(exc)
        a.seen = None  # no read repair from an incomplete answer
        if a.member.api_addr is not None:
            coord.health.failed(a.member.name, time.monotonic(), a.error)
        self.lost += 1
        ok = complete_without(self.lost, coord.factor, coord.assured())
        log.warning(
            "query: member %s failed mid-stream: %s (%s)",
            a.member.name,
            a.error,
            "its records are held by other members" if ok else "answer cut short",
        )
        if not ok and self.status == 200:
            coord.partial += 1
        return ok


class _Streaming(Protocol):
    error: str
    rx: _Unwrap | None


async def run_member(
    a: _Streaming, ready: trio.Event, work: Callable[[ChunkSender, ChunkReceiver], Awaitable[None]]
) -> None:
    """One member's part of a fan-out: ``work`` sets ``ready`` once the member
    has begun its answer (``a.rx`` then carries it). A failure before that is
    the member's error; after it, the merge hears of it."""
    tx, rx = trio.open_memory_channel[_Chunk](1)
    try:
        await work(tx, rx)
    except Exception as e:  # noqa: BLE001 - a member's failure is reported in the answer, never ends the query
        if not ready.is_set():
            a.error = describe(e)
            a.rx = None
        else:
            await tell_merge(tx, e)
    finally:
        ready.set()
        await tx.aclose()


async def tell_merge(tx: ChunkSender, exc: BaseException) -> None:
    """After a member's answer began: tell the merge it failed, never end its
    stream quietly (that would look like the member's last record)."""
    try:
        tx.send_nowait(_Failed(exc))
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        with trio.move_on_after(STREAM_IDLE):
            try:
                await tx.send(_Failed(exc))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


async def open_member(client: httpx.AsyncClient, method: str, url: str, member_timeout: float) -> httpx.Response:
    """A member's streamed answer, begun within ``member_timeout``; a status
    other than 200 or 206 (the records it can read: see ``note_partial``)
    raises with (a sanitized start of) the member's reason."""
    timeout = httpx.Timeout(STREAM_IDLE, connect=member_timeout)
    try:
        with trio.fail_after(member_timeout):
            resp = await client.send(client.build_request(method, url, timeout=timeout), stream=True)
    except trio.TooSlowError:
        raise RuntimeError(f"no answer within {member_timeout:g}s") from None
    if resp.status_code in (200, 206):
        return resp
    try:
        text = b""
        with trio.move_on_after(member_timeout):
            async for chunk in resp.aiter_raw():
                text += chunk
                if len(text) >= 1024:  # enough to say why; a peer's body is not kept
                    break
    finally:
        await resp.aclose()
    why = sanitize(text[:1024].decode("utf-8", "replace"), 200)
    raise RuntimeError(f"{resp.status_code} {why}".strip())


def note_partial(a: _Part, resp: httpx.Response) -> None:
    """A member's 206: it answered without the records its X-Oklog-Errors
    names (kept, safe to repeat, as its error)."""
    if resp.status_code == 206:
        a.error = sanitize(resp.headers.get("X-Oklog-Errors", ""), 300) or "a partial answer (206)"
        a.partial = True


class _Unwrap:
    """A member's chunk channel as the merge reads it: a ``_Failed`` marker
    raises the member's error there."""

    def __init__(self, rx: ChunkReceiver) -> None:
        self.rx = rx

    async def __aenter__(self) -> _Unwrap:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> None:
        await self.rx.aclose()

    def __aiter__(self) -> _Unwrap:
        return self

    async def __anext__(self) -> bytes:
        try:
            item = await self.rx.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        if isinstance(item, _Failed):
            raise item.exc
        return item


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


_errors = errors_header
