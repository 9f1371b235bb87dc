"""The TUI's pure parts (records, times, state parsing, rates, warnings, topology)
and the stub-driven interactions (attaching from the member list, tail 404)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from oklog.records.record import encode_ulid
from oklog.tui.app import make_app
from oklog.tui.client import (
    NodeClient,
    NodeUnreachable,
    QueryRequest,
    base_url,
    parse_records,
    resolve_time,
)
from oklog.tui.model import (
    History,
    human_bytes,
    node_state,
    parse_state,
    peers_to_fetch,
    warnings,
    with_pipelines,
)
from oklog.tui.screenshots import demo_app, prime
from oklog.tui.widgets.members import MembersTable
from oklog.tui.widgets.node_pipeline import NodePipeline
from oklog.tui.widgets.result_log import compile_highlight, format_record
from oklog.tui.widgets.tail import TailView
from oklog.tui.widgets.topology import draw


def test_parse_records_keeps_everything_and_takes_the_last_n():
    u1, u2 = encode_ulid(1_700_000_000_000, 1), encode_ulid(1_700_000_000_001, 2)
    buf = u1 + b" api hello world\n" + u2 + b" default caf\xc3\xa9 \xff\n" + b"garbage\n"
    recs = parse_records(buf)
    assert [(r.topic, r.line) for r in recs[:2]] == [("api", "hello world"), ("default", "café \ufffd")]
    assert recs[0].time_text() == "2023-11-14 22:13:20.000"
    assert recs[2].line == "garbage" and recs[2].ulid == ""
    assert [r.line for r in parse_records(buf, last=1)] == ["garbage"]
    assert parse_records(b"") == []


def test_format_record_keeps_one_record_on_one_line():
    assert "\n" not in format_record("t", "x", "a\rb\x0bc\u2028d") and len(format_record("t", "x", "a\rb").splitlines()) == 1


def test_resolve_time_and_params():
    assert resolve_time("") is None and resolve_time("now") is None
    assert resolve_time("5m", now=1_700_000_300.0) == "2023-11-14T22:13:20.000Z"  # as oklog query says it
    assert resolve_time(" 3 days ago ") == "3 days ago"  # not a time: the node's 400 says why
    assert resolve_time("2026-01-01T00:00:00Z") == "2026-01-01T00:00:00Z"
    p = QueryRequest(q="x", regex=True, from_="1h", to="", topic=" api ").params(now=1_700_003_600.0)
    assert p == {"q": "x", "regex": "true", "from": "2023-11-14T22:13:20.000Z", "topic": "api"}
    assert base_url("localhost:7650") == "http://localhost:7650"
    assert base_url("10.0.0.1") == "http://10.0.0.1:7650"
    assert base_url("http://[::1]:9000/") == "http://[::1]:9000"


def test_state_parsing_is_tolerant():
    st = parse_state({})
    assert st.members == () and st.pipelines == {}
    st = parse_state(node_state({"self": "a", "members": [{"id": "b", "role": "store", "state": "SUSPECT"},
                                                          {"id": "a"}, "junk", {"incarnation": True}],
                                 "pipeline": {"ingest": {"records_in": "x"}}}))
    assert [m.id for m in st.members][0] == "a" and st.me is not None and st.me.role == "?"
    b = next(m for m in st.members if m.id == "b")
    assert b.state == "suspect" and b.incarnation is None and b.stores and not b.ingests
    assert list(st.pipelines) == ["a"]


# What a gossip node's ``GET /cluster/state`` looks like (abridged).
GOSSIP_DOC = {
    "self": "127.0.0.1:9001", "role": "ingeststore", "uptime_seconds": 12.5, "replication_factor": 2,
    "members": [
        {"id": "127.0.0.1:9003", "role": "store", "gossip_addr": "127.0.0.1:9003",
         "api_addr": "127.0.0.1:8003", "state": "dead", "incarnation": 2, "last_heard": 990.0,
         "self": False, "uptime_seconds": 40.0, "meta": {"api_addr": "127.0.0.1:8003"}},
        {"id": "127.0.0.1:9001", "role": "ingeststore", "gossip_addr": "127.0.0.1:9001",
         "api_addr": "127.0.0.1:8001", "state": "alive", "incarnation": 0, "last_heard": 1000.0,
         "self": True, "uptime_seconds": 12.5, "meta": {}},
        {"id": "127.0.0.1:9002", "role": "ingest", "gossip_addr": "127.0.0.1:9002",
         "api_addr": "127.0.0.1:8002", "state": "alive", "incarnation": 1, "last_heard": 999.5,
         "self": False, "uptime_seconds": 11.0, "meta": {}},
        {"id": "127.0.0.1:9004", "role": "store", "gossip_addr": "127.0.0.1:9004",
         "api_addr": "", "state": "suspect", "incarnation": 0, "last_heard": 995.0,
         "self": False, "uptime_seconds": 3.0, "meta": {"api_addr": "127.0.0.1:8004"}},
    ],
    "pipeline": {"time": 1000.0, "ingest": {"records_in": 7}},
}


def test_state_parsing_of_gossip_members():
    st = parse_state(GOSSIP_DOC)
    assert [m.id for m in st.members] == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003", "127.0.0.1:9004"]
    me, ing, dead, sus = st.members
    assert me.is_self and not any(m.is_self for m in (ing, dead, sus)) and st.me is me
    assert (me.role, me.api_addr, me.gossip_addr, me.state, me.incarnation) == (
        "ingeststore", "127.0.0.1:8001", "127.0.0.1:9001", "alive", 0)
    assert (ing.role, ing.incarnation, ing.last_heard, ing.uptime) == ("ingest", 1, 999.5, 11.0)
    assert dead.state == "dead" and sus.state == "suspect"
    assert sus.api_addr == "127.0.0.1:8004"  # from meta when the member has none
    assert st.time == 1000.0 and st.replication_factor == 2 and list(st.pipelines) == ["127.0.0.1:9001"]
    # Only a live (or suspect) other member is asked for its own figures.
    assert [m.id for m in peers_to_fetch(st)] == ["127.0.0.1:9002", "127.0.0.1:9004"]
    merged = with_pipelines(st, {"127.0.0.1:9002": {"ingest": {}}, "127.0.0.1:9001": {"x": 1}})
    assert merged.pipelines["127.0.0.1:9001"] == GOSSIP_DOC["pipeline"]  # never overridden
    assert set(merged.pipelines) == {"127.0.0.1:9001", "127.0.0.1:9002"} and st.pipelines.keys() == {"127.0.0.1:9001"}
    # Without a top-level "self", the member marked self is this node.
    alt = parse_state({k: v for k, v in GOSSIP_DOC.items() if k != "self"})
    assert alt.self_id == "127.0.0.1:9001" and alt.me is not None


class FakeNode:
    """A Client whose answers are set per API address."""

    def __init__(self, node: str, answers: dict) -> None:
        self.node, self.answers, self.closed = node, answers, False

    async def cluster_state(self) -> dict:
        a = self.answers[self.node]
        if a == "hang":
            await asyncio.sleep(60)
        if a == "down":
            raise NodeUnreachable("refused")
        return a

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.timeout(30)
def test_pipeline_cards_for_other_members_fetched_from_them():
    answers = {
        "127.0.0.1:8001": GOSSIP_DOC,
        "127.0.0.1:8002": {"self": "127.0.0.1:9002", "pipeline": {"time": 1000.0, "ingest": {"records_in": 3}}},
        "127.0.0.1:8004": "hang",  # suspect: times out, no card, no stall beyond the bound
    }

    async def body() -> None:
        now = [1000.0]
        app = make_app("127.0.0.1:8001", 1.0, client=lambda n: FakeNode(n, answers), clock=lambda: now[0])
        async with app.run_test(size=(130, 40)) as pilot:
            for _ in range(300):
                if app.polls:
                    break
                await pilot.pause(0.01)
            # From here the test drives every fetch: a background poll still waiting on
            # the hanging peer could otherwise land after the figures checked below.
            app.workers.cancel_group(app, "poll")
            assert app.state is not None
            assert set(app.state.pipelines) == {"127.0.0.1:9001", "127.0.0.1:9002"}
            assert set(app.peers) == {"127.0.0.1:8002", "127.0.0.1:8004"}
            await pilot.press("2")
            await pilot.pause(0.1)
            assert [c.node for c in app.query(NodePipeline)] == ["127.0.0.1:9001", "127.0.0.1:9002"]
            # A peer that misses a poll keeps its last figures a while (no flicker)...
            answers["127.0.0.1:8002"] = answers["127.0.0.1:8004"] = "down"
            now[0] += 4
            await app.fetch_once()
            await pilot.pause(0.05)
            assert set(app.state.pipelines) == {"127.0.0.1:9001", "127.0.0.1:9002"}
            now[0] += 4  # ...but not for long.
            await app.fetch_once()
            await pilot.pause(0.05)
            assert set(app.state.pipelines) == {"127.0.0.1:9001"}
            # A peer answering as someone else (its port reused) gets no card at once.
            answers["127.0.0.1:8002"] = {"self": "127.0.0.1:9002", "pipeline": {"ingest": {}}}
            await app.fetch_once()
            await pilot.pause(0.05)
            assert "127.0.0.1:9002" in app.state.pipelines
            answers["127.0.0.1:8002"] = {"self": "127.0.0.1:7777", "pipeline": {}}
            await app.fetch_once()
            await pilot.pause(0.1)
            assert set(app.state.pipelines) == {"127.0.0.1:9001"}
            peers = dict(app.peers)
        assert all(c.closed for c in peers.values())  # closed with the app

    asyncio.run(asyncio.wait_for(body(), 25))


def test_history_rates_and_restart():
    h = History()
    for t, n in ((0, 0), (2, 200), (4, 600), (6, 10)):  # 10: the node restarted
        h.add({"time": t, "ingest": {"records_in": n, "bytes_in": n * 100}}, 0)
    assert h.record_rates() == [100.0, 200.0, 0.0]
    assert h.byte_rates()[:2] == [10_000.0, 20_000.0]
    h.add({"time": 6, "ingest": {"records_in": 12}}, 0)  # same time: replaces
    assert len(h.samples) == 4


def test_warnings():
    state = parse_state({
        "self": "a", "replication_factor": 2,
        "members": [{"id": "a", "state": "alive", "role": "ingeststore"},
                    {"id": "b", "state": "suspect", "role": "store"},
                    {"id": "c", "state": "dead", "role": "ingeststore"}],
        "pipeline": {"ingest": {"oldest_flushed_age_seconds": 90},
                     "warnings": [{"level": "error", "kind": "replicate", "subject": "b",
                                   "text": "replication to store member b failing (2 failures ...)"},
                                  {"level": "warning", "kind": "gather", "subject": "c",
                                   "text": "cannot read from ingest member c"}],
                     "consumer": {"replications_failed": 2, "last_error": "boom", "factor_effective": 1}},
    })
    texts = [(w.level, w.text) for w in warnings(state, {})]
    assert ("warning", "suspect: not answering probes") in texts
    assert any(lv == "error" and "dead" in t for lv, t in texts)
    assert any(lv == "error" and "consumer lag" in t for lv, t in texts)
    # The node's own warnings, as it words them; no counter since start ("boom").
    assert ("error", "replication to store member b failing (2 failures ...)") in texts
    assert ("warning", "cannot read from ingest member c") in texts
    assert not any("boom" in t or "replication failing" in t for _, t in texts)
    # Lag between the thresholds warns only while growing.
    h = History()
    for i, lag in enumerate((11, 12, 13, 14)):
        h.add({"time": i, "ingest": {"oldest_flushed_age_seconds": lag}}, 0)
    calm = parse_state({"self": "a", "members": [{"id": "a"}],
                        "pipeline": {"ingest": {"oldest_flushed_age_seconds": 14}}})
    assert [w.text for w in warnings(calm, {"a": h})] == ["consumer lag growing: oldest flushed segment 14s old"]
    assert warnings(calm, {}) == []
    assert human_bytes(999) == "999 B" and human_bytes(1_500_000) == "1.5 MB"


def test_warnings_of_a_node_without_its_own_describe_only_what_this_tui_saw():
    """An older node (no ``warnings`` in its state): failures counted since it started
    are history; only failures between this TUI's samples of the last minute warn,
    and a gather error is not called a replication failure."""
    doc = {"self": "a", "members": [{"id": "a"}],
           "pipeline": {"consumer": {"replications_failed": 7, "last_error": "gather from i1: refused"}}}
    h = History()
    h.add({"time": 0, "consumer": {"replications_failed": 7}}, 0)
    h.add({"time": 2, "consumer": {"replications_failed": 7}}, 0)
    assert warnings(parse_state(doc), {"a": h}) == []
    h.add({"time": 4, "consumer": {"replications_failed": 9}}, 0)
    [alert] = warnings(parse_state(doc), {"a": h})
    assert alert.text == "replication failing: 2 failures in the last 1m00s"  # not "gather ..."
    h.add({"time": 4 + 61, "consumer": {"replications_failed": 9}}, 0)
    assert warnings(parse_state(doc), {"a": h}) == []  # a minute without failures: cleared


def test_what_a_dead_member_means_for_its_data_is_computed():
    def alert_for(rf, states, roles=None):
        roles = roles or ["store"] * len(states)
        members = [{"id": f"m{i}", "state": s, "role": r} for i, (s, r) in enumerate(zip(states, roles, strict=True))]
        st = parse_state({"self": "m0", "replication_factor": rf, "members": members})
        return [w.text for w in warnings(st, {}) if w.node == "m1"][0]

    one_down = alert_for(2, ["alive", "dead", "alive"])
    assert "other copies on live members" in one_down and "rf 2, 1 of 3 store members down" in one_down
    two_down = alert_for(2, ["alive", "dead", "dead"])
    assert "missing from queries" in two_down and "2 of 3 store members down" in two_down
    assert "other copies" not in two_down
    suspect_too = alert_for(2, ["alive", "dead", "suspect"])
    assert "missing from queries" in suspect_too
    left = alert_for(2, ["alive", "dead", "left", "alive"])  # left handed its data off
    assert "1 of 3 store members down" in left
    assert "until it returns" in alert_for(1, ["alive", "dead"])
    assert "unknown" in alert_for(None, ["alive", "dead"])
    ingest = alert_for(2, ["alive", "dead", "alive"], ["store", "ingest", "store"])
    assert "wait on its disk" in ingest and "copies" not in ingest


def test_topology_draws_a_bus_from_ingest_to_store():
    state = parse_state({"self": "i1", "members": [
        {"id": "i1", "role": "ingest"}, {"id": "i2", "role": "ingest"},
        {"id": "s1", "role": "store"}, {"id": "s2", "role": "store"}, {"id": "s3", "role": "store"},
        {"id": "x", "role": "ingeststore"}]})
    lines = draw(state).plain.splitlines()
    assert "ingest" in lines[0] and "store" in lines[0]
    body = lines[1:5]
    # ingest: i1 i2 x; store: s1 s2 s3 x (an ingeststore member is on both sides)
    assert "┬──▶" in body[0] and "┼──▶" in body[1] and "┼──▶" in body[2] and "└──▶" in body[3]
    assert body[2].lstrip().startswith("● x") and body[3].rstrip().endswith("● x")
    solo = draw(parse_state({"self": "n", "members": [{"id": "n", "role": "ingeststore"}]})).plain
    assert "─────▶" in solo.replace(" ", "")


def test_highlight_patterns():
    assert compile_highlight("", False) is None
    assert compile_highlight("a.b", False).search("a.b") and not compile_highlight("a.b", False).search("axb")
    assert compile_highlight("a.b", True).search("axb")
    assert compile_highlight("(", True) is None


def test_node_client_errors_map_to_client_errors():
    from oklog.tui.client import ApiError, EndpointMissing, NodeUnreachable

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/cluster/state":
            return httpx.Response(500, text="boom")
        if req.url.path == "/store/stream":
            return httpx.Response(404, text="not found")
        raise httpx.ConnectError("refused", request=req)

    async def body() -> None:
        c = NodeClient("x:1", transport=httpx.MockTransport(handler))
        with pytest.raises(ApiError, match="500: boom"):
            await c.cluster_state()
        with pytest.raises(EndpointMissing):
            async with c.tail("", False):
                pass
        with pytest.raises(NodeUnreachable, match="ConnectError"):
            async with c.query(QueryRequest()):
                pass
        await c.aclose()

    asyncio.run(asyncio.wait_for(body(), 10))


@pytest.mark.timeout(30)
def test_attach_to_another_member_from_the_list():
    async def body() -> None:
        app = demo_app()
        async with app.run_test(size=(130, 40)) as pilot:
            await prime(pilot, 3)
            await pilot.press("down", "enter")  # ingest-2
            await pilot.pause()
            assert app.node == "10.0.0.2:7650" and app.client.node == "10.0.0.2:7650"
            await prime(pilot, 1)
            assert "10.0.0.2:7650" in app.statusbar.content.plain
            assert app.state is not None and app.state.self_id == "ingest-2"  # it answers as itself
            assert app.state.me is not None and app.state.me.api_addr == "10.0.0.2:7650"
            assert set(app.state.pipelines) == {"ingest-1", "ingest-2", "store-1", "store-2"}

    asyncio.run(asyncio.wait_for(body(), 25))


@pytest.mark.timeout(30)
def test_tail_explains_a_missing_endpoint():
    async def body() -> None:
        app = demo_app(tail_missing=True)
        async with app.run_test(size=(130, 40)) as pilot:
            await pilot.press("4")
            tail = app.query_one(TailView)
            for _ in range(100):
                if tail.state == "missing":
                    break
                await pilot.pause(0.02)
            status = tail.status_text().plain
            assert "unavailable" in status and "404" in status

    asyncio.run(asyncio.wait_for(body(), 25))


def test_members_header_counts_alive_of_total_and_a_dead_members_uptime_stops():
    st = parse_state({"self": "a", "pipeline": {"time": 10_000.0}, "members": [
        {"id": "a", "state": "alive", "uptime_seconds": 5000, "meta": {"started": 5000.0}},
        {"id": "b", "state": "dead", "last_heard": 7000.0, "uptime_seconds": 5000,
         "meta": {"started": 5000.0}},
        {"id": "c", "state": "suspect"},
        {"id": "d", "state": "left"}]})
    assert st.counts() == (1, 3, 1) and st.counts_text() == "1/3 members alive, 1 left"
    a, b, _c, _d = st.members
    assert a.shown_uptime == 5000 and b.shown_uptime == 2000  # stopped when last heard from
    row = [c.plain for c in MembersTable.cells(b, st)]
    assert row[6] == "50m00s ago" and row[7] == "33m20s"


def test_status_bar_says_alive_of_total():
    async def body() -> None:
        app = demo_app()
        async with app.run_test(size=(130, 40)) as pilot:
            await prime(pilot, 2)
            assert "3/4 members alive" in app.statusbar.content.plain
            assert "members: 3/4 alive" in str(app.cluster_view.members.border_title)

    asyncio.run(asyncio.wait_for(body(), 25))
