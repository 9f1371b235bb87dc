"""The query view: q, regex, from/to, topic; results stream in as they arrive.

The query runs in an exclusive worker, so a new query cancels the one before it,
and Esc cancels it outright. Results go to a bounded ``ResultLog``; the status
line carries the running count and the node's ``X-Oklog-*`` statistics.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Static

from oklog.tui.client import ClientError, QueryRequest
from oklog.tui.messages import QueryFinished
from oklog.tui.model import count, duration, human_bytes
from oklog.tui.widgets.result_log import ResultLog
from oklog.tui.widgets.save_dialog import SaveDialog

if TYPE_CHECKING:
    from oklog.tui.app import OklogApp

STATUS_EVERY = 0.1


class QueryView(Vertical):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel query"),
        Binding("ctrl+s", "save", "Save results"),
        Binding("ctrl+t", "toggle_regex", "Regex"),
        Binding("/", "focus_query", "Edit query", show=False),
    ]

    def __init__(self, max_lines: int, **kw) -> None:
        super().__init__(**kw)
        self.max_lines = max_lines
        self.records = 0
        self.running = False
        self.outcome = ""  # "", done, partial, cancelled, error
        self.detail = ""
        self.stats: dict[str, str] = {}
        self.request: QueryRequest | None = None
        self.pinned_to: str | None = None  # "to" of the running query, fixed for saving
        self.started = 0.0
        self.elapsed = 0.0
        self.shown_while_running = 0  # records on screen before the response ended

    def compose(self) -> ComposeResult:
        with Horizontal(id="query-form"):
            yield Input(placeholder="query: substring (ctrl+t: regex) — Enter runs", id="q")
            yield Checkbox("regex", id="regex", compact=True)
            yield Input("1h", placeholder="from", id="from", tooltip="from: 5m, 2h (ago), RFC 3339 or ULID")
            yield Input(placeholder="to (now)", id="to", tooltip="to: now, 5m (ago), RFC 3339 or ULID")
            yield Input(placeholder="topic", id="topic", tooltip="only records of this topic")
            yield Button("Run", id="run", variant="primary", compact=True)
            yield Button("Save", id="save", compact=True)
        yield Static(id="query-status")
        yield ResultLog(self.max_lines, id="results")

    def on_mount(self) -> None:
        self.set_interval(STATUS_EVERY, self.show_status)
        self.show_status()

    @property
    def oklog(self) -> OklogApp:
        return cast("OklogApp", self.app)

    @property
    def results(self) -> ResultLog:
        return self.query_one("#results", ResultLog)

    def form(self) -> QueryRequest:
        return QueryRequest(
            q=self.query_one("#q", Input).value,
            regex=self.query_one("#regex", Checkbox).value,
            from_=self.query_one("#from", Input).value,
            to=self.query_one("#to", Input).value,
            topic=self.query_one("#topic", Input).value,
        )

    # -- actions -------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.run_query(self.form())
        self.results.focus()  # so Esc, the view keys and scrolling work at once

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "run":
            self.run_query(self.form())
        elif event.button.id == "save":
            self.action_save()

    def action_focus_query(self) -> None:
        self.query_one("#q", Input).focus()

    def action_toggle_regex(self) -> None:
        box = self.query_one("#regex", Checkbox)
        box.value = not box.value

    def action_cancel(self) -> None:
        """Esc: cancel the running query; with none running, leave the form field."""
        if self.running:
            self.workers.cancel_group(self, "query")
        elif isinstance(self.app.focused, Input):
            self.results.focus()

    def action_save(self) -> None:
        if self.request is None:
            self.notify("run a query first", severity="warning")
            return
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        note = (f"All {count(self.records)} records of the last query (re-read from the node), "
                "as stored: ULID TOPIC LINE.")
        self.app.push_screen(SaveDialog(f"oklog-query-{stamp}.log", note), self._save_to)

    def _save_to(self, path: str | None) -> None:
        if path and self.request is not None:
            self.save_results(path, self.request, self.pinned_to)

    # -- workers -------------------------------------------------------------------------

    @work(exclusive=True, group="query")
    async def run_query(self, request: QueryRequest) -> None:
        log = self.results
        log.reset()
        log.set_query(request.q, request.regex)
        now = self.oklog.clock()
        self.request = request
        self.pinned_to = request.to or datetime.fromtimestamp(now, tz=UTC).isoformat(timespec="milliseconds")
        self.records, self.stats, self.detail, self.outcome = 0, {}, "", ""
        self.shown_while_running = 0
        self.running, self.started = True, self.oklog.clock()
        try:
            async with self.oklog.client.query(request, now) as stream:
                self.stats = stream.stats
                async for buf in stream.buffers():
                    n = buf.count(b"\n")
                    self.records += n
                    log.add(buf, n)
                    if log.written == 0 or time.monotonic() - self._last_flush > 0.1:
                        self._flush()
                    await asyncio.sleep(0)  # let the UI breathe between chunks
                self.outcome = "partial" if stream.partial else "done"
        except asyncio.CancelledError:
            self.outcome = "cancelled"
            raise
        except ClientError as e:
            self.outcome, self.detail = "error", str(e)
        finally:
            self.running = False
            self.elapsed = self.oklog.clock() - self.started
            log.flush()
            self.show_status()
            self.post_message(QueryFinished(self.outcome, self.records, self.detail))

    _last_flush = 0.0

    def _flush(self) -> None:
        if self.results.flush() and self.running:
            self.shown_while_running = self.results.written
        self._last_flush = time.monotonic()

    @work(group="save")
    async def save_results(self, path: str, request: QueryRequest, pinned_to: str | None) -> None:
        req = QueryRequest(request.q, request.regex, request.from_, pinned_to or request.to, request.topic)
        n = 0
        try:
            f = await asyncio.to_thread(open, path, "wb")
            try:
                async with self.oklog.client.query(req) as stream:
                    async for buf in stream.buffers():
                        await asyncio.to_thread(f.write, buf)
                        n += buf.count(b"\n")
            finally:
                await asyncio.to_thread(f.close)
        except (OSError, ClientError) as e:
            self.notify(f"saving to {path} failed: {e}", severity="error", timeout=8)
            return
        self.notify(f"saved {count(n)} records to {path}")

    # -- status ----------------------------------------------------------------------------

    def status_text(self) -> Text:
        t = Text()
        if self.running:
            t.append("● running ", style="bold yellow")
            el = self.oklog.clock() - self.started
        elif self.outcome:
            style = {"done": "bold green", "partial": "bold yellow", "cancelled": "bold yellow",
                     "error": "bold red"}[self.outcome]
            label = {"done": "✔ done", "partial": "◐ partial result (some nodes failed)",
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
            t.append(f"  ·  showing the last {count(self.max_lines)} of {count(self.records)}"
                     " (ctrl+s saves all)", style="bold cyan")
        if self.detail:
            t.append(f"\n{self.detail}", style="red")
        return t

    def show_status(self) -> None:
        self.query_one("#query-status", Static).update(self.status_text())
