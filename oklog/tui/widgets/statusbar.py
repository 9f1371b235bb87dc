"""The top line: which node the TUI is attached to and how fresh the picture is."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from oklog.tui.model import ClusterState, duration


class StatusBar(Static):
    """``oklog ▸ attached vm-1 @ 127.0.0.1:7650 · 2/3 members alive · rf 2 · 2 warnings · 0.4s ago``"""

    def __init__(self, node: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.node = node
        self.state: ClusterState | None = None
        self.received: float | None = None
        self.alerts = 0
        self.reachable: bool | None = None

    def on_mount(self) -> None:
        self.show(None)

    def show(self, now: float | None) -> None:
        t = Text()
        t.append(" oklog ", style="bold reverse")
        t.append("  attached ")
        st = self.state
        me = st.me if st else None
        if me is not None:
            t.append(me.id, style="bold")
            t.append(f" @ {self.node}")
        else:
            t.append(self.node, style="bold")
        if st is not None:
            alive, total, _ = st.counts()
            t.append("  ·  ")
            t.append(st.counts_text(), style="" if alive == total else "bold red")
            if st.replication_factor:
                t.append(f"  ·  rf {st.replication_factor}")
        if self.alerts:
            t.append("  ·  ")
            t.append(f"⚠ {self.alerts} warning{'s' if self.alerts != 1 else ''}", style="bold yellow")
        if self.reachable is False:
            t.append("  ·  ")
            t.append("unreachable", style="bold red")
        elif self.received is not None and now is not None:
            t.append(f"  ·  updated {duration(now - self.received)} ago", style="dim")
        elif self.reachable is None:
            t.append("  ·  connecting…", style="dim")
        self.update(t)
