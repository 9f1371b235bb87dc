"""A query over damaged store data never looks whole: a segment known damaged
before the scan gives 206 naming it; a block found damaged while reading cuts
the transfer short (the client sees an incomplete answer, not a short one)."""

from __future__ import annotations

import httpx
import pytest
import trio
from test_segfile import body

from oklog.fs import RealFS
from oklog.net.http import Router, serve_http
from oklog.records import segfile
from oklog.store.api import local_query
from oklog.store.log import StoreLog

LIMIT = 30


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(segfile, "BLOCK_SIZE", 16 << 10)


def flip_in_block(store: StoreLog, block: int) -> None:
    (seg,) = store.segments()
    victim = store.index(seg).blocks[block]
    raw = bytearray(store.fs.read(store.path(seg)))
    raw[victim.offset + victim.clen // 2] ^= 0x40
    store.fs.write_atomic(store.path(seg), bytes(raw))


async def get(store: StoreLog) -> httpx.Response | None:
    """The answer, or None when the transfer was cut short."""
    r = Router()
    r.add("GET|HEAD", "/store/query", lambda req: local_query(store, trio.CapacityLimiter(2), req))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(serve_http, r, "127.0.0.1", 0)
            try:
                async with httpx.AsyncClient() as client:
                    return await client.get(f"http://{host}:{port}/store/query")
            except httpx.RemoteProtocolError:  # incomplete chunked read
                return None
            finally:
                nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_block_found_damaged_while_reading_cuts_the_answer_short(tmp_path, small_blocks):
    fs = RealFS()
    store = StoreLog(fs, str(tmp_path / "store"))
    store.write(body(4000, 9))
    flip_in_block(store, 3)
    store = StoreLog(fs, store.root)  # a restart: the flip happened at rest, not yet scrubbed
    assert await get(store) is None


@pytest.mark.trio
async def test_a_segment_changed_at_rest_is_named_in_a_206(tmp_path, small_blocks):
    fs = RealFS()
    store = StoreLog(fs, str(tmp_path / "store"))
    data = body(4000, 9)
    store.write(data)
    whole = await get(store)
    assert whole is not None and whole.status_code == 200 and whole.content == data
    flip_in_block(store, 3)  # the running node sees its stamp change
    r = await get(store)
    assert r is not None and r.status_code == 206, r
    assert "damaged segment" in r.headers["X-Oklog-Errors"]
    assert r.headers["X-Oklog-Error-Count"] == "1"
