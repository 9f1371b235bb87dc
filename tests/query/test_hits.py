"""``/store/hits`` in-process over fake members (an httpx MockTransport):
replicas count once, a member that fails or sends torn lines makes the count
partial and is named."""

import json

import httpx
import pytest
import trio

from oklog.net.http import HTTPError, Request
from oklog.query.hits import cluster_hits
from oklog.records.record import encode_ulid
from tests.query.test_coordinator import Member, coordinator, failing, streamed


def ulids(*ids: int) -> bytes:
    return b"".join(encode_ulid(1_700_000_000_000 + i, 0) + b"\n" for i in ids)


def matching(body: bytes) -> Member:
    async def handle(req: httpx.Request) -> httpx.Response:
        assert req.url.path == "/store/_hits"
        return httpx.Response(200, content=streamed(body), headers={"X-Oklog-Segments-Queried": "1"})

    return handle


def request() -> Request:
    async def receive() -> dict[str, str]:
        await trio.sleep_forever()
        raise AssertionError

    return Request({"method": "GET", "path": "/store/hits", "query_string": b"", "headers": []}, receive)


@pytest.mark.trio
async def test_a_record_held_by_several_members_counts_once():
    coord = coordinator({"a": matching(ulids(1, 2, 3)), "b": matching(ulids(2, 3, 4))})
    resp = await coord_hits(coord)
    assert resp.status == 200
    body = json.loads(resp.body)
    assert body["total"] == 4 and body["complete"] is True and "errors" not in body
    assert resp.headers["X-Oklog-Nodes-Queried"] == "2" and "X-Oklog-Errors" not in resp.headers


@pytest.mark.trio
async def test_a_failing_member_makes_the_count_partial_and_is_named():
    coord = coordinator({"a": matching(ulids(1, 2)), "b": failing(500, b"no\r\n")})
    resp = await coord_hits(coord)
    assert resp.status == 206
    body = json.loads(resp.body)
    assert body == {"total": 2, "complete": False, "errors": "b: 500 no"}
    assert resp.headers["X-Oklog-Complete"] == "false"
    assert coord.running == 0


@pytest.mark.trio
async def test_lines_that_are_not_ulid_lines_fail_the_member():
    coord = coordinator({"a": matching(ulids(1)), "b": matching(ulids(2) + b"x" * 30)}, factor=2, assured=True)
    resp = await coord_hits(coord)
    body = json.loads(resp.body)
    assert resp.status == 200 and body["complete"] is True  # a's replicas cover b
    assert body["errors"] == "b: its answer is not ULID lines"


@pytest.mark.trio
async def test_no_member_answering_is_a_502():
    coord = coordinator({"a": failing(500, b"x")})
    with pytest.raises(HTTPError) as e:
        await coord_hits(coord)
    assert e.value.status == 502


async def coord_hits(coord):
    return await cluster_hits(coord, request())
