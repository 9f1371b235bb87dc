"""The tail view: a live stream of matching records, pause/resume and follow.

The stream (``GET /store/stream``) is opened when the view is first shown and
reconnects by itself with backoff; a node without the endpoint (404) gets a clear
message instead of a retry loop. While paused, records keep arriving and are
buffered (the last ``max_lines``); resume shows them. A new filter starts a new
view: the lines and counts of the old one are cleared. Records the node could
not deliver (its in-band ``oklog: stream dropped N records`` notices) and those
that fell out of the pause buffer are counted in the status line.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Button, Checkbox, Input, Static

from oklog.tui.client import ApiError, ClientError, EndpointMissing
from oklog.tui.model import count, rate
from oklog.tui.widgets.query import regex_label
from oklog.tui.widgets.result_log import ResultLog

if TYPE_CHECKING:
    from oklog.tui.app import OklogApp

RETRY_MIN, RETRY_MAX = 0.5, 10.0
RATE_EVERY = 2.0  # seconds between rate figures
# The node's notice of records it dropped for this stream (topic "oklog").
DROP_NOTICE = re.compile(rb"^[0-9A-Za-z]{26} oklog [^\n]*?dropped (\d+) records?", re.M)


def dropped_in(buf: bytes) -> int:
    """Records the node reports dropped in a buffer of the stream (0 if none)."""
    if b" oklog " not in buf:
        return 0
    return sum(int(m.group(1)) for m in DROP_NOTICE.finditer(buf))


class TailView(Vertical):
    BINDINGS = [
        Binding("space", "toggle_pause", "Pause/resume"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("c", "clear", "Clear"),
        Binding("/", "focus_filter", "Filter", show=False),
        Binding("ctrl+t", "toggle_regex", "Regex", show=False),
        Binding("escape", "leave_filter", "Leave filter", show=False),
    ]

    def __init__(self, max_lines: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.max_lines = max_lines
        self.started = False
        self.state = "idle"  # idle, connecting, live, retrying, missing, error
        self.detail = ""
        self.records = 0
        self.dropped = 0  # reported by the node for this stream
        self._rate_mark = (0.0, 0)
        self.rate = 0.0
        self.filter: tuple[str, bool] | None = None  # of the stream being shown

    def compose(self) -> ComposeResult:
        with Horizontal(id="tail-form"):
            yield Input(placeholder="filter: substring (ctrl+t: regex) — Enter applies", id="tail-q")
            yield Checkbox(regex_label(False), id="tail-regex", compact=True)
            yield Button("Pause", id="pause", compact=True)
            yield Checkbox("follow", True, id="follow", compact=True)
            yield Button("Clear", id="clear", compact=True)
        yield Static(id="tail-status")
        yield ResultLog(self.max_lines, id="tail-log")

    def on_mount(self) -> None:
        self.set_interval(0.5, self.show_status)
        self.show_status()

    @property
    def oklog(self) -> OklogApp:
        return cast("OklogApp", self.app)

    @property
    def log_widget(self) -> ResultLog:
        return self.query_one("#tail-log", ResultLog)

    @property
    def paused(self) -> bool:
        return self.log_widget.paused

    def start(self) -> None:
        """(Re)open the stream with the current filter."""
        self.started = True
        q = self.query_one("#tail-q", Input).value
        regex = self.query_one("#tail-regex", Checkbox).value
        if self.filter is not None and self.filter != (q, regex):
            self.action_clear()  # lines of the old filter would read as matches of the new
        self.filter = (q, regex)
        self.log_widget.set_query(q, regex)
        self.run_tail(q, regex)

    def stop(self) -> None:
        self.workers.cancel_group(self, "tail")
        self.state = "idle"

    # -- actions -------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.start()
        self.log_widget.focus()

    def action_leave_filter(self) -> None:
        if isinstance(self.app.focused, Input):
            self.log_widget.focus()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        if event.checkbox.id == "follow":
            self.set_follow(event.value)
        elif event.checkbox.id == "tail-regex":
            event.checkbox.label = regex_label(event.value)
            if self.started:
                self.start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "pause":
            self.action_toggle_pause()
        elif event.button.id == "clear":
            self.action_clear()

    def action_focus_filter(self) -> None:
        self.query_one("#tail-q", Input).focus()

    def action_toggle_regex(self) -> None:
        box = self.query_one("#tail-regex", Checkbox)
        box.value = not box.value

    def action_toggle_pause(self) -> None:
        log = self.log_widget
        log.paused = not log.paused
        self.query_one("#pause", Button).label = "Resume" if log.paused else "Pause"
        if not log.paused:
            log.flush()
        self.show_status()

    def action_toggle_follow(self) -> None:
        box = self.query_one("#follow", Checkbox)
        box.value = not box.value

    def set_follow(self, on: bool) -> None:
        log = self.log_widget
        log.auto_scroll = on
        if on:
            log.scroll_end(animate=False)

    def action_clear(self) -> None:
        self.log_widget.reset()
        self.records = self.dropped = 0
        self._rate_mark, self.rate = (0.0, 0), 0.0
        self.show_status()

    # -- worker --------------------------------------------------------------------------

    @work(exclusive=True, group="tail")
    async def run_tail(self, q: str, regex: bool) -> None:
        delay = RETRY_MIN
        while True:
            self.state, self.detail = "connecting", ""
            self.show_status()
            try:
                async with self.oklog.client.tail(q, regex) as stream:
                    self.state = "live"
                    delay = RETRY_MIN
                    self.show_status()
                    async for buf in stream.buffers():
                        n = buf.count(b"\n")
                        self.records += n
                        self.dropped += dropped_in(buf)
                        self.log_widget.add(buf, n)
                self.detail = "stream ended"
            except EndpointMissing:
                self.state = "missing"
                self.detail = (f"{self.oklog.client.node} has no live tail endpoint "
                               "(GET /store/stream → 404). Tail needs a node that serves it; "
                               "press Enter in the filter to try again.")
                self.show_status()
                return
            except ApiError as e:
                self.state, self.detail = "error", str(e)
                if 400 <= e.status < 500:
                    self.show_status()
                    return  # a bad filter: retrying will not help
            except ClientError as e:
                self.detail = str(e)
            self.state = "retrying"
            self.show_status()
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)

    # -- status ----------------------------------------------------------------------------

    def status_text(self) -> Text:
        now = self.oklog.clock()
        t0, n0 = self._rate_mark
        if not t0 or now < t0 or self.records < n0:  # first figure, clock step, cleared
            self._rate_mark = (now, self.records)
        elif now - t0 >= RATE_EVERY:
            self.rate = max(0.0, (self.records - n0) / (now - t0))
            self._rate_mark = (now, self.records)
        t = Text()
        label, style = {
            "idle": ("○ not started", "dim"),
            "connecting": ("◌ connecting…", "yellow"),
            "live": ("● live", "bold green"),
            "retrying": ("◌ reconnecting", "bold yellow"),
            "missing": ("✖ live tail unavailable", "bold red"),
            "error": ("✖ error", "bold red"),
        }[self.state]
        t.append(label, style=style)
        t.append(f"  {count(self.records)} records · {rate(self.rate)}/s")
        log = self.log_widget
        lost = self.dropped + log.discarded
        if lost:
            t.append("  ·  ")
            parts = []
            if self.dropped:
                parts.append(f"{count(self.dropped)} dropped by the node (this view fell behind)")
            if log.discarded:
                parts.append(f"{count(log.discarded)} not shown (pause buffer full)")
            t.append("⚠ " + ", ".join(parts), style="bold yellow")
        if log.paused:
            t.append(f"  ·  ⏸ paused, {count(log.pending)} new records buffered", style="bold cyan")
        if not log.auto_scroll:
            t.append("  ·  follow off", style="dim")
        if self.records > self.max_lines:
            t.append(f"  ·  showing the last {count(self.max_lines)}", style="dim")
        if self.detail:
            t.append(f"\n{self.detail}", style="red" if self.state in ("missing", "error") else "yellow")
        return t

    def show_status(self) -> None:
        try:
            status = self.query_one("#tail-status", Static)
        except NoMatches:  # a worker finishing while the app shuts down
            return
        status.update(self.status_text())
