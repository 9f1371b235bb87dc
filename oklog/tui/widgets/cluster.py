"""The cluster view: the member list above, the topology drawing below."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical

from oklog.tui.model import ClusterState, History
from oklog.tui.widgets.members import MembersTable
from oklog.tui.widgets.topology import Topology


class ClusterView(Vertical):
    def compose(self) -> ComposeResult:
        members = MembersTable(id="members")
        members.border_title = "members  (enter/click: attach)"
        yield members
        topo = Topology(id="topology")
        topo.border_title = "topology"
        yield topo

    def show(self, state: ClusterState, histories: dict[str, History]) -> None:
        self.query_one(MembersTable).show(state)
        self.query_one(Topology).show(state, histories)
