"""The TUI against a real 3-node gossip cluster (``oklog run`` subprocesses).

One seed (ingeststore) and two peers joined with ``-peer``: one ``ingest``, one
``store``. The cluster view lists all three with their roles and draws ingest
feeding store; the pipeline view has a card per node; a node killed by PID turns
dead; attaching to another member from the list makes it the attached node.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from test_tui_live import SIZE, run, text_of, until, until_line

from oklog.tui.app import make_app
from oklog.tui.widgets.members import MembersTable
from oklog.tui.widgets.node_pipeline import NodePipeline
from oklog.tui.widgets.tail import TailView
from oklog.tui.widgets.topology import Topology

SUSPICION = 2.0
FAST = ["-ingest.segment-flush-age", "0.3s", "-cluster.suspicion-timeout", f"{SUSPICION:g}s"]


def start_cluster(node_factory, roles):
    """The seed first, then the peers (concurrently) joining it."""
    nodes = [node_factory(f"n{i}") for i in range(len(roles))]
    seed = ["-peer", f"127.0.0.1:{nodes[0].ports['cluster']}"]
    for i, (n, role) in enumerate(zip(nodes, roles, strict=True)):
        n.args = FAST + ["-role", role, "-store.segment-replication-factor", "2"] + (seed if i else [])
    nodes[0].start()
    with ThreadPoolExecutor(len(nodes) - 1) as pool:
        list(pool.map(lambda n: n.start(), nodes[1:]))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if all(len(httpx.get(n.url + "/cluster/state", timeout=5).json()["members"]) == len(nodes)
               for n in nodes):
            return nodes
        time.sleep(0.1)
    raise TimeoutError("cluster did not form")


def rows(table: MembersTable) -> list[list[str]]:
    return [[getattr(c, "plain", str(c)) for c in table.get_row_at(i)] for i in range(table.row_count)]


def cells(table: MembersTable, member_id: str) -> list[str]:
    row = table.get_row_at(table.get_row_index(member_id))
    return [getattr(c, "plain", str(c)) for c in row]


@pytest.mark.timeout(90)
def test_cluster_view_follows_a_real_cluster(node_factory):
    seed, ing, sto = start_cluster(node_factory, ["ingeststore", "ingest", "store"])
    ids = {n.api: f"127.0.0.1:{n.ports['cluster']}" for n in (seed, ing, sto)}

    async def body() -> None:
        app = make_app(seed.api, 0.3)
        async with app.run_test(size=SIZE) as pilot:
            table = app.query_one(MembersTable)
            await until(pilot, lambda: table.row_count == 3)  # then all alive (a loaded box may
            await until(pilot, lambda: all("alive" in r[4] for r in rows(table)))  # suspect briefly)
            # All three members, their roles and API addresses; the attached one marked.
            for n, role in ((seed, "ingeststore"), (ing, "ingest"), (sto, "store")):
                row = cells(table, ids[n.api])
                assert row[1:5] == [ids[n.api], role, n.api, "● alive"], row
                assert row[0] == ("▶" if n is seed else " ")
                assert row[5].isdigit()  # incarnation (a brief suspicion refuted raises it)
            assert app.state is not None and app.state.self_id == ids[seed.api]
            # The topology: ingest members on the left feed store members on the right.
            topo = text_of(app.query_one(Topology)).splitlines()
            arrow = [ln for ln in topo if "▶" in ln]
            assert any(ids[ing.api] in ln.split("▶")[0] for ln in arrow), topo
            assert any(ids[sto.api] in ln.split("▶")[1] for ln in arrow), topo
            assert any(ids[seed.api] in ln.split("▶")[0] and ids[seed.api] in ln.split("▶")[1] for ln in arrow)
            assert ids[ing.api] not in "".join(ln.split("▶")[1] for ln in arrow)  # ingest-only: no store
            assert ids[sto.api] not in "".join(ln.split("▶")[0] for ln in arrow)  # store-only: no ingest
            assert f"attached to {ids[seed.api]}" in "\n".join(topo)

            # Pipeline view: one card per node, fetched from each member; attached first.
            await pilot.press("2")
            await until(pilot, lambda: len(cs := list(app.query(NodePipeline))) == 3
                        and all(c.border_title for c in cs))
            cards = list(app.query(NodePipeline))
            titles = [str(c.border_title) for c in cards]
            assert titles[0].startswith(f"{ids[seed.api]} · ingeststore") and "attached" in titles[0]
            assert any(t.startswith(f"{ids[ing.api]} · ingest ·") for t in titles)
            assert any(t.startswith(f"{ids[sto.api]} · store ·") for t in titles)
            by_node = {c.node: c for c in cards}
            assert by_node[ids[ing.api]].query_one(".ingest").display
            assert not by_node[ids[ing.api]].query_one(".store").display  # ingest-only node
            assert by_node[ids[sto.api]].query_one(".store").display
            assert not by_node[ids[sto.api]].query_one(".ingest").display  # store-only node

            # Data forwarded to the ingest-only peer shows up in its card's figures.
            await asyncio.to_thread(ing.send_fast, b"".join(b"via ingest %d\n" % i for i in range(500)))
            await until(pilot, lambda: app.state is not None
                        and app.state.pipelines.get(ids[ing.api], {}).get("ingest", {}).get("records_in", 0) >= 500)

            # Kill the store peer by PID: it goes dead within the suspicion timeout.
            await pilot.press("1")
            t0 = time.monotonic()
            sto.kill()
            await until(pilot, lambda: "dead" in cells(table, ids[sto.api])[4])
            assert time.monotonic() - t0 < SUSPICION + 8
            await until(pilot, lambda: all("alive" in cells(table, ids[n.api])[4] for n in (seed, ing)))
            await until(pilot, lambda: ids[sto.api] not in {c.node for c in app.query(NodePipeline)})

            # Attach to the ingest peer from the list.
            table.focus()
            table.move_cursor(row=table.get_row_index(ids[ing.api]), animate=False)
            await pilot.press("enter")
            await until(pilot, lambda: app.node == ing.api and app.state is not None
                        and app.state.self_id == ids[ing.api] and table.row_count == 3)
            await pilot.pause()
            assert cells(table, ids[ing.api])[0] == "▶" and cells(table, ids[seed.api])[0] == " "
            await until(pilot, lambda: "dead" in cells(table, ids[sto.api])[4])  # it has heard too
            assert ing.api in text_of(app.query_one("#statusbar"))

            # The tail on the ingest peer shows lines forwarded to it after it opened.
            tail = app.query_one(TailView)
            await pilot.press("4")
            await until(pilot, lambda: tail.state == "live")
            await until_line(pilot, tail, lambda line: ing.send_fast(line + b"\n"), b"cluster tail")

    run(body, timeout=80)

