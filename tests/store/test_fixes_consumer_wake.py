"""A segment flushed on an ingeststore node wakes its own consumer."""

import httpx
import pytest
import trio
from support import poll_until

from oklog.node.root import open_node
from oklog.store import consumer
from tests.node.test_node import config, send


@pytest.mark.trio
async def test_flushed_segment_wakes_local_consumer(tmp_path, nursery, monkeypatch):
    # With the idle poll an hour long, only the flush's wake-up can move the record.
    monkeypatch.setattr(consumer, "IDLE_POLL", 3600.0)
    n = open_node(config(tmp_path))
    await nursery.start(n.run)
    assert n.consumer is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{n.bound.api[1]}", timeout=10) as c:
        with trio.fail_after(30):  # a bound on a hang, not a speed check
            # let the first, empty cycle settle into its wait (else it could find the
            # segment by itself and the test would pass without a wake-up)
            await trio.sleep(0.5)
            await send(n.bound.fast[1], b"wake me\n")
            await poll_until(lambda: n.consumer.stats.segments_consumed != 0, 0.05)
        r = await c.get("/store/query", params={"q": "wake"})
        assert r.status_code == 200
        assert r.content.endswith(b"wake me\n")
