"""The TUI attached to a real node that is killed switches to a live member."""

from __future__ import annotations

import pytest
from test_tui_cluster import start_cluster
from test_tui_live import SIZE, run, until

from oklog.tui.app import make_app
from oklog.tui.widgets.members import MembersTable


@pytest.mark.timeout(90)
def test_attached_node_killed_switches_to_a_live_member(node_factory):
    a, b = start_cluster(node_factory, ["ingeststore", "ingeststore"])
    b_id = f"127.0.0.1:{b.ports['cluster']}"

    async def body() -> None:
        app = make_app(a.api, 0.3)
        async with app.run_test(size=SIZE) as pilot:
            table = app.query_one(MembersTable)
            await until(pilot, lambda: table.row_count == 2 and app.state is not None
                        and all(m.state == "alive" for m in app.state.members))
            a.kill()
            await until(pilot, lambda: app.node == b.api)
            notice = f"{a.api} stopped answering: attached to {b.api}"
            await until(pilot, lambda: any(notice in str(n.message) for n in app._notifications))
            await until(pilot, lambda: app.state is not None and app.state.self_id == b_id)
            assert not app.banner.display

    run(body, timeout=60)
