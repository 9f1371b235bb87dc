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

import json
import logging
import time
from typing import Any

import httpx
import trio

from oklog.net.http import HTTPError, Request, Response
from oklog.query.coordinator import (
    CHUNK,
    STREAM_IDLE,
    Coordinator,
    StoreMember,
    _errors,
    _Failed,
    _int,
    _Unwrap,
    member_query_string,
    too_many_queries,
)
from oklog.query.count import ULID_LINE, Tally, rfc3339
from oklog.query.fanout import complete_without, describe, merge_streams, sanitize
from oklog.query.plan import Plan, execute, plan_query
from oklog.records.record import ulid_ms
from oklog.store.api import param_headers, parse_request, stats_headers
from oklog.units import parse_duration

log = logging.getLogger("oklog.query.plan")

MAX_STEP_BUCKETS = 1_000_000  # a step so small the answer would be enormous is refused


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
    values: dict[bytes, list] = {}
    coord.queries += 1
    try:
        members, absent, skipped_members = coord._plan(params.lo, params.hi_excl)
    except Exception as e:
        coord.errors += 1
        log.exception("hits: reading the store membership failed")
        raise HTTPError(503, f"store membership unavailable: {type(e).__name__}") from None
    if not members and not (skipped_members and not absent):
        coord.partial += 1
        if not absent:
            raise HTTPError(503, "no live store members")
        raise HTTPError(503, "no store member can answer: " + _errors(absent))
    tally = Tally(step)
    req.query.pop("skipped", None)  # the second pass below asks for those
    qs = member_query_string(req)
    answers = [_Member(m) for m in members]
    missing = list(absent)

    async def emit(data: bytes) -> None:
        if by:
            tally.add_by(data, values)
        else:
            tally.add(data)

    await _fan_out(coord, answers, params, matcher, qs, emit, None if by else tally)
    skipped = None
    if params.where and not by:
        # Lines that were neither JSON nor logfmt, counted exactly as matches
        # are: a second pass whose members send the skipped records' ULIDs.
        skipped = Tally()
        sk_answers = [_Member(m) for m in members]
        await _fan_out(
            coord, sk_answers, params, _skipping(matcher), qs + "&skipped=true", _adder(skipped), skipped
        )
        for a, b in zip(answers, sk_answers, strict=True):
            a.error = a.error or b.error
    coord.note_answers(answers, missing, "hits")
    complete = complete_without(len(missing), coord.factor, coord.assured())
    headers = stats_headers(
        len(answers), sum(a.segments for a in answers), sum(a.size for a in answers), len(missing), started
    )
    headers.update(param_headers(params))
    headers["X-Oklog-Store-Members"] = str(max(coord.roster.total(), len(members)))
    headers["X-Oklog-Nodes-Skipped"] = str(skipped_members)
    body = tally.as_dict()
    if by:
        ranked = sorted(values.items(), key=lambda kv: (-kv[1][0], kv[0]))
        body["by"] = by
        body["values"] = [
            {
                "value": json.loads(v),
                "count": c,
                "bytes": size,
                "first": rfc3339(ulid_ms(first)),
                "last": rfc3339(ulid_ms(last)),
            }
            for v, (c, size, first, last) in ranked[: top or None]
        ]
    if skipped is not None:
        body["skipped"] = skipped.total
    body["complete"] = complete
    if missing:
        headers["X-Oklog-Errors"] = body["errors"] = _errors(missing)
        headers["X-Oklog-Complete"] = "true" if complete else "false"
    status = 200 if complete else 206
    if not complete:
        coord.partial += 1
    if answers and all(a.error and not a.partial for a in answers):
        raise HTTPError(502, "no store member answered: " + _errors(missing))
    resp = Response.json(body, status)
    resp.headers.update(headers)
    return resp


async def _fan_out(
    coord: Coordinator, answers: list[_Member], params, matcher, qs: str, emit, tally: Tally | None = None
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

        await merge_streams([a.rx for a in streaming], emit, on_fail)


def _adder(tally: Tally):
    async def emit(data: bytes) -> None:
        tally.add(data)

    return emit


def _skipping(matcher):
    """The matcher of a -where query that keeps the skipped records instead."""
    import copy

    m = copy.copy(matcher)
    m.where = copy.copy(matcher.where)
    m.where.want_skipped = True
    return m


def qs_by(qs: str) -> str:
    from urllib.parse import parse_qs

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
        self.rx: Any = None  # an _Unwrap of the chunk channel once the member answers
        # Answered, but without the records of quarantined segments (``error``
        # says which): counted as missing, not as a member that failed.
        self.partial = False

    def lacks_quarantined(self, plan: Plan) -> None:
        if plan.quarantined and not plan.damaged and not self.error:
            self.error, self.partial = f"{plan.unserved()}", True


async def _count_local(coord: Coordinator, a: _Member, params, matcher, tally: Tally) -> None:
    """As _ask for this node's store, counted in place: a damaged segment or
    block makes this member's answer a failure (a partial answer), as there."""
    from oklog.store.localcount import count_plan

    assert coord.store is not None
    try:
        plan = await trio.to_thread.run_sync(plan_query, coord.store, params)
        a.segments, a.size = plan.segments, plan.bytes
        if plan.unreadable > len(plan.quarantined):
            plan.close()
            a.error = f"{plan.unserved()}"
            return
        try:
            await count_plan(plan, matcher, tally, coord.limiter)
        finally:
            plan.close()
        if plan.damaged:
            a.error = f"{plan.unserved()}"
        a.lacks_quarantined(plan)
    except Exception as e:
        a.error = describe(e)


async def _ask(coord: Coordinator, a: _Member, params, matcher, qs: str, ready: trio.Event) -> None:
    tx, rx = trio.open_memory_channel(1)
    try:
        if a.member.api_addr is None:
            assert coord.store is not None
            store = coord.store
            plan = await trio.to_thread.run_sync(plan_query, store, params)
            a.segments, a.size = plan.segments, plan.bytes
            if plan.unreadable > len(plan.quarantined):  # as a member answering 206: counted from the others
                plan.close()
                a.error = f"{plan.unserved()}"
                return
            a.rx = _Unwrap(rx)
            ready.set()
            from oklog.query.count import ulid_lines
            from oklog.query.fields import by_lines

            by = qs_by(qs)

            async def send(chunk: bytes) -> None:
                await tx.send(by_lines(chunk, by) if by else ulid_lines(chunk))

            await execute(store, matcher, plan, send, coord.limiter)
            plan.check_served()
            a.lacks_quarantined(plan)
        else:
            await _remote(coord, a, qs, ready, tx, rx)
    except Exception as e:
        if not ready.is_set():
            a.error = describe(e)
            a.rx = None
        else:
            with trio.move_on_after(STREAM_IDLE):
                try:
                    await tx.send(_Failed(e))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
    finally:
        ready.set()
        await tx.aclose()


async def _remote(coord: Coordinator, a: _Member, qs: str, ready: trio.Event, tx, rx) -> None:
    url = f"http://{a.member.api_addr}/store/_hits?{qs}"
    timeout = httpx.Timeout(STREAM_IDLE, connect=coord.member_timeout)
    try:
        with trio.fail_after(coord.member_timeout):
            resp = await coord.client.send(coord.client.build_request("GET", url, timeout=timeout), stream=True)
    except trio.TooSlowError:
        raise RuntimeError(f"no answer within {coord.member_timeout:g}s") from None
    try:
        if resp.status_code != 200:
            text = b""
            with trio.move_on_after(coord.member_timeout):
                async for chunk in resp.aiter_raw():
                    text += chunk
                    if len(text) >= 1024:
                        break
            why = sanitize(text[:1024].decode("utf-8", "replace"), 200)
            raise RuntimeError(f"{resp.status_code} {why}".strip())
        a.segments = _int(resp.headers.get("X-Oklog-Segments-Queried"))
        a.size = _int(resp.headers.get("X-Oklog-Max-Data-Set-Size"))
        a.rx = _Unwrap(rx)
        ready.set()
        rest = b""
        by = bool(qs_by(qs))
        async for chunk in resp.aiter_raw(CHUNK):
            data = rest + chunk if rest else chunk
            if by:  # ULID SP VALUE LF
                cut = data.rfind(b"\n") + 1
            else:
                cut = len(data) - len(data) % ULID_LINE
                if data[ULID_LINE - 1 : cut : ULID_LINE].count(b"\n") != cut // ULID_LINE:
                    raise RuntimeError("its answer is not ULID lines")
            if cut:
                await tx.send(data[:cut])
            rest = data[cut:]
        if rest:
            raise RuntimeError("its answer ended mid-line")
    finally:
        await resp.aclose()
