"""One node's pipeline: ingest segments by state, rates with sparklines, store,
consumer/replication, compaction and retention figures."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Label, Sparkline, Static

from oklog.tui.model import (
    LAG_WARN,
    History,
    Member,
    count,
    duration,
    human_bytes,
    num,
    rate,
    sub,
)
from oklog.tui.widgets.result_log import escape

SEGMENT_STATES = ("active", "flushed", "pending")


def _grid() -> Table:
    t = Table.grid(padding=(0, 1))
    t.add_column(style="dim", no_wrap=True)
    t.add_column(justify="right", no_wrap=True)
    t.add_column(justify="right", no_wrap=True)
    return t


def _value(key: str, v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        if key.endswith("bytes"):
            return human_bytes(v)
        if key.endswith(("seconds", "age")):
            return duration(float(v))
        return count(v) if float(v).is_integer() else f"{v:.2f}"
    return str(v)


def generic(title: str, d: dict) -> Text:
    """Whatever simple figures a node reports under a section, as one wrapped line:
    the schema grows, and a new figure shows up here without a code change."""
    t = Text()
    t.append(title, style="bold")
    if not d:
        t.append("  –", style="dim")
        return t
    first = True
    for k, v in d.items():
        if isinstance(v, dict | list) or k == "time" or v in ("", None):
            continue
        t.append("  " if first else " · ", style="dim")
        first = False
        t.append(k.replace("_", " "), style="dim")
        style = "red" if "error" in k else ""
        t.append(f" {_value(k, v)}", style=style)
    return t


def ingest_table(p: dict) -> Table:
    ing = sub(p, "ingest")
    t = _grid()
    t.title, t.title_justify, t.title_style = "INGEST", "left", "bold cyan"
    if not ing:
        t.add_row("not an ingest node", "", "")
        return t
    t.add_row(Text("segment", style="bold"), Text("count", style="bold"), Text("bytes", style="bold"))
    for s in SEGMENT_STATES:
        t.add_row(s, count(num(ing, "segments", s)), human_bytes(num(ing, "bytes", s)))
    lag = num(ing, "oldest_flushed_age_seconds")
    t.add_row("consumer lag", Text(duration(lag), style="bold yellow" if lag >= LAG_WARN else ""), "")
    t.add_row("records in", count(num(ing, "records_in")), human_bytes(num(ing, "bytes_in")))
    t.add_row("connections", count(num(ing, "connections")), f"{count(num(ing, 'connections_total'))} total")
    t.add_row("flushes / commits", count(num(ing, "flushes")), count(num(ing, "commits")))
    fails = num(ing, "failures") + num(ing, "pending_timeouts")
    t.add_row("failed / timed out", Text(count(num(ing, "failures")), style="red" if fails else ""),
              count(num(ing, "pending_timeouts")))
    return t


def store_section(p: dict) -> Group:
    st = sub(p, "store")
    return Group(
        store_table(p),
        generic("compaction", sub(p, "compaction") or sub(st, "compaction")),
        generic("retention", sub(p, "retention") or sub(st, "retention")),
    )


def store_table(p: dict) -> Table:
    st = sub(p, "store")
    t = _grid()
    t.title, t.title_justify, t.title_style = "STORE", "left", "bold magenta"
    if not st:
        t.add_row("not a store node", "", "")
        return t
    t.add_row("segments", count(num(st, "segments")), human_bytes(num(st, "bytes")))
    t.add_row("written", count(num(st, "segments_written")), human_bytes(num(st, "bytes_written")))
    t.add_row("replicas received", count(num(st, "replications_received")), "")
    q = st.get("quarantined")
    if isinstance(q, list) and q:
        t.add_row(Text("quarantined", style="yellow"), Text(str(len(q)), style="yellow"), "")
    return t


def consumer_table(p: dict, rf: int | None) -> Table:
    c = sub(p, "consumer")
    t = _grid()
    t.title, t.title_justify, t.title_style = "REPLICATION", "left", "bold blue"
    if not c:
        t.add_row("no consumer", "", "")
        return t
    t.add_row("state", str(c.get("state", "?")), "")
    t.add_row("batches", count(num(c, "batches")), "")
    t.add_row("consumed", count(num(c, "segments_consumed")), human_bytes(num(c, "bytes_consumed")))
    t.add_row("replications ok", Text(count(num(c, "replications_ok")), style="green"), "")
    recent = sub(sub(p, "recent"), "failures")
    now_failing = sum(num(recent, k) for k in ("replicate", "gather", "commit")) if recent else None
    failed = num(c, "replications_failed")
    cf = num(c, "commits_failed")
    if now_failing is None:  # a node without recent figures: totals only, as totals
        t.add_row("replications failed", Text(count(failed), style="red" if failed else ""), "since start")
        t.add_row("commits failed", Text(count(cf), style="red" if cf else ""), "since start")
    else:
        w = num(sub(p, "recent"), "window_seconds", default=60)
        window = f"{w / 60:g}m" if w >= 60 and w % 60 == 0 else duration(w)
        for kind, label in (("replicate", "replicate"), ("gather", "gather"), ("commit", "commit")):
            n = num(recent, kind)
            t.add_row(f"{label} failures", Text(count(n), style="bold red" if n else ""), f"last {window}")
        t.add_row("replications failed", count(failed), "since start")
    eff = num(c, "factor_effective", default=-1)
    if eff >= 0:
        want = f"of {rf}" if rf else ""
        t.add_row("copies", Text(count(eff), style="yellow" if rf and eff < rf else ""),
                  f"{want}, last batch".lstrip(", "))
    err = c.get("last_error")
    if err:
        style = "red" if now_failing is None or now_failing else "dim"  # dim: an old error
        t.add_row(Text("last error", style=style), "", "")
        t.add_row(Text(escape(str(err))[:60], style=style), "", "")
    return t


class NodePipeline(Vertical):
    """A bordered card for one node."""

    def __init__(self, node: str, **kw) -> None:
        super().__init__(classes="node-pipeline", **kw)
        self.node = node

    def compose(self) -> ComposeResult:
        with Horizontal(classes="tables"):
            yield Static(classes="ingest")
            yield Static(classes="store")
            yield Static(classes="consumer")
        with Horizontal(classes="rate"):
            yield Label("records/s", classes="rate-name")
            yield Sparkline([], classes="records")
            yield Label("", classes="rate-value records-value")
        with Horizontal(classes="rate"):
            yield Label("MB/s", classes="rate-name")
            yield Sparkline([], classes="bytes")
            yield Label("", classes="rate-value bytes-value")

    _latest: tuple | None = None

    def on_mount(self) -> None:
        self.call_after_refresh(self._apply)

    def show(self, member: Member | None, p: dict, h: History | None, rf: int | None) -> None:
        self._latest = (member, p, h, rf)
        if self.is_mounted:
            self._apply()

    def _apply(self) -> None:
        if self._latest is None:
            return
        try:
            self.query_one(".ingest", Static)
        except NoMatches:
            return  # not composed yet: on_mount applies it
        member, p, h, rf = self._latest
        role = member.role if member else "?"
        addr = f" · {member.api_addr}" if member and member.api_addr else ""
        self.border_title = f"{self.node} · {role}{addr}" + (" · attached" if member and member.is_self else "")
        has_store = bool(sub(p, "store") or sub(p, "compaction") or sub(p, "retention"))
        sections = ((".ingest", bool(sub(p, "ingest")), ingest_table(p)),
                    (".store", has_store, store_section(p)),
                    (".consumer", bool(sub(p, "consumer")), consumer_table(p, rf)))
        for sel, present, table in sections:
            w = self.query_one(sel, Static)
            w.update(table)
            w.display = present
        if not any(present for _, present, _ in sections):
            self.query_one(".ingest", Static).display = True
        recs = h.record_rates() if h else []
        byts = [b / 1e6 for b in h.byte_rates()] if h else []
        self.query_one(".records", Sparkline).data = recs or [0.0]
        self.query_one(".bytes", Sparkline).data = byts or [0.0]
        span = f" over {duration(h.samples[-1].time - h.samples[0].time)}" if h and len(h.samples) > 1 else ""
        self.query_one(".records-value", Label).update(
            f"{rate(recs[-1])} rec/s  (peak {rate(max(recs))}{span})" if recs else "measuring…")
        self.query_one(".bytes-value", Label).update(
            f"{byts[-1]:.2f} MB/s  (peak {max(byts):.2f})" if byts else "measuring…")
