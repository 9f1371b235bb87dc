"""``GET /store/hits``: how many records match, in total and per time bucket,
cluster-wide and exact.

When this node's store is the only member answering, it counts in place
(oklog.store.localcount): one store's scan already keeps each record once.

Members answer ``/store/_hits`` with their matches' ULIDs (``ULID LF`` lines
in ULID order, 27 bytes a match instead of the record); this node merges the
streams as it merges records (``fanout.merge_streams``: a ULID held by several
replicas is kept once) and counts what comes out, so a record counts once
however many members hold it, and whichever of them answer. Members that do
not answer are reported exactly as for ``/store/query``: 206 with
``X-Oklog-Errors`` unless the ones that answered are known to hold every record.

Parameters: those of ``/store/query`` (from, to, q, regex, topic) and ``step``
(a duration: 1m, 30s, 500ms; absent: the total only).
Body: ``{"total": N, "step_ms": S, "buckets": [{"time", "ms", "count"}],
"complete": bool, "errors": "..."}``; buckets are aligned to multiples of the
step since the epoch, empty ones are left out.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from urllib.parse import parse_qs

import trio

from oklog.net.http import HTTPError, Request, Response
from oklog.query.coordinator import (
    CHUNK,
    ChunkReceiver,
    ChunkSender,
    Coordinator,
    StoreMember,
    _errors,
    _int,
    _Unwrap,
    member_query_string,
    note_partial,
    open_member,
    run_member,
    too_many_queries,
)
from oklog.query.count import ULID_LINE, Tally, rfc3339, ulid_lines
from oklog.query.engine import Matcher
from oklog.query.fanout import Emit, describe, merge_streams
from oklog.query.fields import by_lines
from oklog.query.params import QueryParams
from oklog.query.plan import Plan, execute, plan_query
from oklog.query.terms import TermsMatcher
from oklog.records.record import ulid_ms
from oklog.store.api import parse_request
from oklog.units import parse_duration

log = logging.getLogger("oklog.query.plan")

MAX_STEP_BUCKETS = 1_000_000  # a step so small the answer would be enormous is refused

# value (JSON text) -> [count, bytes, first ULID, last ULID], as ``Tally.add_by`` keeps them
ByValues = dict[bytes, list[int | bytes]]


def parse_step(text: str | None) -> int:
    if not text:
        return 0
    try:
        step = parse_duration(text)
    except ValueError:
        raise HTTPError(400, f"step={text!r}: use a duration (30s, 1m, 1h, 500ms)") from None
    ms = round(step * 1000)
    if ms < 1:
        raise HTTPError(400, f"step={text!r}: must be at least 1ms")
    return ms


async def cluster_topics(coord: Coordinator, req: Request) -> Response:
    """``GET /store/topics``: every topic with its records, bytes and first and
    last time, cluster-wide (``/store/hits?by=topic``)."""
    req.query["by"] = ["topic"]
    for k in ("step", "top", "where", "not", "i", "q"):
        req.query.pop(k, None)
    return await cluster_hits(coord, req)


async def cluster_hits(coord: Coordinator, req: Request) -> Response:
    """Admitted as queries are (``-query.max-concurrent``): a slot until the answer is ready."""
    if coord.max_queries and coord.running >= coord.max_queries:
        coord.rejected += 1
        raise too_many_queries(coord.running, coord.max_queries)
    coord.running += 1
    try:
        return await _hits(coord, req)
    finally:
        coord.running -= 1


async def _hits(coord: Coordinator, req: Request) -> Response:
    started = time.monotonic()
    params, matcher = parse_request(req)  # 400 before any fan-out
    step = parse_step(req.arg("step"))
    by = req.arg("by") or ""
    top = _top(req.arg("top"))
    coord.queries += 1
    members, absent, skipped_members = coord.plan_or_503(params, "hits")
    req.query.pop("skipped", None)  # the second pass below asks for those
    count = _Count(coord, members, params, matcher, member_query_string(req))
    tally = Tally(step)
    body: dict[str, object]
    if by:
        values = await count.by_value(tally)
        body = tally.as_dict() | {"by": by, "values": _ranked(values, top)}
    else:
        skipped = await count.matches(tally)
        body = tally.as_dict()
        if skipped is not None:
            body["skipped"] = skipped.total
    missing = list(absent)
    coord.note_answers(count.answers, missing, "hits")
    v = coord.verdict(count.answers, missing, len(members), skipped_members)
    headers = coord.fanout_headers(count.answers, missing, v, params, started)
    body["complete"] = v.complete
    if missing:
        body["errors"] = v.errors
    status = v.status
    if status == 502:
        raise HTTPError(502, "no store member answered: " + _errors(missing))
    resp = Response.json(body, status)
    resp.headers.update(headers)
    return resp


def _ranked(values: ByValues, top: int) -> list[dict[str, object]]:
    """``by=`` values, the most frequent first (``top`` of them; 0: all)."""
    ranked = sorted(values.items(), key=lambda kv: (-int(kv[1][0]), kv[0]))
    out: list[dict[str, object]] = []
    for v, (c, size, first, last) in ranked[: top or None]:
        assert isinstance(first, bytes) and isinstance(last, bytes)
        out.append(
            {"value": json.loads(v), "count": c, "bytes": size,
             "first": rfc3339(ulid_ms(first)), "last": rfc3339(ulid_ms(last))}
        )
    return out


class _Count:
    """The passes of one ``/store/hits`` over its members; ``answers`` holds
    each member's part (a failure in any pass fails the member)."""

    def __init__(self, coord: Coordinator, members: list[StoreMember], params: QueryParams, matcher: Matcher,
                 qs: str) -> None:
        self.coord = coord
        self.members = members
        self.params = params
        self.matcher = matcher
        self.qs = qs
        self.answers = [_Member(m) for m in members]

    async def by_value(self, tally: Tally) -> ByValues:
        """Matches counted per value of the ``by=`` field (``tally`` keeps no count)."""
        values: ByValues = {}

        async def emit(data: bytes) -> None:
            tally.add_by(data, values)

        await _fan_out(self.coord, self.answers, self.params, self.matcher, self.qs, emit, None)
        return values

    async def matches(self, tally: Tally) -> Tally | None:
        """Count the matches into ``tally``; with ``-where``, the count of
        lines that were neither JSON nor logfmt, counted exactly as matches
        are: a second pass whose members send the skipped records' ULIDs."""
        await _fan_out(self.coord, self.answers, self.params, self.matcher, self.qs, _adder(tally), tally)
        if not self.params.where:
            return None
        skipped = Tally()
        again = [_Member(m) for m in self.members]
        await _fan_out(
            self.coord, again, self.params, _skipping(self.matcher), self.qs + "&skipped=true", _adder(skipped),
            skipped,
        )
        for a, b in zip(self.answers, again, strict=True):
            a.error = a.error or b.error
        return skipped


async def _fan_out(
    coord: Coordinator, answers: list[_Member], params: QueryParams, matcher: Matcher, qs: str, emit: Emit,
    tally: Tally | None = None,
) -> None:
    if tally is not None and len(answers) == 1 and answers[0].member.api_addr is None:
        # this node's store alone answers: nothing to tell copies apart from,
        # its own scan keeps each record once (oklog.store.localcount)
        await _count_local(coord, answers[0], params, matcher, tally)
        return
    async with trio.open_nursery() as nursery:
        ready = []
        for a in answers:
            ev = trio.Event()
            ready.append(ev)
            nursery.start_soon(_ask, coord, a, params, matcher, qs, ev)
        for ev in ready:
            await ev.wait()
        streaming = [a for a in answers if a.rx is not None]

        def on_fail(i: int, exc: BaseException) -> bool:
            streaming[i].error = describe(exc)
            return True  # counted as missing: the status says what it means

        await merge_streams([a.rx for a in streaming if a.rx is not None], emit, on_fail)


def _adder(tally: Tally) -> Emit:
    async def emit(data: bytes) -> None:
        tally.add(data)

    return emit


def _skipping(matcher: Matcher) -> Matcher:
    """The matcher of a -where query that keeps the skipped records instead."""
    if not isinstance(matcher, TermsMatcher) or matcher.where is None:
        raise TypeError("a -where query's matcher holds its WhereFilter")
    m = copy.copy(matcher)
    m.where = copy.copy(matcher.where)
    m.where.want_skipped = True
    return m


def qs_by(qs: str) -> str:
    return (parse_qs(qs).get("by") or [""])[-1]


def _top(text: str | None) -> int:
    if not text:
        return 0
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise HTTPError(400, f"top={text!r}: use a count (0: all)")
    return n


class _Member:
    def __init__(self, member: StoreMember) -> None:
        self.member = member
        self.segments = 0
        self.size = 0
        self.error = ""
        self.rx: _Unwrap | None = None  # the chunk channel once the member answers
        # Answered, but without the records of damaged or quarantined segments
        # (``error`` says which): counted as missing, not as a member that failed.
        self.partial = False

    def lacks_unreadable(self, plan: Plan) -> None:
        """Segments of the range it cannot read make its answer partial: it
        counts the rest (as a member answering 206)."""
        if plan.unreadable and not self.error:
            self.error, self.partial = f"{plan.unserved()}", True


async def _count_local(coord: Coordinator, a: _Member, params: QueryParams, matcher: Matcher, tally: Tally) -> None:
    """As _ask for this node's store, counted in place: a damaged segment or
    block makes this member's answer a failure (a partial answer), as there."""
    from oklog.store.localcount import count_plan

    assert coord.store is not None
    try:
        plan = await trio.to_thread.run_sync(plan_query, coord.store, params)
        a.segments, a.size = plan.segments, plan.bytes
        try:
            await count_plan(plan, matcher, tally, coord.limiter)
        finally:
            plan.close()
        if plan.damaged:
            a.error = f"{plan.unserved()}"
        a.lacks_unreadable(plan)
    except Exception as e:  # noqa: BLE001 - this member's failure makes the answer partial, never ends the node
        a.error = describe(e)


async def _ask(coord: Coordinator, a: _Member, params: QueryParams, matcher: Matcher, qs: str,
               ready: trio.Event) -> None:
    async def work(tx: ChunkSender, rx: ChunkReceiver) -> None:
        if a.member.api_addr is None:
            await _local(coord, a, params, matcher, qs, ready, tx, rx)
        else:
            await _remote(coord, a, qs, ready, tx, rx)

    await run_member(a, ready, work)


async def _local(coord: Coordinator, a: _Member, params: QueryParams, matcher: Matcher, qs: str,
                 ready: trio.Event, tx: ChunkSender, rx: ChunkReceiver) -> None:
    assert coord.store is not None
    store = coord.store
    plan = await trio.to_thread.run_sync(plan_query, store, params)
    a.segments, a.size = plan.segments, plan.bytes
    a.lacks_unreadable(plan)  # as a member answering 206: what it can read, and missing for the verdict
    a.rx = _Unwrap(rx)
    ready.set()
    by = qs_by(qs)

    async def send(chunk: bytes) -> None:
        await tx.send(by_lines(chunk, by) if by else ulid_lines(chunk))

    await execute(store, matcher, plan, send, coord.limiter)
    plan.check_served()


async def _remote(coord: Coordinator, a: _Member, qs: str, ready: trio.Event, tx: ChunkSender,
                  rx: ChunkReceiver) -> None:
    url = f"http://{a.member.api_addr}/store/_hits?{qs}"
    resp = await open_member(coord.client, "GET", url, coord.member_timeout)
    try:
        note_partial(a, resp)
        a.segments = _int(resp.headers.get("X-Oklog-Segments-Queried"))
        a.size = _int(resp.headers.get("X-Oklog-Max-Data-Set-Size"))
        a.rx = _Unwrap(rx)
        ready.set()
        lines = _Lines(bool(qs_by(qs)))
        async for chunk in resp.aiter_raw(CHUNK):
            if whole := lines.feed(chunk):
                await tx.send(whole)
        if lines.rest:
            raise RuntimeError("its answer ended mid-line")
    finally:
        await resp.aclose()


class _Lines:
    """A member's ``/store/_hits`` answer cut into whole lines: ``ULID LF``
    (checked: each line exactly that long), or ``ULID SP SIZE SP VALUE LF`` with ``by``."""

    def __init__(self, by: bool) -> None:
        self.by = by
        self.rest = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self.rest + chunk if self.rest else chunk
        if self.by:
            cut = data.rfind(b"\n") + 1
        else:
            cut = len(data) - len(data) % ULID_LINE
            if data[ULID_LINE - 1 : cut : ULID_LINE].count(b"\n") != cut // ULID_LINE:
                raise RuntimeError("its answer is not ULID lines")
        self.rest = data[cut:]
        return data[:cut]
