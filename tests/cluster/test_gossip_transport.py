"""The trio gossip driver over real UDP on 127.0.0.1."""

from __future__ import annotations

import random

import pytest
import trio
from conftest import free_port
from support import poll_until

from oklog.cluster.swim import ALIVE, DEAD, LEFT, SUSPECT
from oklog.cluster.transport import Gossip, parse_peer

FAST = dict(
    probe_interval=0.1,
    ping_timeout=0.05,
    suspicion_timeout=0.8,
    dead_retention=3.0,
    sync_interval=1.0,
    join_retry=0.2,
    leave_timeout=0.2,
)
LIMIT = 15  # absolute per-test timeout, seconds


def make(i: int, role: str = "ingeststore", seeds=(), port: int = 0, **kw) -> Gossip:
    params = {**FAST, **kw}
    return Gossip(f"n{i}", role, bind=("127.0.0.1", port), seeds=seeds, rng=random.Random(i), **params)


def states(g: Gossip) -> dict[str, str]:
    return {m.id: m.state for m in g.members()}


async def start_cluster(nursery: trio.Nursery, n: int, **kw) -> list[Gossip]:
    seed = make(0, **kw)
    seed_addr = await nursery.start(seed.run)
    nodes = [seed]
    for i in range(1, n):
        g = make(i, seeds=[f"{seed_addr[0]}:{seed_addr[1]}"], **kw)
        await nursery.start(g.run)
        nodes.append(g)
    await poll_until(lambda: all(len(g.members_by_role("store")) == n for g in nodes))
    return nodes


@pytest.mark.trio
async def test_three_nodes_discover_each_other_through_one_seed():
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nodes = await start_cluster(nursery, 3)
            for g in nodes:
                view = g.members()
                assert [m.id for m in view] == ["n0", "n1", "n2"]
                assert all(m.state == ALIVE for m in view)
                assert [m.is_self for m in view] == [m.id == g.id for m in view]
                assert all(m.addr[0] == "127.0.0.1" and m.addr[1] > 0 for m in view)
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_crash_is_suspected_then_dead_then_forgotten():
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nodes = await start_cluster(nursery, 2, dead_retention=1.5)
            victim = make(2, seeds=[nodes[0].address], dead_retention=1.5)
            with trio.CancelScope() as victim_scope:
                async with trio.open_nursery() as inner:
                    await inner.start(victim.run)
                    await poll_until(lambda: all(states(g).get("n2") == ALIVE for g in nodes))
                    victim_scope.cancel()  # a crash: no leave message
            seen: set[str] = set()

            def observe() -> bool:
                seen.update(str(states(g).get("n2")) for g in nodes)
                return all(states(g).get("n2") == DEAD for g in nodes)

            await poll_until(observe)
            assert SUSPECT in seen
            await poll_until(lambda: all(states(g)["n0"] == states(g)["n1"] == ALIVE for g in nodes))
            assert nodes[0].members_by_role("ingest", include_suspect=True)[-1].id == "n1"
            await poll_until(lambda: all("n2" not in states(g) for g in nodes))
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_leave_marks_member_left_not_dead():
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nodes = await start_cluster(nursery, 3)
            leaver = nodes[2]
            await leaver.leave()  # returns once the announcement went out; run() ends
            await poll_until(lambda: all(states(g)["n2"] == LEFT for g in nodes[:2]))
            await trio.sleep(FAST["suspicion_timeout"] + 0.3)
            assert all(states(g)["n2"] == LEFT for g in nodes[:2])
            assert [m.id for m in nodes[0].members_by_role("store", include_suspect=True)] == [
                "n0",
                "n1",
            ]
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_meta_updates_propagate_and_roles_filter():
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            seed = make(0, role="ingest")
            addr = await nursery.start(seed.run)
            store = make(1, role="store", seeds=[addr], meta={"api_addr": "127.0.0.1:1"})
            both = make(2, role="ingeststore", seeds=[addr])
            await nursery.start(store.run)
            await nursery.start(both.run)
            await poll_until(lambda: len(seed.members_by_role("ingest")) == 2)
            await poll_until(lambda: len(seed.members_by_role("store")) == 2)
            assert [m.id for m in seed.members_by_role("ingest")] == ["n0", "n2"]
            assert [m.id for m in seed.members_by_role("store")] == ["n1", "n2"]
            assert {m.id: m.meta for m in seed.members()}["n1"] == {"api_addr": "127.0.0.1:1"}
            store.set_meta({"api_addr": "127.0.0.1:1", "load": 3})
            await poll_until(
                lambda: all(
                    {m.id: m.meta for m in g.members()}["n1"].get("load") == 3 for g in (seed, both)
                )
            )
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_restart_with_same_id_and_port_rejoins():
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nodes = await start_cluster(nursery, 2)
            # A port from this worker's block, not the kernel's ephemeral pool:
            # any socket could take a released ephemeral port before the restart.
            first = make(2, seeds=[nodes[0].address], port=free_port())
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as inner:
                    port = (await inner.start(first.run))[1]
                    await poll_until(lambda: all(states(g).get("n2") == ALIVE for g in nodes))
                    scope.cancel()
            await poll_until(lambda: all(states(g).get("n2") == DEAD for g in nodes))
            dead_inc = {m.id: m.incarnation for m in nodes[0].members()}["n2"]
            again = Gossip(
                "n2",
                "ingeststore",
                bind=("127.0.0.1", port),
                seeds=[nodes[1].address],
                meta={"gen": 2},
                **FAST,
            )
            await nursery.start(again.run)
            await poll_until(lambda: all(states(g).get("n2") == ALIVE for g in nodes))
            for g in nodes:
                m = {m.id: m for m in g.members()}["n2"]
                assert m.incarnation > dead_inc and m.meta == {"gen": 2}
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_malformed_datagrams_are_counted_and_ignored():
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            seed = make(0)
            addr = await nursery.start(seed.run)
            junk = [
                b"",
                b"\xff\xfe garbage",
                b"[]",
                b'{"v": 1}',
                b'{"v": 1, "t": "ping", "s": "x", "i": -1}',
                b'{"v": 1, "t": "ack", "s": "x", "i": 0, "q": 1, "u": [[1, 2]]}',
                b'{"v": 2, "t": "ack", "s": "x", "i": 0, "q": 1}',
                b"[" * 100_00 + b"]" * 100_00,
            ]
            with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as sock:
                for data in junk:
                    await sock.sendto(data, addr)
            # The ack with one bad update row is a valid envelope: the row is dropped.
            await poll_until(lambda: seed.stats.malformed == len(junk) - 1)
            assert seed.stats.bad_updates == 1
            other = make(1, seeds=[addr])
            await nursery.start(other.run)
            await poll_until(lambda: len(seed.members_by_role("store")) == 2)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.0.0.1", ("10.0.0.1", 7659)),
        ("node2:7000", ("node2", 7000)),
        ("[::1]:7001", ("::1", 7001)),
        ("[::1]", ("::1", 7659)),
    ],
)
def test_parse_peer(text, expected):
    assert parse_peer(text) == expected


@pytest.mark.parametrize("text", ["", ":7659", "host:port"])
def test_parse_peer_rejects(text):
    with pytest.raises(ValueError):
        parse_peer(text)
