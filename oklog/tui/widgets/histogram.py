"""Matches over time for the Query view: one bar per bucket of ``/store/hits``.

The bars come from the node's exact counts (``GET /store/hits``), asked for at
the same time as the records, so they are drawn before the records arrive. An
incomplete answer (206, ``complete`` false) says so on a line of its own above
the bars, which are then drawn in the warning colour: short bars must not look
like quiet minutes. The operator picks buckets with the keyboard (←/→ move,
shift+←/→ extend, Home/End) or the mouse (click, drag); Enter posts
``Histogram.Narrow`` with the selection's time range.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget

from oklog.query.params import parse_bound
from oklog.records.record import ulid_ms
from oklog.tui.client import Hits
from oklog.tui.model import count

# Bucket widths a person reads at a glance, in milliseconds.
NICE_STEPS = [
    1, 2, 5, 10, 20, 50, 100, 200, 500,
    1_000, 2_000, 5_000, 10_000, 15_000, 30_000,
    60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000,
    3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000,
    86_400_000, 172_800_000, 604_800_000, 2_592_000_000, 31_536_000_000,
]
MAX_BUCKETS = 120
MIN_BUCKETS = 40
BAR_ROWS = 5
_EIGHTHS = " ▁▂▃▄▅▆▇█"


def choose_step(span_ms: int, max_buckets: int = MAX_BUCKETS) -> int:
    """The smallest nice step giving at most ``max_buckets`` buckets over ``span_ms``."""
    max_buckets = max(1, max_buckets)
    for s in NICE_STEPS:
        if -(-span_ms // s) <= max_buckets:
            return s
    return -(-span_ms // max_buckets)


def step_text(ms: int) -> str:
    """A step as ``/store/hits`` takes it: ``500ms``, ``30s``, ``5m``, ``2h``, ``1d``."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def bound_ms(text: str, upper: bool) -> int:
    """An API from/to value (RFC 3339 or ULID) → ms; an upper bound exclusive.
    Raises ``QueryError`` for one the node would refuse."""
    key = parse_bound(text, upper)
    ms = ulid_ms(key[:26])
    return ms + 1 if upper and len(key) > 26 else ms


def time_text(ms: int, step_ms: int = 1) -> str:
    """UTC ``2026-11-30 10:05:00`` (``.123`` too when the step is not whole seconds)."""
    sec, rem = divmod(ms, 1000)
    head = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
    return f"{head}.{rem:03d}" if step_ms % 1000 else head


def rfc3339_ms(ms: int) -> str:
    """A query bound to the millisecond: ``2026-11-30T10:05:00.000Z``."""
    sec, rem = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{rem:03d}Z"


@dataclass(frozen=True)
class Layout:
    """The buckets of ``[lo, hi)``: bucket i starts at ``first + i * step``."""

    lo: int
    hi: int
    step: int

    @property
    def first(self) -> int:
        return self.lo // self.step * self.step

    @property
    def n(self) -> int:
        return max(1, -(-(self.hi - self.first) // self.step))

    def bounds(self, i: int, j: int | None = None) -> tuple[int, int]:
        """[start, end) of buckets i..j, clipped to the query's range."""
        j = i if j is None else j
        return max(self.lo, self.first + i * self.step), min(self.hi, self.first + (j + 1) * self.step)

    def counts(self, hits: Hits) -> list[int]:
        out = [0] * self.n
        for ms, c in hits.buckets.items():
            i = (ms - self.first) // self.step
            if 0 <= i < self.n:
                out[i] += c
        return out


class Histogram(Widget, can_focus=True):
    DEFAULT_CSS = """
    Histogram {
        height: auto;
        min-height: 3;
        padding: 0 1;
    }
    Histogram:focus {
        background: $boost;
    }
    """
    BINDINGS = [
        Binding("left", "move(-1)", "Bucket ←", show=False),
        Binding("right", "move(1)", "Bucket →", show=False),
        Binding("shift+left", "extend(-1)", "Extend ←", show=False),
        Binding("shift+right", "extend(1)", "Extend →", show=False),
        Binding("home", "jump(0)", "First bucket", show=False),
        Binding("end", "jump(-1)", "Last bucket", show=False),
        Binding("enter", "narrow", "Narrow to selection"),
        Binding("backspace", "back", "Previous range"),
    ]

    class Back(Message):
        """Go back to the range before the last narrowing."""

    class Narrow(Message):
        """Run the query again over [start_ms, end_ms)."""

        def __init__(self, start_ms: int, end_ms: int) -> None:
            super().__init__()
            self.start_ms = start_ms
            self.end_ms = end_ms

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.span: Layout | None = None
        self.hits: Hits | None = None
        self.values: list[int] = []
        self.state = "idle"  # idle, counting, done, error
        self.error = ""
        self.cursor: int | None = None  # None: nothing selected yet
        self.sel_from: int | None = None  # with the cursor, the selection's ends
        self._dragging = False

    # -- state ---------------------------------------------------------------------------

    def start(self, layout: Layout | None) -> None:
        self.span, self.hits, self.values = layout, None, []
        self.state, self.error = "counting", ""
        self.cursor, self.sel_from = None, None
        self.refresh(layout=True)

    def clear(self) -> None:
        """No query to show (the last one could not run)."""
        self.span, self.hits, self.values, self.state = None, None, [], "idle"
        self.cursor = self.sel_from = None
        self.refresh(layout=True)

    def show_hits(self, layout: Layout, hits: Hits) -> None:
        self.span, self.hits = layout, hits
        self.values = layout.counts(hits)
        self.state = "done"
        self.refresh(layout=True)

    def show_error(self, text: str) -> None:
        self.state, self.error = "error", text
        self.refresh(layout=True)

    def stop(self) -> None:
        if self.state == "counting":
            self.state, self.error = "error", "cancelled"
            self.refresh(layout=True)

    def selection(self) -> tuple[int, int] | None:
        """The selected buckets (first, last), or None."""
        if self.state != "done" or not self.values or self.cursor is None:
            return None
        a = self.cursor if self.sel_from is None else self.sel_from
        return min(a, self.cursor), max(a, self.cursor)

    # -- keys and mouse ------------------------------------------------------------------

    def _step(self, d: int) -> int:
        """The bucket ``d`` from the cursor; with no cursor, the first or last one."""
        last = len(self.values) - 1
        if self.cursor is None:
            return 0 if d > 0 else last
        return max(0, min(last, self.cursor + d))

    def action_move(self, d: int) -> None:
        if self.values:
            self.cursor = self._step(d)
            self.sel_from = None
            self.refresh()

    def action_extend(self, d: int) -> None:
        if self.values:
            if self.cursor is None:
                self.cursor = self._step(d)
            elif self.sel_from is None:
                self.sel_from = self.cursor
                self.cursor = self._step(d)
            else:
                self.cursor = self._step(d)
            self.refresh()

    def action_jump(self, where: int) -> None:
        if self.values:
            self.cursor = 0 if where == 0 else len(self.values) - 1
            self.sel_from = None
            self.refresh()

    def action_narrow(self) -> None:
        sel = self.selection()
        if sel is None or self.span is None:
            return
        start, end = self.span.bounds(*sel)
        if start < end:
            self.post_message(self.Narrow(start, end))

    def action_back(self) -> None:
        self.post_message(self.Back())

    def _col(self) -> int:
        return max(1, min(3, (self.content_size.width or 1) // max(1, len(self.values))))

    def _bucket_at(self, x: int) -> int | None:
        if not self.values:
            return None
        i = x // self._col()
        return i if 0 <= i < len(self.values) else None

    def _bar_row(self, y: int) -> bool:
        top = 2 if self.hits is not None and not self.hits.complete else 1
        return top <= y < top + BAR_ROWS

    def on_mouse_down(self, event: events.MouseDown) -> None:
        i = self._bucket_at(event.x - 1)  # the padding column
        if i is None or not self._bar_row(event.y):
            return
        self.focus()
        self.cursor, self.sel_from = i, i
        self._dragging = True
        self.capture_mouse()
        self.refresh()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self._dragging and self.values:
            x = max(0, event.x - 1)
            self.cursor = min(len(self.values) - 1, x // self._col())
            self.refresh()

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self._dragging:
            self._dragging = False
            self.release_mouse()

    # -- drawing -------------------------------------------------------------------------

    def render(self) -> Text:
        t = Text(no_wrap=True, overflow="ellipsis")
        lay, hits = self.span, self.hits
        if self.state == "idle":
            t.append("histogram: run a query to see its matches over time", style="dim")
            return t
        if self.state == "error":
            t.append(f"histogram unavailable: {_printable(self.error)}", style="yellow")
            return t
        if self.state == "counting" or hits is None or lay is None:
            t.append("histogram: counting matches…", style="dim")
            return t
        if not hits.complete:
            why = _printable(hits.errors) or f"the node answered {hits.status}"
            t.append(f"⚠ PARTIAL: counts may be short, some store members did not answer: {why}\n",
                     style="bold black on yellow")
        t.append(f"{count(hits.total)} matches", style="bold")
        t.append(f" · {step_text(lay.step)} buckets · {time_text(lay.lo, lay.step)} – "
                 f"{time_text(lay.hi, lay.step)} UTC", style="dim")
        sel = self.selection()
        if sel is not None:
            a, b = lay.bounds(*sel)
            n = sum(self.values[sel[0] : sel[1] + 1])
            t.append(f" · selected {time_text(a, lay.step)} – {time_text(b, lay.step)}: {count(n)}",
                     style="bold cyan")
            t.append("  (Enter narrows, Backspace goes back)" if self.has_focus else "", style="dim")
        elif self.has_focus:
            t.append("  (←/→ pick a bucket, shift+←/→ more, or drag)", style="dim")
        t.append("\n")
        top = max(self.values) or 1
        col = self._col()
        bar_style = "yellow" if not hits.complete else "green"
        for row in range(BAR_ROWS - 1, -1, -1):
            for i, c in enumerate(self.values):
                eighths = round(c * BAR_ROWS * 8 / top)
                if c and not eighths:
                    eighths = 1  # a bucket with matches is never blank
                cell = _EIGHTHS[max(0, min(8, eighths - row * 8))]
                style = Style.parse(bar_style)
                if sel is not None and sel[0] <= i <= sel[1]:
                    style += Style(bgcolor="grey30" if i != self.cursor else "grey50")
                t.append(cell * col, style=style)
            t.append("\n")
        left, right = time_text(lay.first, lay.step), time_text(lay.first + len(self.values) * lay.step, lay.step)
        width = len(self.values) * col
        gap = max(1, width - len(left) - len(right))
        t.append(left + " " * gap + right, style="dim")
        return t


def _printable(text: str) -> str:
    """Remote text on one line: control characters shown as spaces."""
    return "".join(c if c.isprintable() else " " for c in text)[:300]
