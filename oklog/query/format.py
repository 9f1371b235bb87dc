"""Formatting query results for output, a whole buffer at a time. Pure.

Every function takes a buffer of complete records (``ULID SP TOPIC SP LINE LF``)
and returns the formatted bytes; numpy does the per-record work in C, so a
result of millions of records costs a few passes over memory, not a Python loop
per line.
"""

from __future__ import annotations

import json

import numpy as np

from oklog.record import ALPHABET, ULID_LEN

_NL, _SP = 10, 32
_DECODE = np.zeros(256, dtype=np.int64)
for _i, _c in enumerate(ALPHABET):
    _DECODE[_c] = _i


def _fields(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Record starts, line starts and record ends (index of each LF)."""
    ends = np.flatnonzero(arr == _NL)
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    spaces = np.flatnonzero(arr == _SP)
    # The topic ends at the first space after ULID SP.
    idx = np.searchsorted(spaces, starts + ULID_LEN + 1)
    idx = np.minimum(idx, len(spaces) - 1) if len(spaces) else idx
    line_starts = spaces[idx] + 1 if len(spaces) else starts
    return starts, line_starts, ends


def _keep(arr: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bytes:
    """Concatenate arr[lo[i]:hi[i]] for all i (ranges ascending, disjoint)."""
    delta = np.zeros(len(arr) + 1, dtype=np.int8)
    delta[lo] += 1
    delta[hi] -= 1
    mask = np.cumsum(delta[:-1], dtype=np.int8).view(np.bool_)
    return arr[mask].tobytes()


def lines_only(buf: bytes) -> bytes:
    """``LINE LF`` for every record: what ``oklog query`` prints by default."""
    if not buf:
        return b""
    arr = np.frombuffer(buf, dtype=np.uint8)
    _, line_starts, ends = _fields(arr)
    return _keep(arr, line_starts, ends + 1)


def ulid_and_line(buf: bytes) -> bytes:
    """``ULID SP LINE LF``: drop only the topic."""
    if not buf:
        return b""
    arr = np.frombuffer(buf, dtype=np.uint8)
    starts, line_starts, ends = _fields(arr)
    lo = np.empty(2 * len(starts), dtype=np.int64)
    hi = np.empty_like(lo)
    lo[0::2], hi[0::2] = starts, starts + ULID_LEN + 1
    lo[1::2], hi[1::2] = line_starts, ends + 1
    # Drop empty ranges (cannot happen for well-formed records, but be safe).
    ok = hi > lo
    return _keep(arr, lo[ok], hi[ok])


def ulid_ms_array(arr: np.ndarray, starts: np.ndarray) -> np.ndarray:
    ms = np.zeros(len(starts), dtype=np.int64)
    for k in range(10):
        ms = (ms << 5) | _DECODE[arr[starts + k]]
    return ms


def _interleave(prefixes: list[bytes] | np.ndarray, arr: np.ndarray, lo, hi) -> bytes:
    """prefix[i] + arr[lo[i]:hi[i]] for every i."""
    pieces = arr.tobytes()
    out = []
    for p, a, b in zip(prefixes, lo.tolist(), hi.tolist(), strict=True):
        out.append(p)
        out.append(pieces[a:b])
    return b"".join(out)


def with_time(buf: bytes, ulid: bool = False) -> bytes:
    """``[ULID SP] TIME SP LINE LF`` with RFC 3339 UTC times to the millisecond."""
    if not buf:
        return b""
    arr = np.frombuffer(buf, dtype=np.uint8)
    starts, line_starts, ends = _fields(arr)
    ms = ulid_ms_array(arr, starts)
    times = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms")
    if ulid:
        prefixes = [
            buf[s : s + ULID_LEN + 1] + t.encode() + b"Z "
            for s, t in zip(starts.tolist(), times.tolist(), strict=True)
        ]
    else:
        prefixes = [t.encode() + b"Z " for t in times.tolist()]
    return _interleave(prefixes, arr, line_starts, ends + 1)


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


def formatter(ulid: bool, time_: bool, json_: bool):
    if json_:
        return as_json
    if time_:
        return lambda b: with_time(b, ulid)
    if ulid:
        return ulid_and_line
    return lines_only
