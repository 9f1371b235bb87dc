"""The query view: q, regex, from/to, topic; results stream in as they arrive.

The query bar takes ``oklog query``'s term flags after the search text
(``-i``, ``-v TERM``, ``-where EXPR``, ``-q TERM``: ``oklog.tui.querybar``). Above
the results a ``Histogram`` shows the matches per time bucket over the query's
range, from ``/store/hits`` asked for alongside the records; Enter on a
selection of buckets narrows from/to to them and runs the query again
(Backspace on the histogram goes back to the range before).

The query runs in an exclusive worker, so a new query cancels the one before it,
and Esc cancels it outright. Every record of the result goes to a ``ResultSpool``
(a temporary file); the screen shows one page of ``max_lines`` records in a
``ResultLog``, the last page while the result arrives, and ``[`` ``]`` ``{`` ``}``
move through all of it. The status line carries the running count, the page and
the node's ``X-Oklog-*`` statistics. Save writes the whole result from the spool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Button, Checkbox, Input, Static

from oklog.query.engine import QueryError
from oklog.tui.client import ClientError, EndpointMissing, QueryRequest
from oklog.tui.messages import QueryFinished
from oklog.tui.model import count, duration, human_bytes
from oklog.tui.querybar import QueryBarError, parse_bar
from oklog.tui.spool import ResultSpool
from oklog.tui.widgets.histogram import (
    MAX_BUCKETS,
    MIN_BUCKETS,
    Histogram,
    Layout,
    bound_ms,
    choose_step,
    rfc3339_ms,
    step_text,
)
from oklog.tui.widgets.result_log import ResultLog, format_buffer
from oklog.tui.widgets.save_dialog import SaveDialog, SaveRequest

if TYPE_CHECKING:
    from oklog.tui.app import OklogApp

STATUS_EVERY = 0.1


def incomplete_note(partial: bool, stats: dict[str, str]) -> str:
    """What the node said about missing records (206, ``X-Oklog-Errors``), or ""."""
    errors = stats.get("errors", "").strip()
    if errors:
        return f"results may be incomplete: {errors}"
    if partial:
        return "results may be incomplete: the node answered 206 (partial content)"
    return ""


def regex_label(on: bool) -> str:
    return "regex: on" if on else "regex: off"


class QueryView(Vertical):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel query"),
        Binding("ctrl+s", "save", "Save results"),
        Binding("ctrl+t", "toggle_regex", "Regex"),
        Binding("left_square_bracket", "page(-1)", "Earlier", key_display="["),
        Binding("right_square_bracket", "page(1)", "Later", key_display="]"),
        Binding("left_curly_bracket", "page_to('first')", "First page", show=False),
        Binding("right_curly_bracket", "page_to('last')", "Last page", show=False),
        Binding("/", "focus_query", "Edit query", show=False),
    ]

    def __init__(self, max_lines: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.max_lines = max_lines
        self.records = 0
        self.running = False
        self.outcome = ""  # "", done, partial, cancelled, error
        self.detail = ""
        self.stats: dict[str, str] = {}
        self.request: QueryRequest | None = None
        self.started = 0.0
        self.elapsed = 0.0
        self.shown_while_running = 0  # records on screen before the response ended
        self.spool: ResultSpool | None = None
        self.incomplete = ""  # why the result may be missing records, from the node
        self.generation = 0  # of the latest query
        self.page_start: int | None = None  # first record on screen; None: following the end
        self.hits_asked: tuple[QueryRequest, str] | None = None  # the latest /store/hits request
        self.ranges: list[tuple[str, str]] = []  # (from, to) before each narrowing

    def compose(self) -> ComposeResult:
        with Horizontal(id="query-form"):
            yield Input(placeholder="query: substring (ctrl+t: regex) — Enter runs", id="q")
            yield Checkbox(regex_label(False), id="regex", compact=True)
            yield Input("1h", placeholder="from", id="from", tooltip="from: 5m, 2h (ago), RFC 3339 or ULID")
            yield Input(placeholder="to (now)", id="to", tooltip="to: now, 5m (ago), RFC 3339 or ULID")
            yield Input(placeholder="topic", id="topic", tooltip="only records of this topic")
            yield Button("Run", id="run", variant="primary", compact=True)
            yield Button("Save", id="save", compact=True)
        yield Histogram(id="hist")
        yield Static(id="query-status")
        yield ResultLog(self.max_lines, id="results")

    def on_mount(self) -> None:
        self.set_interval(STATUS_EVERY, self.show_status)
        self.show_status()

    def on_unmount(self) -> None:
        if self.spool is not None:
            self.spool.close()

    @property
    def oklog(self) -> OklogApp:
        return cast("OklogApp", self.app)

    @property
    def results(self) -> ResultLog:
        return self.query_one("#results", ResultLog)

    @property
    def histogram(self) -> Histogram:
        return self.query_one("#hist", Histogram)

    def form(self) -> QueryRequest:
        """The form as a request; ``QueryBarError`` if the query bar cannot be run."""
        bar = parse_bar(self.query_one("#q", Input).value)
        return QueryRequest(
            q=bar.q,
            regex=self.query_one("#regex", Checkbox).value or bar.regex,
            from_=self.query_one("#from", Input).value,
            to=self.query_one("#to", Input).value,
            topic=self.query_one("#topic", Input).value,
            more=bar.more,
            without=bar.without,
            where=bar.where,
            icase=bar.icase,
        )

    def submit(self) -> bool:
        """Run the form's query; a query bar that cannot run is an error on screen."""
        try:
            request = self.form()
        except QueryBarError as e:
            if self.running:
                self.workers.cancel_group(self, "query")
            self.workers.cancel_group(self, "hits")
            self.histogram.clear()  # the bars of an earlier query would look like this one's
            self.outcome, self.detail, self.incomplete = "error", f"query bar: {e}", ""
            self.show_status()
            return False
        self.run_query(request)
        return True

    # -- actions -------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.submit():
            self.results.focus()  # so Esc, the view keys and scrolling work at once

    def on_histogram_narrow(self, event: Histogram.Narrow) -> None:
        """Narrow from/to to the selected buckets, [start, end), and run the query
        on screen again (not text edited in the form since)."""
        event.stop()
        if self.request is None:
            return
        self.ranges.append((self.request.from_, self.request.to))
        self.rerun(rfc3339_ms(event.start_ms), rfc3339_ms(event.end_ms - 1))  # "to" holds its ms

    def on_histogram_back(self, event: Histogram.Back) -> None:
        event.stop()
        if not self.ranges or self.request is None:
            self.notify("no wider range to go back to", severity="warning")
            return
        self.rerun(*self.ranges.pop())

    def rerun(self, from_: str, to: str) -> None:
        assert self.request is not None
        self.query_one("#from", Input).value, self.query_one("#to", Input).value = from_, to
        self.run_query(replace(self.request, from_=from_, to=to))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "run":
            self.submit()
        elif event.button.id == "save":
            self.action_save()

    def action_focus_query(self) -> None:
        self.query_one("#q", Input).focus()

    def action_toggle_regex(self) -> None:
        box = self.query_one("#regex", Checkbox)
        box.value = not box.value

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        if event.checkbox.id == "regex":
            event.checkbox.label = regex_label(event.value)

    # -- pages ---------------------------------------------------------------------------

    def shown_range(self) -> tuple[int, int]:
        """(first, end) record numbers on screen."""
        kept = self.spool.kept if self.spool is not None else self.records
        if self.page_start is None:
            return max(0, kept - self.max_lines), kept
        return self.page_start, min(kept, self.page_start + self.max_lines)

    def action_page(self, step: int) -> None:
        start, _ = self.shown_range()
        self.show_page(start + step * self.max_lines)

    def action_page_to(self, where: str) -> None:
        self.show_page(0 if where == "first" else None)

    def show_page(self, start: int | None) -> None:
        """Put records ``start``.. on screen (None or past the end: the last page,
        following new records while the query runs)."""
        spool = self.spool
        if spool is None:
            return
        if start is not None and start + self.max_lines >= spool.kept:
            start = None
        if start is not None:
            start = max(0, start)
        if start == self.page_start and start is not None:
            return
        was = self.page_start
        self.page_start = start
        log = self.results
        log.reset()
        log.auto_scroll = start is None
        first, end = self.shown_range()
        lines = spool.read(first, end)
        if lines:
            log.add(b"\n".join(lines) + b"\n", len(lines))
            log.flush()
        if start is not None and (was is None or start < was):
            log.scroll_end(animate=False)  # going back: continue upward from the bottom
        else:
            log.scroll_home(animate=False)
        if start is None:
            log.scroll_end(animate=False)
        self.show_status()

    def action_cancel(self) -> None:
        """Esc: cancel the running query; with none running, leave the form field."""
        if self.running:
            self.workers.cancel_group(self, "query")
            self.workers.cancel_group(self, "hits")
            self.histogram.stop()
        elif isinstance(self.app.focused, Input):
            self.results.focus()

    def action_save(self) -> None:
        spool = self.spool
        if self.request is None or spool is None:
            self.notify("run a query first", severity="warning")
            return
        stamp = datetime.fromtimestamp(self.oklog.clock(), tz=UTC).strftime("%Y%m%d-%H%M%S")
        which = ""
        if self.running:
            which = "received so far (the query is still running)"
        elif self.outcome == "cancelled":
            which = "received before the query was cancelled"
        elif self.outcome == "partial":
            which = "of this partial result"
        if spool.truncated:
            which = (which + "; " if which else "") + \
                f"the first {count(spool.kept)} of {count(spool.records)} (the rest was not kept)"
        self.app.push_screen(SaveDialog(f"oklog-query-{stamp}.log", spool.kept, spool.size, which),
                             self._save_to)

    def _save_to(self, choice: SaveRequest | None) -> None:
        if choice is not None and self.spool is not None:
            self.save_results(choice, self.spool)

    # -- workers -------------------------------------------------------------------------

    @work(exclusive=True, group="query")
    async def run_query(self, request: QueryRequest) -> None:
        # The query this replaced may still be unwinding (exclusive workers cancel,
        # they do not wait): only the latest query writes the view's state.
        self.generation += 1
        gen = self.generation
        log = self.results
        log.reset()
        log.auto_scroll = True
        log.set_query(request.q, request.regex, request.icase)
        if self.spool is not None:
            self.spool.close()
        self.spool = spool = ResultSpool()
        self.page_start = None
        now = self.oklog.clock()
        self.request = request
        self.records, self.stats, self.detail, self.outcome = 0, {}, "", ""
        self.incomplete = ""
        self.shown_while_running = 0
        self.running, self.started = True, self.oklog.clock()
        self.histogram.start(None)  # now: the bars of the query before are gone at once
        self.count_hits(request, now)
        try:
            async with self.oklog.client.query(request, now) as stream:
                self.stats = stream.stats
                self.incomplete = incomplete_note(stream.partial, stream.stats)
                async for buf in stream.buffers():
                    n = buf.count(b"\n")
                    self.records += n
                    spool.add(buf, n)
                    if self.page_start is None:
                        log.add(buf, n)
                        if log.written == 0 or time.monotonic() - self._last_flush > 0.1:
                            self._flush()
                    await asyncio.sleep(0)  # let the UI breathe between chunks
                self.outcome = "partial" if stream.partial else "done"
        except asyncio.CancelledError:
            if gen == self.generation:
                self.outcome = "cancelled"
            raise
        except ClientError as e:
            if gen == self.generation:
                self.outcome, self.detail = "error", str(e)
        finally:
            if gen == self.generation:
                self.running = False
                self.elapsed = self.oklog.clock() - self.started
                if self.page_start is None:
                    log.flush()
                self.show_status()
                self.post_message(QueryFinished(self.outcome, self.records, self.detail))

    _last_flush = 0.0

    @work(exclusive=True, group="hits")
    async def count_hits(self, request: QueryRequest, now: float) -> None:
        """The histogram of ``request`` over its from/to (to: ``now`` if open)."""
        hist = self.histogram
        p = request.params(now)
        hi = int(now * 1000) + 1
        try:
            if "to" in p:
                hi = bound_ms(str(p["to"]), upper=True)
            lo = bound_ms(str(p["from"]), upper=False) if "from" in p else None
        except QueryError as e:
            hist.show_error(str(e))
            return
        if "to" not in p:  # the bars end now; records arriving later are the tail's
            request = replace(request, to=rfc3339_ms(hi - 1))
        room = hist.content_size.width or MAX_BUCKETS
        most = max(MIN_BUCKETS, min(MAX_BUCKETS, room))
        client = self.oklog.client
        try:
            if lo is None:  # from the first match on: find its day first
                day = await client.hits(request, "1d", now)
                lo = min(day.buckets, default=hi - 1)
            step = choose_step(max(1, hi - lo), most)
            self.hits_asked = (request, step_text(step))
            hits = await client.hits(request, step_text(step), now)
        except EndpointMissing:
            hist.show_error("this node does not count matches (no /store/hits)")
            return
        except ClientError as e:
            hist.show_error(str(e))
            return
        hist.show_hits(Layout(lo, hi, hits.step_ms or step), hits)

    def _flush(self) -> None:
        if self.results.flush() and self.running:
            self.shown_while_running = self.results.written
        self._last_flush = time.monotonic()

    @work(group="save")
    async def save_results(self, choice: SaveRequest, spool: ResultSpool) -> None:
        """Exactly the records the dialog named (those kept when it opened), in the
        format it named; the spool stays readable while a query appends to it."""
        path, raw, want = choice.path, choice.raw, choice.records
        blocks = spool.buffers(choice.size)  # now: a new query may close the spool
        try:
            n = await asyncio.to_thread(write_records, path, blocks, raw)
        except OSError as e:
            self.notify(f"saving to {path} failed: {e}", severity="error", timeout=8, markup=False)
            return
        if n != want:  # cannot happen unless the spool was closed under us
            self.notify(f"saved {count(n)} of {count(want)} records to {path}", severity="error",
                        timeout=8, markup=False)
            return
        self.notify(f"saved {count(n)} records to {path}", markup=False)

    # -- status ----------------------------------------------------------------------------

    def status_text(self) -> Text:
        t = Text()
        if self.incomplete and (self.running or self.outcome):
            t.append(f"⚠ {self.incomplete}\n", style="bold yellow")
        if self.running:
            t.append("● running ", style="bold yellow")
            el = self.oklog.clock() - self.started
        elif self.outcome:
            style = {"done": "bold green", "partial": "bold yellow", "cancelled": "bold yellow",
                     "error": "bold red"}[self.outcome]
            label = {"done": "✔ done", "partial": "◐ partial result",
                     "cancelled": "■ cancelled", "error": "✖ error"}[self.outcome]
            t.append(label + " ", style=style)
            el = self.elapsed
        else:
            t.append("Enter a query and press Enter. Esc cancels; a new query replaces the running one.",
                     style="dim")
            return t
        t.append(f"{count(self.records)} records", style="bold")
        t.append(f" in {duration(el)}")
        st = self.stats
        if st:
            parts = []
            for key, name in (("nodes queried", "nodes"), ("segments queried", "segments"),
                              ("error count", "errors"), ("duration", "plan")):
                if key in st:
                    parts.append(f"{name} {st[key]}")
            if "max data set size" in st:
                try:
                    parts.append(f"data {human_bytes(float(st['max data set size']))}")
                except ValueError:
                    pass
            t.append("  ·  " + " · ".join(parts), style="dim")
        if self.records > self.max_lines:
            first, end = self.shown_range()
            t.append(f"  ·  showing records {count(first + 1)}–{count(end)} of {count(self.records)}"
                     "  ([ ] earlier/later page, { } first/last, ctrl+s saves all)", style="bold cyan")
        if self.spool is not None and self.spool.truncated:
            t.append(f"\nonly the first {count(self.spool.kept)} records "
                     f"({human_bytes(self.spool.size)}) are kept for paging and saving: narrow the query",
                     style="bold yellow")
        if self.detail:
            t.append(f"\n{self.detail}", style="red")
        return t

    def show_status(self) -> None:
        try:
            status = self.query_one("#query-status", Static)
        except NoMatches:  # a worker finishing while the app shuts down
            return
        status.update(self.status_text())


def write_records(path: str, blocks: Iterable[bytes], raw: bool) -> int:
    """Write buffers of records to ``path``, as the node sent them (``raw``) or as
    on screen; how many records were written."""
    n = 0
    with open(path, "wb") as f:
        for buf in blocks:
            f.write(buf if raw else format_buffer(buf).encode("utf-8"))
            n += buf.count(b"\n")
    return n
