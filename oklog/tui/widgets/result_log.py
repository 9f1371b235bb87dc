"""A virtualised, bounded log of records (Textual's ``Log``), fed in batches.

Buffers of raw records are queued with ``add`` and written at most every
``FLUSH_EVERY`` seconds, so a fast stream costs one render per tick rather than
one per network chunk. Only the last ``max_lines`` records are ever parsed or
kept: a result of millions of records uses bounded memory.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol

from rich.highlighter import Highlighter
from rich.text import Text
from textual.widgets import Log

from oklog.tui.client import parse_records

FLUSH_EVERY = 0.1
TIME_WIDTH = len("2026-11-23 20:11:53.123")

try:  # linear-time matching for user patterns when available
    import re2 as _re2
except ImportError:  # pragma: no cover
    _re2 = None


class Match(Protocol):
    def start(self) -> int: ...

    def end(self) -> int: ...


class Pattern(Protocol):
    """What highlighting needs of a compiled pattern (``re``'s or ``re2``'s)."""

    def search(self, string: str) -> Match | None: ...

    def finditer(self, string: str, pos: int = ...) -> Iterator[Match]: ...


def compile_highlight(q: str, regex: bool, icase: bool = False) -> Pattern | None:
    """The pattern whose matches to highlight, or None (empty or invalid q)."""
    if not q:
        return None
    if not regex:
        return re.compile(re.escape(q), re.IGNORECASE if icase else 0)
    for mod in (_re2, re):
        if mod is None:
            continue
        try:
            pattern: Pattern = mod.compile("(?i)" + q if icase else q)
            return pattern
        except Exception:  # noqa: BLE001 - any compile error: just don't highlight
            continue
    return None


class RecordHighlighter(Highlighter):
    """Dim time, coloured topic, reverse-video matches of the query in the line."""

    def __init__(self) -> None:
        self.pattern: Pattern | None = None

    def highlight(self, text: Text) -> None:
        plain = text.plain
        text.stylize("dim", 0, TIME_WIDTH)
        topic_end = plain.find(" ", TIME_WIDTH + 1)
        if topic_end < 0:
            return
        text.stylize("cyan", TIME_WIDTH + 1, topic_end)
        for m in ESCAPED.finditer(plain, TIME_WIDTH + 1):
            text.stylize("dim", m.start(), m.end())
        if self.pattern is None:
            return
        start = topic_end + 1
        try:
            for hit in self.pattern.finditer(plain, start):
                if hit.end() > hit.start():
                    text.stylize("bold black on yellow", hit.start(), hit.end())
        except TypeError:  # re2 without a pos argument
            for hit in self.pattern.finditer(plain[start:]):
                if hit.end() > hit.start():
                    text.stylize("bold black on yellow", start + hit.start(), start + hit.end())


def _escapes() -> dict[int, str]:
    """Characters that would act on the terminal or reorder the line, and what shows
    instead: C0 controls and DEL in caret notation as ``less`` and ``cat -v`` do
    (``^[`` for ESC, ``^M`` for CR), C1 controls, bidi overrides and isolates, and
    line separators as ``<U+202E>``. A tab stays a tab."""
    table = {c: "^" + chr(c + 0x40) for c in range(0x20) if c != 0x09}
    table[0x7F] = "^?"
    for c in [*range(0x80, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
              *range(0x2066, 0x206A), 0x2028, 0x2029]:
        table[c] = f"<U+{c:04X}>"
    return table


ESCAPES = _escapes()
ESCAPED = re.compile(r"\^[@-_?]|<U\+[0-9A-F]{4}>")  # what the highlighter dims


def escape(text: str) -> str:
    return text.translate(ESCAPES)


def format_record(time_text: str, topic: str, line: str) -> str:
    """One record as the views show it (and Save writes it): one line, nothing in it
    that a terminal or Rich would act on."""
    return f"{time_text} {escape(topic)} {escape(line)}"


def format_buffer(buf: bytes) -> str:
    """Whole records → their on-screen lines, each ending in LF."""
    return "".join(format_record(r.time_text(), r.topic, r.line) + "\n" for r in parse_records(buf))


class ResultLog(Log):
    def __init__(self, max_lines: int, **kw: Any) -> None:
        super().__init__(highlight=True, max_lines=max_lines, **kw)
        self.highlighter = RecordHighlighter()
        self.limit = max_lines
        self._pending: deque[tuple[bytes, int]] = deque()
        self._pending_records = 0
        self.paused = False
        self.written = 0  # records written since the last clear
        self.discarded = 0  # records that arrived while paused and fell out of the buffer

    def on_mount(self) -> None:
        self.set_interval(FLUSH_EVERY, self.flush)

    def set_query(self, q: str, regex: bool, icase: bool = False) -> None:
        assert isinstance(self.highlighter, RecordHighlighter)
        self.highlighter.pattern = compile_highlight(q, regex, icase)
        self._render_line_cache.clear()
        self.refresh()

    @property
    def pending(self) -> int:
        """Records received but not yet shown (paused, or waiting for the next tick)."""
        return self._pending_records

    def add(self, buf: bytes, records: int | None = None) -> None:
        n = buf.count(b"\n") if records is None else records
        if not n:
            return
        self._pending.append((buf, n))
        self._pending_records += n
        # Keep only what could still be shown: at least the last ``limit`` records.
        while self._pending and self._pending_records - self._pending[0][1] >= self.limit:
            dropped = self._pending.popleft()[1]
            self._pending_records -= dropped
            if self.paused:
                self.discarded += dropped  # never shown (unpaused, the log's own bound applies)

    def flush(self) -> int:
        """Write what is pending (unless paused); returns the records written."""
        if self.paused or not self._pending:
            return 0
        buf = b"".join(b for b, _ in self._pending)
        self._pending.clear()
        self._pending_records = 0
        recs = parse_records(buf, last=self.limit)
        self.write_lines([format_record(r.time_text(), r.topic, r.line) for r in recs])
        self.written += len(recs)
        return len(recs)

    def reset(self) -> None:
        self._pending.clear()
        self._pending_records = 0
        self.written = 0
        self.discarded = 0
        self.clear()
        self.refresh()
