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
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import trio

from oklog.net.http import HTTPError, Request, Response, Start, Write
from oklog.query.context import context_args, with_context
from oklog.query.fanout import (
    Absent,
    MemberHealth,
    Observed,
    Roster,
    complete_without,
    describe,
    merge_streams,
    sanitize,
)
from oklog.query.format import NATIVE_MODES
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
ERRORS_MAX = 2000  # characters of X-Oklog-Errors


@dataclass(frozen=True)
class StoreMember:
    name: str
    api_addr: str | None  # None: this node


class _Failed:
    """Sent down a member's chunk channel when it fails after answering."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


@dataclass
class _Answer:
    member: StoreMember
    segments: int = 0
    size: int = 0
    error: str = ""
    rx: trio.MemoryReceiveChannel | None = None
    seen: dict[bytes, bytes] | None = None  # ULID -> record, for read repair

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


def observe_gossip(members) -> list[Observed]:
    """Store members of a gossip view (``MemberInfo`` rows) as the roster sees them."""
    out = []
    for m in members:
        if not m.serves("store"):
            continue
        meta = m.meta if isinstance(m.meta, dict) else {}
        api = meta.get("api_addr")
        stored = meta.get("store_bytes")
        segs = meta.get("store_segments")
        if isinstance(stored, int) and not isinstance(stored, bool):
            holds = stored > 0 or (isinstance(segs, int) and segs > 0)
        else:
            stored, holds = None, True  # unknown: it may hold anything
        lo = meta.get("store_lo_ms")
        if type(lo) is not int:
            lo = None  # not advertised (empty, or an older node): it may hold anything
        out.append(
            Observed(
                m.id,
                None if m.is_self else (api if isinstance(api, str) and api else None),
                m.state,
                float(m.since),
                holds,
                stored,
                m.is_self,
                lo,
            )
        )
    return out


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
        spawn=None,
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

    def missing(self) -> dict:
        """Store members a query over all time could not ask now, and whether
        the others would still hold every record (for ``/cluster/state``; the
        dashboard shows this rather than assuming replicas cover a loss)."""
        _, absent, _ = self._plan(b"0" * 26)
        return {
            "members": [{"id": a.name, "reason": a.reason} for a in absent],
            "complete": complete_without(len(absent), self.factor, self.assured()),
        }

    def note_answers(self, answers, missing: list[Absent], what: str) -> None:
        """Each remote member's answer goes into its health record; the members
        that failed join ``missing`` (they make the answer partial)."""
        now = time.monotonic()
        for a in answers:
            if a.member.api_addr is not None:
                if a.error:
                    self.health.failed(a.member.name, now, a.error)
                else:
                    self.health.succeeded(a.member.name)
            if a.error:
                log.warning("%s: member %s failed: %s", what, a.member.name, a.error)
                missing.append(Absent(a.member.name, a.error))

    # -- the query ------------------------------------------------------------------

    async def _handle(self, req: Request) -> Response:
        self.queries += 1
        params, matcher = parse_request(req)  # 400 before any fan-out
        fmt = parse_format(req)
        ctx = context_args(req)  # -A/-B/-C: every record of the range is merged here
        try:
            members, absent, skipped = self._plan(params.lo, params.hi_excl)
        except Exception as e:
            self.errors += 1
            log.exception("query: reading the store membership failed")
            raise HTTPError(503, f"store membership unavailable: {type(e).__name__}") from None
        if ctx is None and self.store is not None and not absent and [m.api_addr for m in members] == [None]:
            resp = await local_query(self.store, self.limiter, req)  # alone: no merge needed
            resp.headers["X-Oklog-Nodes-Skipped"] = str(skipped)
            return resp
        if not members and not (skipped and not absent):
            self.partial += 1
            if not absent:
                raise HTTPError(503, "no live store members")
            raise HTTPError(503, "no store member can answer: " + _errors(absent))
        started = time.monotonic()
        qs = member_query_string(req)
        head = req.method == "HEAD"
        emitter = self._emitter
        if ctx is not None:
            qs, params, matcher, emitter = with_context(req, params, matcher, ctx)
        total = max(self.roster.total(), len(members))

        async def respond(start: Start, write: Write) -> None:
            async with trio.open_nursery() as nursery:
                answers = [_Answer(m, seen={} if self.factor > 1 and not head else None) for m in members]
                ready = []
                for a in answers:
                    ev = trio.Event()
                    ready.append(ev)
                    nursery.start_soon(self._member, a, params, matcher, qs, head, ev)
                for ev in ready:
                    await ev.wait()
                missing = list(absent)
                self.note_answers(answers, missing, "query")
                complete = complete_without(len(missing), self.factor, self.assured())
                headers = stats_headers(
                    len(answers),
                    sum(a.segments for a in answers),
                    sum(a.size for a in answers),
                    len(missing),
                    started,
                )
                headers.update(param_headers(params))
                headers["X-Oklog-Store-Members"] = str(total)
                headers["X-Oklog-Nodes-Skipped"] = str(skipped)
                if missing:
                    headers["X-Oklog-Errors"] = _errors(missing)
                    headers["X-Oklog-Complete"] = "true" if complete else "false"
                status = 200 if complete else 206
                if not complete:
                    self.partial += 1
                if answers and all(a.error for a in answers):
                    status = 502
                await start(status, headers)
                if head:
                    return
                streams = [a.rx for a in answers if a.rx is not None]
                streaming = [a for a in answers if a.rx is not None]
                lost = [len(missing)]

                def on_fail(i: int, exc: BaseException) -> bool:
                    a = streaming[i]
                    a.error = describe(exc)
                    a.seen = None  # no read repair from an incomplete answer
                    if a.member.api_addr is not None:
                        self.health.failed(a.member.name, time.monotonic(), a.error)
                    lost[0] += 1
                    ok = complete_without(lost[0], self.factor, self.assured())
                    log.warning(
                        "query: member %s failed mid-stream: %s (%s)",
                        a.member.name,
                        a.error,
                        "its records are held by other members" if ok else "answer cut short",
                    )
                    if not ok and status == 200:
                        self.partial += 1
                    return ok

                await merge_streams(streams, emitter(fmt, write), on_fail)
                if lost[0] == 0:
                    self._read_repair(answers)

        return Response(200, respond=respond)

    def _emitter(self, fmt, write: Write):
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
        if self.spawn is None or any(a.seen is None for a in answers):
            return
        want = min(self.factor, len(answers))
        todo: dict[int, list[bytes]] = {}
        holders: dict[bytes, list[int]] = {}
        for i, a in enumerate(answers):
            for u in a.seen or {}:
                holders.setdefault(u, []).append(i)
        for u, hs in holders.items():
            if len(hs) >= want:
                continue
            rec = answers[hs[0]].seen[u]  # type: ignore[index]
            missing = [i for i in range(len(answers)) if i not in hs]
            for i in missing[: want - len(hs)]:
                todo.setdefault(i, []).append(rec + b"\n")
        if not todo:
            return
        self.read_repairs += 1
        self.read_repair_records += sum(len(v) for v in todo.values())
        for i, recs in todo.items():
            self.spawn(self._replicate_to, answers[i].member, b"".join(sorted(recs)))

    async def _replicate_to(self, member: StoreMember, body: bytes) -> None:
        try:
            if member.api_addr is None:
                assert self.store is not None
                await trio.to_thread.run_sync(self.store.write, body, True)
            else:
                r = await self.client.post(f"http://{member.api_addr}/store/replicate", content=body)
                r.raise_for_status()
        except Exception as e:  # the next query or `oklog repair` tries again
            log.warning("read repair to %s failed: %s", member.name, describe(e))

    async def _member(self, a: _Answer, params, matcher, qs: str, head: bool, ready: trio.Event) -> None:
        tx, rx = trio.open_memory_channel(1)
        try:
            if a.member.api_addr is None:
                await self._local(a, params, matcher, head, ready, tx, rx)
            else:
                await self._remote(a, qs, head, ready, tx, rx)
        except Exception as e:
            if not ready.is_set():
                a.error = describe(e)
                a.rx = None
                ready.set()
            else:
                # After the answer began: tell the merge, never end the stream
                # quietly (that would look like the member's last record).
                try:
                    tx.send_nowait(_Failed(e))
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    with trio.move_on_after(STREAM_IDLE):
                        try:
                            await tx.send(_Failed(e))
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass
        finally:
            ready.set()
            await tx.aclose()

    async def _local(self, a, params, matcher, head, ready, tx, rx) -> None:
        assert self.store is not None
        plan = await trio.to_thread.run_sync(plan_query, self.store, params)
        a.segments, a.size = plan.segments, plan.bytes
        if plan.unreadable:  # as a member answering 206: its records are taken from the others
            plan.close()
            a.error = f"{plan.unserved()}"
            a.rx = None
            ready.set()
            return
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

    async def _remote(self, a, qs, head, ready, tx, rx) -> None:
        url = f"http://{a.member.api_addr}/store/_query?{qs}"
        timeout = httpx.Timeout(STREAM_IDLE, connect=self.member_timeout)
        method = "HEAD" if head else "GET"
        try:
            with trio.fail_after(self.member_timeout):
                req = self.client.build_request(method, url, timeout=timeout)
                resp = await self.client.send(req, stream=True)
        except trio.TooSlowError:
            raise RuntimeError(f"no answer within {self.member_timeout:g}s") from None
        try:
            if resp.status_code != 200:
                text = b""
                with trio.move_on_after(self.member_timeout):
                    async for chunk in resp.aiter_raw():
                        text += chunk
                        if len(text) >= 1024:  # enough to say why; a peer's body is not kept
                            break
                why = sanitize(text[:1024].decode("utf-8", "replace"), 200)
                raise RuntimeError(f"{resp.status_code} {why}".strip())
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


class _Unwrap:
    """A member's chunk channel as the merge reads it: a ``_Failed`` marker
    raises the member's error there."""

    def __init__(self, rx: trio.MemoryReceiveChannel) -> None:
        self.rx = rx

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.rx.aclose()

    def __aiter__(self):
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


def _errors(missing: list[Absent]) -> str:
    """``name: reason; ...`` safe for a header (a member's error text may hold CR LF)."""
    text = "; ".join(f"{sanitize(m.name, 100)}: {sanitize(m.reason, 300)}" for m in missing)
    return sanitize(text, ERRORS_MAX)
