"""Formatting query results for output, a whole buffer at a time. Pure.

Every function takes a buffer of complete records (``ULID SP TOPIC SP LINE LF``)
and returns the formatted bytes; numpy does the per-record work in C, so a
result of millions of records costs a few passes over memory, not a Python loop
per line.
"""

from __future__ import annotations

import json

import numpy as np

import oklog._fast as _fast
from oklog.record import ALPHABET, ULID_LEN

MODE_RAW, MODE_LINES, MODE_ULID = 0, 1, 2  # as in oklog._fast and engine.scan_format
MODE_TIME, MODE_ULIDTIME = 4, 5  # oklog._fast.format only

_NL, _SP = 10, 32
_DECODE = np.zeros(256, dtype=np.int64)
for _i, _c in enumerate(ALPHABET):
    _DECODE[_c] = _i


def _starts_ends(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ends = np.flatnonzero(arr == _NL)
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    return starts, ends


def _common_header(arr: np.ndarray, starts: np.ndarray) -> int:
    """Length of ``ULID SP TOPIC SP`` if every record has the first one's topic, else 0."""
    if not len(starts):
        return 0
    first = arr[: min(len(arr), ULID_LEN + 1 + 200)].tobytes()
    sp = first.find(b" ", ULID_LEN + 1)
    if sp < 0:
        return 0
    topic = np.frombuffer(first[ULID_LEN + 1 : sp + 1], dtype=np.uint8)  # topic + SP
    last = len(arr) - 1
    for k, c in enumerate(topic):
        if not np.all(arr[np.minimum(starts + ULID_LEN + 1 + k, last)] == c):
            return 0
    return sp + 1


def _fields(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Record starts, line starts and record ends (index of each LF)."""
    starts, ends = _starts_ends(arr)
    h = _common_header(arr, starts)
    if h:
        return starts, starts + h, ends
    spaces = np.flatnonzero(arr == _SP)
    # The topic ends at the first space after ULID SP.
    idx = np.searchsorted(spaces, starts + ULID_LEN + 1)
    idx = np.minimum(idx, len(spaces) - 1) if len(spaces) else idx
    line_starts = spaces[idx] + 1 if len(spaces) else starts
    return starts, line_starts, ends


def lines_only(buf: bytes) -> bytes:
    """``LINE LF`` for every record: what ``oklog query`` prints by default."""
    return _fast.format(buf, 0, len(buf), MODE_LINES) if buf else b""


def ulid_and_line(buf: bytes) -> bytes:
    """``ULID SP LINE LF``: drop only the topic."""
    return _fast.format(buf, 0, len(buf), MODE_ULID) if buf else b""


def ulid_ms_array(arr: np.ndarray, starts: np.ndarray) -> np.ndarray:
    ms = np.zeros(len(starts), dtype=np.int64)
    for k in range(10):
        ms = (ms << 5) | _DECODE[arr[starts + k]]
    return ms


def with_time(buf: bytes, ulid: bool = False) -> bytes:
    """``[ULID SP] TIME SP LINE LF`` with RFC 3339 UTC times to the millisecond."""
    return _fast.format(buf, 0, len(buf), MODE_ULIDTIME if ulid else MODE_TIME) if buf else b""


def as_json(buf: bytes) -> bytes:
    """One JSON object per record: ulid, time, topic, line (invalid UTF-8 replaced)."""
    if not buf:
        return b""
    arr = np.frombuffer(buf, dtype=np.uint8)
    starts, line_starts, ends = _fields(arr)
    ms = ulid_ms_array(arr, starts)
    times = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms")
    out = []
    for s, ls, e, t in zip(starts.tolist(), line_starts.tolist(), ends.tolist(), times.tolist(), strict=True):
        out.append(
            json.dumps(
                {
                    "ulid": buf[s : s + ULID_LEN].decode(),
                    "time": t + "Z",
                    "topic": buf[s + ULID_LEN + 1 : ls - 1].decode("latin-1"),
                    "line": buf[ls:e].decode("utf-8", "replace"),
                }
            ).encode()
        )
    out.append(b"")
    return b"\n".join(out)


FORMATS = {
    "raw": None,
    "lines": lines_only,
    "ulid": ulid_and_line,
    "time": with_time,
    "ulidtime": lambda b: with_time(b, ulid=True),
    "json": as_json,
}
# Formats the C helper produces straight from the scanned buffer.
NATIVE_MODES = {None: MODE_RAW, lines_only: MODE_LINES, ulid_and_line: MODE_ULID}
CHUNK = 1 << 20


def apply_chunked(fmt, data: bytes, chunk: int = CHUNK) -> bytes:
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
