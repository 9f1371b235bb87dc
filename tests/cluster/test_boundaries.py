"""Each long-running component survives an unexpected error from the membership it
reads (what a peer's bad gossip used to cause): it logs, counts and carries on.

The membership callables here raise ``TypeError("unhashable type: 'list'")``, the
error a list-valued ``api_addr`` raised inside ``Consumer.cycle``.
"""

from __future__ import annotations

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from support import poll_until

from oklog.net.http import Router, serve_http
from oklog.node.metrics import Metrics
from oklog.query.coordinator import Coordinator
from oklog.records.record import ULIDSource, stamp_lines
from oklog.store.consumer import Consumer
from oklog.stream.server import Tap, cluster_stream_handler

LIMIT = 20


class Flaky:
    """A membership callable that raises the first ``fail`` times."""

    def __init__(self, fail: int, value) -> None:
        self.fail = fail
        self.value = value
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.fail:
            raise TypeError("unhashable type: 'list'")
        return self.value


def records(*lines: bytes) -> bytes:
    return stamp_lines(list(lines), ULIDSource().headers(len(lines)))


class MemSource:
    """An ingest member holding one flushed segment (pure bookkeeping)."""

    name = "mem"

    def __init__(self, data: bytes) -> None:
        self.segments = {"seg1": data}
        self.committed: list[str] = []
        self.handed: set[str] = set()

    async def next(self):
        left = [s for s in self.segments if s not in self.handed]
        if not left:
            return None
        self.handed.add(left[0])
        return left[0]

    async def read(self, seg_id):
        return self.segments[seg_id]

    async def commit(self, seg_id):
        self.committed.append(seg_id)

    async def failed(self, seg_id):
        self.handed.discard(seg_id)


class MemTarget:
    name = "target"

    def __init__(self) -> None:
        self.got: list[bytes] = []

    local = False

    def takes_encoded(self):
        return False

    async def replicate(self, data, encoded=None):
        self.got.append(data)
        return len(data)


@pytest.mark.trio
async def test_consumer_cycle_error_is_counted_and_the_consumer_carries_on():
    src, dst = MemSource(records(b"one", b"two")), MemTarget()
    sources = Flaky(3, [src])
    c = Consumer(sources, lambda: [dst], 1, 1 << 20, 0.2)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.run)
            await poll_until(lambda: src.committed, 0.05)
            nursery.cancel_scope.cancel()
    assert c.stats.cycle_errors == 3
    assert "TypeError" in c.stats.last_error
    assert src.committed == ["seg1"] and dst.got == [src.segments["seg1"]]


async def serve(nursery: trio.Nursery, router: Router) -> str:
    host, port = await nursery.start(serve_http, router, "127.0.0.1", 0)
    return f"http://{host}:{port}"


@pytest.mark.trio
async def test_coordinator_membership_error_is_503_counted_and_next_query_answers():
    members = Flaky(1, [])
    async with httpx.AsyncClient() as client:
        coord = Coordinator(None, trio.CapacityLimiter(1), members, client)
        r = Router()
        r.add("GET", "/store/query", coord.handle)
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                url = await serve(nursery, r)
                first = await client.get(url + "/store/query")
                second = await client.get(url + "/store/query")
                nursery.cancel_scope.cancel()
    assert first.status_code == 503 and "store membership unavailable" in first.text
    assert coord.errors == 1
    assert second.status_code == 503 and "no live store members" in second.text


@pytest.mark.trio
async def test_stream_membership_error_is_counted_and_the_stream_keeps_following():
    tap = Tap()
    errors = []
    members = Flaky(2, [("self", None)])
    handler = cluster_stream_handler(members, tap, lambda: None, on_error=lambda: errors.append(1))
    r = Router()
    r.add("GET", "/store/stream", handler)
    got = b""
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            url = await serve(nursery, r)
            async with httpx.AsyncClient() as client:
                async with client.stream("GET", url + "/store/stream", timeout=LIMIT) as resp:
                    assert resp.status_code == 200
                    await poll_until(lambda: tap.subscribers != 0, 0.05)  # following after two failed reads
                    tap(records(b"after the errors"))
                    async for chunk in resp.aiter_raw():
                        got += chunk
                        if b"\n" in got:
                            break
            nursery.cancel_scope.cancel()
    assert got.endswith(b"after the errors\n")
    assert len(errors) == 2 and members.calls >= 3


class Exploding(dict):
    def items(self):
        raise TypeError("unhashable type: 'list'")


def test_metrics_section_error_keeps_every_other_family():
    state = {
        "self": "n1",
        "members": [{"id": "n1", "role": "ingeststore", "state": "alive", "uptime_seconds": 1.0}],
        "replication_factor": 2,
        "pipeline": {
            "ingest": {"segments": Exploding(a=1), "records_in": 5},
            "store": {"segments": 1, "bytes": 2},
            "gossip": {"malformed": 3, "bad_updates": 4, "refused_updates": 5, "refutations": 6},
            "errors": {"consumer": 1, "coordinator": 0, "stream": 0, "gossip": 0, "state": 0},
        },
    }
    text = Metrics(lambda: state, process=False).render().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["oklog_state_error"].samples[0].value == 1
    assert not any(n.startswith("oklog_ingest") for n in fams)  # the broken section, whole
    for name in ("oklog_cluster_members", "oklog_node_info", "oklog_store_segments",
                 "oklog_gossip_bad_updates", "oklog_gossip_refused_updates"):
        assert name in fams, name
    errs = {s.labels["component"]: s.value for s in fams["oklog_component_errors"].samples
            if s.name.endswith("_total")}
    assert errs["consumer"] == 1
