"""The coordinator in-process: remote members are an httpx MockTransport
(each fake member answers, fails, stalls or tears a record), this node holds
no store. Asserts the status, the X-Oklog-* headers and the body."""

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import trio

from oklog.net.http import Request, Response
from oklog.query.coordinator import Coordinator, StoreMember
from oklog.query.fanout import Observed
from oklog.records.record import encode_ulid

Member = Callable[[httpx.Request], Awaitable[httpx.Response]]


def rec(i: int, text: str = "line") -> bytes:
    return encode_ulid(1_700_000_000_000 + i, 0) + b" t " + text.encode() + b"%d\n" % i


def records(*ids: int) -> bytes:
    return b"".join(rec(i) for i in ids)


async def streamed(body: bytes) -> AsyncIterator[bytes]:
    """A body as a member's socket gives it: streamed, not read in advance."""
    if body:
        yield body


def answering(body: bytes) -> Member:
    async def handle(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=streamed(b"" if req.method == "HEAD" else body),
                              headers={"X-Oklog-Segments-Queried": "1", "X-Oklog-Max-Data-Set-Size": str(len(body))})
    return handle


def failing(status: int, text: bytes) -> Member:
    async def handle(req: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=streamed(text))
    return handle


def stalled() -> Member:
    async def handle(req: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    return handle


def coordinator(members: dict[str, Member], factor: int = 1, assured: bool = False,
                spawned: list[tuple[object, ...]] | None = None) -> Coordinator:
    async def route(req: httpx.Request) -> httpx.Response:
        return await members[req.url.host](req)

    client = httpx.AsyncClient(transport=httpx.MockTransport(route))
    return Coordinator(
        None, trio.CapacityLimiter(2), lambda: [StoreMember(n, f"{n}:7650") for n in members], client,
        member_timeout=0.5, factor=factor, spawn=(lambda *a: spawned.append(a)) if spawned is not None else None,
        assured=lambda: assured,
    )


def request(query: bytes = b"", method: str = "GET") -> Request:
    async def receive() -> dict[str, str]:
        await trio.sleep_forever()
        raise AssertionError

    scope = {"method": method, "path": "/store/query", "query_string": query, "headers": []}
    return Request(scope, receive)


class Sent:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    async def start(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.headers = status, headers

    async def write(self, data: bytes) -> None:
        self.body += data


async def ask(coord: Coordinator, query: bytes = b"", method: str = "GET") -> Sent:
    resp: Response = await coord.handle(request(query, method))
    assert resp.respond is not None
    sent = Sent()
    await resp.respond(sent.start, sent.write)
    return sent


@pytest.mark.trio
async def test_answers_of_every_member_merge_into_one_complete_answer():
    coord = coordinator({"a": answering(records(1, 3, 4)), "b": answering(records(2, 3, 5))})
    sent = await ask(coord)
    assert sent.status == 200
    assert sent.body == records(1, 2, 3, 4, 5)
    assert sent.headers["X-Oklog-Nodes-Queried"] == "2"
    assert sent.headers["X-Oklog-Store-Members"] == "2"
    assert sent.headers["X-Oklog-Error-Count"] == "0"
    assert "X-Oklog-Errors" not in sent.headers
    assert coord.running == 0 and coord.queries == 1 and coord.partial == 0


@pytest.mark.trio
async def test_a_failing_member_is_named_and_the_answer_is_partial():
    coord = coordinator({"a": answering(records(1, 2)), "b": failing(500, b"disk\r\nX-Evil: 1\r\n\x00gone")})
    sent = await ask(coord)
    assert sent.status == 206
    assert sent.body == records(1, 2)
    assert sent.headers["X-Oklog-Errors"] == "b: 500 disk X-Evil: 1 gone"
    assert sent.headers["X-Oklog-Complete"] == "false"
    assert sent.headers["X-Oklog-Error-Count"] == "1"
    assert coord.partial == 1 and coord.health.members["b"].failures == 1


@pytest.mark.trio
async def test_a_member_too_slow_to_begin_is_named_and_the_rest_answer():
    coord = coordinator({"a": answering(records(1)), "b": stalled()})
    sent = await ask(coord)
    assert sent.status == 206
    assert sent.body == records(1)
    assert sent.headers["X-Oklog-Errors"] == "b: no answer within 0.5s"


@pytest.mark.trio
async def test_replicas_cover_a_failed_member_when_every_record_is_written_twice():
    coord = coordinator({"a": answering(records(1, 2)), "b": failing(503, b"busy")}, factor=2, assured=True)
    sent = await ask(coord)
    assert sent.status == 200
    assert sent.headers["X-Oklog-Complete"] == "true"
    assert sent.headers["X-Oklog-Errors"] == "b: 503 busy"


@pytest.mark.trio
async def test_no_member_answering_is_a_502():
    coord = coordinator({"a": failing(500, b"x"), "b": failing(500, b"y")}, factor=3, assured=True)
    sent = await ask(coord)
    assert sent.status == 502
    assert sent.headers["X-Oklog-Complete"] == "false"
    assert sent.body == b""


@pytest.mark.trio
async def test_a_torn_record_cuts_the_answer_short_rather_than_end_it_quietly():
    torn = records(2) + rec(4)[:20]
    coord = coordinator({"a": answering(records(1, 3, 5)), "b": answering(torn)})
    sent = Sent()
    resp = await coord.handle(request())
    assert resp.respond is not None
    with pytest.raises(BaseExceptionGroup) as e:
        await resp.respond(sent.start, sent.write)
    assert e.group_contains(RuntimeError, match="ended mid-record", depth=None)
    assert sent.status == 200  # begun before b tore: the client sees a truncated transfer
    assert rec(4)[:20] not in sent.body and not sent.body.endswith(records(5))
    assert coord.running == 0


@pytest.mark.trio
async def test_a_torn_record_is_dropped_when_replicas_hold_the_members_records():
    torn = records(2) + rec(4)[:20]
    coord = coordinator({"a": answering(records(1, 2, 4)), "b": answering(torn)}, factor=2, assured=True)
    sent = await ask(coord)
    assert sent.status == 200
    assert sent.body == records(1, 2, 4)


@pytest.mark.trio
async def test_read_repair_copies_what_a_member_lacks_to_it():
    spawned: list[tuple[object, ...]] = []
    coord = coordinator({"a": answering(records(1, 2)), "b": answering(records(2))}, factor=2, spawned=spawned)
    sent = await ask(coord)
    assert sent.body == records(1, 2)
    assert [(m.name, body) for _, m, body in spawned] == [("b", records(1))]  # type: ignore[attr-defined]
    assert (coord.read_repairs, coord.read_repair_records) == (1, 1)


@pytest.mark.trio
async def test_head_gives_sizes_and_status_without_a_body():
    coord = coordinator({"a": answering(records(1)), "b": failing(500, b"no")})
    sent = await ask(coord, method="HEAD")
    assert sent.status == 206 and sent.body == b""
    assert sent.headers["X-Oklog-Max-Data-Set-Size"] == str(len(records(1)))


@pytest.mark.trio
async def test_missing_reports_members_gossip_knows_but_cannot_ask():
    coord = coordinator({"a": answering(b"")}, factor=2, assured=True)
    coord.view = lambda: [
        Observed("a", "a:7650", "alive", 0.0, True),
        Observed("b", "b:7650", "dead", 0.0, True),
    ]
    assert coord.missing() == {"members": [{"id": "b", "reason": "dead"}], "complete": True}
