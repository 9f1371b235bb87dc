"""``/store/query`` on any store member: fan out, merge, format, stream.

The local member is queried in-process; the others through ``/store/_query``
(raw records). See ``fanout`` for the merge and the partial-result rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import trio

from oklog.http import HTTPError, Request, Response, Start, Write
from oklog.query.format import apply_chunked
from oklog.store.api import local_query, parse_format, parse_request, stats_headers
from oklog.store.fanout import merge_streams
from oklog.store.log import StoreLog
from oklog.store.query import execute, plan_query

log = logging.getLogger("oklog.store.query")

CHUNK = 1 << 20
READ_REPAIR_MAX = 20_000  # results larger than this are not checked for read repair


@dataclass(frozen=True)
class StoreMember:
    name: str
    api_addr: str | None  # None: this node


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
    pairs = [(k, v) for k, vs in req.query.items() if k != "format" for v in vs]
    pairs.append(("format", "raw"))
    return urlencode(pairs, encoding="latin-1")


class Coordinator:
    def __init__(
        self,
        store: StoreLog | None,
        limiter: trio.CapacityLimiter,
        members: Callable[[], list[StoreMember]],
        client: httpx.AsyncClient,
        member_timeout: float = 15.0,
        factor: int = 1,
        spawn=None,
    ) -> None:
        self.factor = factor
        self.spawn = spawn  # start a background task (read repair)
        self.read_repairs = 0
        self.read_repair_records = 0
        self.store = store
        self.limiter = limiter
        self.members = members
        self.client = client
        self.member_timeout = member_timeout
        self.queries = 0
        self.partial = 0
        self.errors = 0  # unexpected errors caught at the query boundary

    async def handle(self, req: Request) -> Response:
        try:
            members = self.members()
        except Exception as e:
            self.errors += 1
            log.exception("query: reading the store membership failed")
            raise HTTPError(503, f"store membership unavailable: {type(e).__name__}") from None
        self.queries += 1
        if self.store is not None and [m.api_addr for m in members] == [None]:
            return await local_query(self.store, self.limiter, req)  # alone: no merge needed
        if not members:
            raise HTTPError(503, "no live store members")
        started = time.monotonic()
        params, matcher = parse_request(req)  # 400 before any fan-out
        fmt = parse_format(req)
        qs = member_query_string(req)
        head = req.method == "HEAD"

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
                errors = sum(1 for a in answers if a.error)
                for a in answers:
                    if a.error:
                        log.warning("query: member %s failed: %s", a.member.name, a.error)
                headers = stats_headers(
                    len(answers),
                    sum(a.segments for a in answers),
                    sum(a.size for a in answers),
                    errors,
                    started,
                )
                if errors:
                    self.partial += 1
                    headers["X-Oklog-Errors"] = "; ".join(
                        f"{a.member.name}: {a.error}" for a in answers if a.error
                    )[:1000]
                status = 206 if errors else 200
                if errors == len(answers):
                    status = 502
                await start(status, headers)
                if head:
                    return
                streams = [a.rx for a in answers if a.rx is not None]

                async def fmt_async(data: bytes) -> bytes:
                    if fmt is None:
                        return data
                    return await trio.to_thread.run_sync(apply_chunked, fmt, data, limiter=self.limiter)

                async def emit(data: bytes) -> None:
                    for i in range(0, len(data), CHUNK):
                        await write(data[i : i + CHUNK])

                await merge_streams(streams, emit, fmt_async)
                if not errors:
                    self._read_repair(answers)

        return Response(200, respond=respond)

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
            log.warning("read repair to %s failed: %s", member.name, e)

    async def _member(self, a: _Answer, params, matcher, qs: str, head: bool, ready: trio.Event) -> None:
        tx, rx = trio.open_memory_channel(4)
        try:
            if a.member.api_addr is None:
                await self._local(a, params, matcher, head, ready, tx, rx)
            else:
                await self._remote(a, qs, head, ready, tx, rx)
        except Exception as e:
            if not ready.is_set():
                a.error = str(e) or type(e).__name__
                a.rx = None
                ready.set()
            else:
                raise
        finally:
            ready.set()
            await tx.aclose()

    async def _local(self, a, params, matcher, head, ready, tx, rx) -> None:
        assert self.store is not None
        plan = await trio.to_thread.run_sync(plan_query, self.store, params)
        a.segments, a.size = plan.segments, plan.bytes
        a.rx = None if head else rx
        ready.set()
        if head:
            plan.close()
            return
        async def send(chunk: bytes) -> None:
            a.note(chunk)
            await tx.send(chunk)

        async with tx:
            await execute(self.store, matcher, plan, send, self.limiter)

    async def _remote(self, a, qs, head, ready, tx, rx) -> None:
        url = f"http://{a.member.api_addr}/store/_query?{qs}"
        timeout = httpx.Timeout(self.member_timeout)
        method = "HEAD" if head else "GET"
        with trio.fail_after(self.member_timeout):
            req = self.client.build_request(method, url, timeout=timeout)
            resp = await self.client.send(req, stream=True)
        try:
            if resp.status_code != 200:
                await resp.aread()
                raise RuntimeError(f"{resp.status_code} {resp.text.strip()[:200]}")
            a.segments = int(resp.headers.get("X-Oklog-Segments-Queried", 0))
            a.size = int(resp.headers.get("X-Oklog-Max-Data-Set-Size", 0))
            a.rx = None if head else rx
            ready.set()
            if head:
                return
            async with tx:
                rest = b""
                async for chunk in resp.aiter_raw(CHUNK):
                    cut = chunk.rfind(b"\n") + 1
                    if cut == 0:
                        rest += chunk
                        continue
                    whole = rest + chunk[:cut] if rest else chunk[:cut]
                    a.note(whole)
                    await tx.send(whole)
                    rest = chunk[cut:]
                if rest:
                    raise RuntimeError(f"{a.member.name}: stream ended mid-record")
        finally:
            await resp.aclose()
