"""A drawing of the data flow: ingest members feeding store members through a bus.

     ingest                       store
  ● ing-1  10.0.0.1:7650 ──┬──▶ ● sto-1  10.0.0.4:7650
  ● ing-2  10.0.0.2:7650 ──┼──▶ ● sto-2  10.0.0.5:7650
                           └──▶ ● sto-3  10.0.0.6:7650

Store consumers pull from every ingest member, so every ingest member feeds every
store member; the bus says exactly that without a tangle of lines.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from oklog.tui.model import ClusterState, History, Member, duration, figure, human_bytes, rate
from oklog.tui.widgets.members import STATE_STYLE


def bus_char(row: int, rows: int, left: bool, right: bool) -> str:
    if rows == 1:
        return "─"
    if row == 0:
        return {(True, True): "┬", (True, False): "┐", (False, True): "┌"}.get((left, right), " ")
    if row == rows - 1:
        return {(True, True): "┴", (True, False): "┘", (False, True): "└"}.get((left, right), "│")
    return {(True, True): "┼", (True, False): "┤", (False, True): "├"}.get((left, right), "│")


def label(m: Member, width: int) -> Text:
    t = Text()
    t.append("● ", style=STATE_STYLE.get(m.state, "magenta"))
    name = m.id if len(m.id) <= 18 else m.id[:17] + "…"
    t.append(name, style="bold underline" if m.is_self else "bold")
    t.append(f"  {m.api_addr}" if m.api_addr else "", style="dim")
    t.truncate(width, overflow="ellipsis")
    t.pad_right(width - t.cell_len)
    return t


def ingest_note(state: ClusterState, m: Member, histories: dict[str, History]) -> str:
    p = state.pipelines.get(m.id)
    if p is None:
        return ""
    h = histories.get(m.id)
    rates = h.record_rates() if h else []
    ing = p.get("ingest")
    lag = figure(ing.get("oldest_flushed_age_seconds")) if ing is not None else 0.0
    r = f"{rate(rates[-1])} rec/s · " if rates else ""
    return f"{r}lag {duration(lag)}"


def store_note(state: ClusterState, m: Member) -> str:
    p = state.pipelines.get(m.id)
    if p is None:
        return ""
    st = p.get("store")
    if st is None:
        return "0 segs · 0 B"
    return f"{int(figure(st.get('segments')))} segs · {human_bytes(figure(st.get('bytes')))}"


def draw(state: ClusterState, histories: dict[str, History] | None = None) -> Text:
    histories = histories or {}
    ingest = [m for m in state.members if m.ingests]
    store = [m for m in state.members if m.stores]
    out = Text()
    if not ingest and not store:
        return Text("no members with an ingest or store role", style="dim")
    width = max([len(label(m, 80).plain.rstrip()) for m in ingest + store] + [10])
    rows = max(len(ingest), len(store), 1)
    notes = [ingest_note(state, m, histories) for m in ingest]
    nw = max([len(n) for n in notes] + [0])
    out.append("  " + "ingest".ljust(width + (nw + 2 if nw else 0)) + "        " + "store" + "\n",
               style="bold dim")
    for r in range(rows):
        left, right = r < len(ingest), r < len(store)
        out.append("  ")
        out.append_text(label(ingest[r], width) if left else Text(" " * width))
        if nw:
            out.append(("  " + notes[r].rjust(nw)) if left else " " * (nw + 2), style="dim italic")
        out.append(" ──" if left else "   ", style="cyan")
        out.append(bus_char(r, rows, left, right) if ingest and store else " ", style="cyan")
        out.append("──▶ " if right else "    ", style="cyan")
        if right:
            out.append_text(label(store[r], width))
            note = store_note(state, store[r])
            if note:
                out.append(f"  {note}", style="dim italic")
        out.append("\n")
    if not ingest:
        out.append("  (no ingest members: nothing feeds the store tier)\n", style="yellow")
    if not store:
        out.append("  (no store members: ingested data is queued, not stored)\n", style="yellow")
    me = state.me
    if me is not None:
        out.append(f"\n  attached to {me.id} (underlined)", style="dim")
    out.rstrip()
    return out


class Topology(Static):
    def show(self, state: ClusterState, histories: dict[str, History] | None = None) -> None:
        self.update(draw(state, histories))
