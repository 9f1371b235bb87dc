"""A virtualised, bounded log of records (Textual's ``Log``), fed in batches.

Buffers of raw records are queued with ``add`` and written at most every
``FLUSH_EVERY`` seconds, so a fast stream costs one render per tick rather than
one per network chunk. Only the last ``max_lines`` records are ever parsed or
kept: a result of millions of records uses bounded memory.
"""

from __future__ import annotations

import re
from collections import deque

from rich.highlighter import Highlighter
from rich.text import Text
from textual.widgets import Log

from oklog.tui.client import parse_records

FLUSH_EVERY = 0.1
TIME_WIDTH = len("2026-11-23 20:11:53.123")

try:  # linear-time matching for user patterns when available
    import re2 as _re2  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    _re2 = None


def compile_highlight(q: str, regex: bool):
    """The pattern whose matches to highlight, or None (empty or invalid q)."""
    if not q:
        return None
    if not regex:
        return re.compile(re.escape(q))
    for mod in (_re2, re):
        if mod is None:
            continue
        try:
            return mod.compile(q)
        except Exception:  # noqa: BLE001 - any compile error: just don't highlight
            continue
    return None


class RecordHighlighter(Highlighter):
    """Dim time, coloured topic, reverse-video matches of the query in the line."""

    def __init__(self) -> None:
        self.pattern = None

    def highlight(self, text: Text) -> None:
        plain = text.plain
        text.stylize("dim", 0, TIME_WIDTH)
        topic_end = plain.find(" ", TIME_WIDTH + 1)
        if topic_end < 0:
            return
        text.stylize("cyan", TIME_WIDTH + 1, topic_end)
        if self.pattern is None:
            return
        start = topic_end + 1
        try:
            for m in self.pattern.finditer(plain, start):
                if m.end() > m.start():
                    text.stylize("bold black on yellow", m.start(), m.end())
        except TypeError:  # re2 without a pos argument
            for m in self.pattern.finditer(plain[start:]):
                if m.end() > m.start():
                    text.stylize("bold black on yellow", start + m.start(), start + m.end())


# Characters str.splitlines() would break a record at: one record stays one line.
_BREAKS = str.maketrans({c: "\ufffd" for c in "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


def format_record(time_text: str, topic: str, line: str) -> str:
    return f"{time_text} {topic} {line.translate(_BREAKS)}"


class ResultLog(Log):
    def __init__(self, max_lines: int, **kw) -> None:
        super().__init__(highlight=True, max_lines=max_lines, **kw)
        self.highlighter = RecordHighlighter()
        self.limit = max_lines
        self._pending: deque[tuple[bytes, int]] = deque()
        self._pending_records = 0
        self.paused = False
        self.written = 0  # records written since the last clear

    def on_mount(self) -> None:
        self.set_interval(FLUSH_EVERY, self.flush)

    def set_query(self, q: str, regex: bool) -> None:
        assert isinstance(self.highlighter, RecordHighlighter)
        self.highlighter.pattern = compile_highlight(q, regex)
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
            self._pending_records -= self._pending.popleft()[1]

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
        self.clear()
        self.refresh()
