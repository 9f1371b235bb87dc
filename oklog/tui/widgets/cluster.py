"""The cluster view: the member list above, the topology drawing below."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical

from oklog.tui.model import ClusterState, History
from oklog.tui.widgets.members import MembersTable
from oklog.tui.widgets.topology import Topology


class ClusterView(Vertical):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.members = MembersTable(id="members")
        self.members.border_title = "members  (enter/click: attach · ? explains the columns)"
        self.topology = Topology(id="topology")
        self.topology.border_title = "topology"

    def compose(self) -> ComposeResult:
        yield self.members
        yield self.topology

    def show(self, state: ClusterState, histories: dict[str, History]) -> None:
        self.members.show(state)
        self.topology.show(state, histories)
