"""Warnings worth an operator's attention, highlighted; a calm line when there are none."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from oklog.tui.model import Alert


class AlertList(Static):
    def show(self, alerts: list[Alert]) -> None:
        self.set_class(bool(alerts), "-alerting")
        if not alerts:
            self.update(Text("✔ no warnings: lag steady, members alive, replication succeeding", style="green"))
            return
        t = Text()
        for i, a in enumerate(alerts):
            if i:
                t.append("\n")
            style = "bold red" if a.level == "error" else "bold yellow"
            t.append("✖ " if a.level == "error" else "⚠ ", style=style)
            t.append(f"{a.node}: ", style="bold")
            t.append(a.text, style=style)
        self.update(t)
