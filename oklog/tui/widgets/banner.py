"""The red line that says the attached node does not answer (and hides itself when it does)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from oklog.tui.messages import NodeUnreachable
from oklog.tui.model import duration


class UnreachableBanner(Static):
    def show_problem(self, msg: NodeUnreachable, refresh: float, now: float) -> None:
        t = Text()
        t.append(f" ✖ node {msg.kind} ", style="bold reverse")
        t.append(f"  {msg.node}: {msg.error}")
        since = ""
        if msg.last_contact is not None:
            since = f" · last contact {duration(now - msg.last_contact)} ago"
        t.append(
            f"\n   retrying every {duration(refresh)} (attempt {msg.failures}){since}"
            " · the figures below are the last known ones",
            style="italic",
        )
        self.update(t)
        self.display = True

    def clear_problem(self) -> None:
        self.display = False
