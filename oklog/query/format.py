"""Formatting query results for output, a whole buffer at a time. Pure.

Every function takes a buffer of complete records (``ULID SP TOPIC SP LINE LF``)
and returns the formatted bytes; the per-record work is one pass of the C helper
(oklog/_fast.c), so a result of millions of records costs no Python loop per line.
"""

from __future__ import annotations

from collections.abc import Callable

import oklog._fast as _fast

MODE_RAW, MODE_LINES, MODE_ULID = 0, 1, 2  # as in oklog._fast and engine.scan_format
MODE_TIME, MODE_ULIDTIME, MODE_JSON = 4, 5, 6  # oklog._fast.format only

Formatter = Callable[[bytes], bytes]  # whole records in, output bytes out


def lines_only(buf: bytes) -> bytes:
    """``LINE LF`` for every record: what ``oklog query`` prints by default."""
    return _fast.format(buf, 0, len(buf), MODE_LINES) if buf else b""


def ulid_and_line(buf: bytes) -> bytes:
    """``ULID SP LINE LF``: drop only the topic."""
    return _fast.format(buf, 0, len(buf), MODE_ULID) if buf else b""


def with_time(buf: bytes, ulid: bool = False) -> bytes:
    """``[ULID SP] TIME SP LINE LF`` with RFC 3339 UTC times to the millisecond."""
    return _fast.format(buf, 0, len(buf), MODE_ULIDTIME if ulid else MODE_TIME) if buf else b""


def as_json(buf: bytes) -> bytes:
    """One JSON object per record: ulid, time, topic, line (invalid UTF-8 replaced)."""
    return _fast.format(buf, 0, len(buf), MODE_JSON) if buf else b""


FORMATS: dict[str, Formatter | None] = {
    "raw": None,
    "lines": lines_only,
    "ulid": ulid_and_line,
    "time": with_time,
    "ulidtime": lambda b: with_time(b, ulid=True),
    "json": as_json,
}
# Formats the C helper produces straight from the scanned buffer.
NATIVE_MODES: dict[Formatter | None, int] = {None: MODE_RAW, lines_only: MODE_LINES, ulid_and_line: MODE_ULID}
CHUNK = 1 << 20


def apply_chunked(fmt: Formatter | None, data: bytes, chunk: int = CHUNK) -> bytes:
    """Format ``data`` a record-aligned chunk at a time (keeps buffers cache-sized)."""
    if fmt is None or not data:
        return data
    if len(data) <= chunk:
        return fmt(data)
    out = []
    i = 0
    while i < len(data):
        j = data.rfind(b"\n", i, i + chunk) + 1
        if j <= i:
            j = data.find(b"\n", i + chunk) + 1 or len(data)
        out.append(fmt(data[i:j]))
        i = j
    return b"".join(out)
