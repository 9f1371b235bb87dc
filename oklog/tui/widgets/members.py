"""Every member of the cluster, one row each; Enter (or a click) attaches to it."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from oklog.tui.messages import AttachNode
from oklog.tui.model import ClusterState, Member, duration

STATE_STYLE = {"alive": "bold green", "suspect": "bold yellow", "dead": "bold red", "left": "dim"}
COLUMNS = ("", "member", "role", "api address", "state", "inc", "last heard", "uptime")
TITLE = "members: {counts}  (enter/click: attach · ? explains the columns)"


def counts_title(state: ClusterState) -> str:
    alive, total, left = state.counts()
    return f"{alive}/{total} alive" + (f", {left} left" if left else "")


def state_text(state: str) -> Text:
    dot = {"alive": "●", "suspect": "◐", "dead": "✖", "left": "○"}.get(state, "?")
    return Text(f"{dot} {state}", style=STATE_STYLE.get(state, "magenta"))


class MembersTable(DataTable[Text]):
    BINDINGS = [Binding("a", "attach", "Attach", tooltip="Attach the TUI to the highlighted member")]

    def __init__(self, **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.members: dict[str, Member] = {}

    def on_mount(self) -> None:
        for c in COLUMNS:
            self.add_column(c, key=c or "mark")

    def show(self, state: ClusterState) -> None:
        keep = None
        if self.row_count and self.cursor_row < self.row_count:
            keep = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        self.clear()
        self.border_title = TITLE.format(counts=counts_title(state))
        self.members = {m.id: m for m in state.members}
        for m in state.members:
            self.add_row(*self.cells(m, state), key=m.id)
        if keep in self.members:
            self.move_cursor(row=self.get_row_index(keep), animate=False)

    @staticmethod
    def cells(m: Member, state: ClusterState) -> list[Text]:
        if m.is_self:
            heard = Text("self", style="dim")
        elif m.last_heard is not None and state.time is not None:
            heard = Text(f"{duration(state.time - m.last_heard)} ago")
        else:
            heard = Text("–", style="dim")
        return [
            Text("▶", style="bold cyan") if m.is_self else Text(" "),
            Text(m.id, style="bold" if m.is_self else ""),
            Text(m.role, style="cyan" if m.role == "ingest" else "magenta" if m.role == "store" else "blue"),
            Text(m.api_addr or "–"),
            state_text(m.state),
            Text("–" if m.incarnation is None else str(m.incarnation), justify="right"),
            heard,
            Text(duration(m.shown_uptime), justify="right", style="dim" if m.down else ""),
        ]

    def selected_member(self) -> Member | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return self.members.get(key) if key is not None else None

    def action_attach(self) -> None:
        m = self.selected_member()
        if m is None:
            return
        if not m.api_addr:
            self.notify(f"{m.id} advertises no API address", severity="warning", markup=False)
            return
        if m.is_self:
            self.notify(f"already attached to {m.id}", markup=False)
            return
        self.post_message(AttachNode(m.api_addr))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_attach()
