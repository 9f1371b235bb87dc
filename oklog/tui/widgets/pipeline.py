"""The pipeline view: warnings on top, then one card per node that reports figures."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll

from oklog.tui.model import ClusterState, History, warnings
from oklog.tui.widgets.alerts import AlertList
from oklog.tui.widgets.node_pipeline import NodePipeline


class PipelineView(Vertical):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.alerts = AlertList(id="alerts")
        self.box = VerticalScroll(id="pipelines")

    def compose(self) -> ComposeResult:
        yield self.alerts
        yield self.box

    def show(self, state: ClusterState, histories: dict[str, History]) -> int:
        alerts = warnings(state, histories)
        self.alerts.show(alerts)
        box = self.box
        if not box.is_attached:
            return len(alerts)
        cards = {c.node: c for c in box.query(NodePipeline)}
        members = {m.id: m for m in state.members}
        # Attached node first, then the others by name.
        order = sorted(state.pipelines, key=lambda n: (n != state.self_id, n))
        for node in list(cards):
            if node not in state.pipelines:
                cards.pop(node).remove()
        for node in order:
            card = cards.get(node)
            if card is None:
                card = NodePipeline(node)
                box.mount(card)
                cards[node] = card
            card.show(members.get(node), state.pipelines[node], histories.get(node), state.replication_factor)
        return len(alerts)

    def reset(self) -> None:
        if self.box.is_attached:
            self.box.remove_children()
