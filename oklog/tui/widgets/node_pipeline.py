"""One node's pipeline: ingest segments by state, rates with sparklines, store,
consumer/replication and compaction figures (``oklog.node.state.Pipeline``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Label, Sparkline, Static

from oklog.node.state import ConsumerStats, Pipeline
from oklog.tui.model import (
    LAG_WARN,
    History,
    Member,
    count,
    duration,
    figure,
    human_bytes,
    rate,
)
from oklog.tui.widgets.result_log import escape

SEGMENT_STATES: Final[tuple[Literal["active"], Literal["flushed"], Literal["pending"]]] = (
    "active", "flushed", "pending")
FAILURE_KINDS: Final[tuple[Literal["replicate"], Literal["gather"], Literal["commit"]]] = (
    "replicate", "gather", "commit")


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
        if "bytes" in key.split("_"):
            return human_bytes(v)
        if key.endswith(("seconds", "age")):
            return duration(float(v))
        return count(v) if float(v).is_integer() else f"{v:.2f}"
    return str(v)


def generic(title: str, d: Mapping[str, object] | None) -> Text:
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


def _section(title: str, style: str, absent: str | None) -> Table:
    """A section's table with its title; ``absent``: the one row it shows when
    the node does not run that part."""
    t = _grid()
    t.title, t.title_justify, t.title_style = title, "left", style
    if absent is not None:
        t.add_row(absent, "", "")
    return t


def _n(v: object) -> str:
    return count(figure(v))


def ingest_table(p: Pipeline) -> Table:
    ing = p.get("ingest")
    t = _section("INGEST", "bold cyan", "not an ingest node" if ing is None else None)
    if ing is None:
        return t
    t.add_row(Text("segment", style="bold"), Text("count", style="bold"), Text("bytes", style="bold"))
    segs, sizes = ing.get("segments"), ing.get("bytes")
    for s in SEGMENT_STATES:
        t.add_row(s, _n(segs.get(s) if segs is not None else 0),
                  human_bytes(figure(sizes.get(s) if sizes is not None else 0)))
    lag = figure(ing.get("oldest_flushed_age_seconds"))
    t.add_row("consumer lag", Text(duration(lag), style="bold yellow" if lag >= LAG_WARN else ""), "")
    t.add_row("records in", _n(ing.get("records_in")), human_bytes(figure(ing.get("bytes_in"))))
    t.add_row("connections", _n(ing.get("connections")), f"{_n(ing.get('connections_total'))} total")
    t.add_row("flushes / commits", _n(ing.get("flushes")), _n(ing.get("commits")))
    failures, timeouts = figure(ing.get("failures")), figure(ing.get("pending_timeouts"))
    t.add_row("failed / timed out", Text(count(failures), style="red" if failures + timeouts else ""),
              count(timeouts))
    return t


def store_section(p: Pipeline) -> Group:
    """The store's figures, and compaction's (which include the trash that
    retention fills and purges)."""
    return Group(store_table(p), generic("compaction", p.get("compaction")))


def store_table(p: Pipeline) -> Table:
    st = p.get("store")
    t = _section("STORE", "bold magenta", "not a store node" if st is None else None)
    if st is None:
        return t
    t.add_row("segments", _n(st.get("segments")), human_bytes(figure(st.get("bytes"))))
    t.add_row("written", _n(st.get("segments_written")), human_bytes(figure(st.get("bytes_written"))))
    t.add_row("replicas received", _n(st.get("replications_received")), "")
    q = st.get("quarantined")
    if q:
        t.add_row(Text("quarantined", style="yellow"), Text(str(len(q)), style="yellow"), "")
    return t


def consumer_table(p: Pipeline, rf: int | None) -> Table:
    c = p.get("consumer")
    t = _section("REPLICATION", "bold blue", "no consumer" if c is None else None)
    if c is None:
        return t
    t.add_row("state", str(c.get("state", "?")), "")
    t.add_row("batches", _n(c.get("batches")), "")
    t.add_row("consumed", _n(c.get("segments_consumed")), human_bytes(figure(c.get("bytes_consumed"))))
    t.add_row("replications ok", Text(_n(c.get("replications_ok")), style="green"), "")
    now_failing = _failure_rows(t, p, c)
    eff = figure(c.get("factor_effective"), default=-1)
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


def _failure_rows(t: Table, p: Pipeline, c: ConsumerStats) -> float | None:
    """The failure rows: of the node's recent window when it reports one (returned:
    how many), else the totals since start, as totals (returned: None)."""
    recent = p.get("recent")
    failures = recent.get("failures") if recent is not None else None
    failed, cf = figure(c.get("replications_failed")), figure(c.get("commits_failed"))
    if recent is None or not failures:
        t.add_row("replications failed", Text(count(failed), style="red" if failed else ""), "since start")
        t.add_row("commits failed", Text(count(cf), style="red" if cf else ""), "since start")
        return None
    w = figure(recent.get("window_seconds"), default=60)
    window = f"{w / 60:g}m" if w >= 60 and w % 60 == 0 else duration(w)
    for kind in FAILURE_KINDS:
        n = figure(failures.get(kind))
        t.add_row(f"{kind} failures", Text(count(n), style="bold red" if n else ""), f"last {window}")
    t.add_row("replications failed", count(failed), "since start")
    return sum(figure(failures.get(k)) for k in FAILURE_KINDS)


class NodePipeline(Vertical):
    """A bordered card for one node."""

    def __init__(self, node: str, **kw: Any) -> None:
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

    _latest: tuple[Member | None, Pipeline, History | None, int | None] | None = None

    def on_mount(self) -> None:
        self.call_after_refresh(self._apply)

    def show(self, member: Member | None, p: Pipeline, h: History | None, rf: int | None) -> None:
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
        has_store = "store" in p or "compaction" in p
        sections = ((".ingest", "ingest" in p, ingest_table(p)),
                    (".store", has_store, store_section(p)),
                    (".consumer", "consumer" in p, consumer_table(p, rf)))
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
