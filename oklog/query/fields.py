"""Fields of structured lines: ``-where`` conditions, ``-fields`` and ``-by``. Pure.

A line is read as JSON when it is a JSON object, else as logfmt when it holds
at least one ``key=value`` pair (a bare or double-quoted value); otherwise it
has no fields: it never matches a ``-where`` and is counted as skipped.

Conditions: ``NAME OP VALUE`` with OP one of ``= != < <= > >= ~ !~`` (``~``:
the RE2 regex VALUE is found in the field). A dotted NAME reaches into nested
JSON objects (a logfmt key with dots is looked up whole). When both sides read
as numbers they compare as numbers (``status>=500``, ``1e3=1000``); otherwise
as text. A missing field satisfies only ``!=`` and ``!~``.

Before any line is parsed, the records are narrowed by the C substring search
to those holding a literal every match holds (the field's name, and for ``=``
the value's text), so parsing costs only for candidates.
"""

from __future__ import annotations

import json
import operator
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import re2

from oklog.query.engine import HEADER_MIN, MODE_RAW, Matcher, Query, QueryError

OPS = ("!~", "!=", "<=", ">=", "=", "<", ">", "~")
_NAME = re.compile(r"\s*([A-Za-z0-9_@$.\-/]+)\s*(!~|!=|<=|>=|=|<|>|~)(.*)\Z", re.S)
_PAIR = re.compile(rb'(?:^|[\s,;])([^\s="\',;]+)=("(?:[^"\\]|\\.)*"|[^\s,;]*)')
MAX_CONDITIONS = 16
# A line's fields: a decoded JSON object (any JSON values) or logfmt's strings.
Fields = dict[str, Any]
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Condition:
    name: str
    op: str
    value: str
    _re: re2._Regexp | None = field(init=False, default=None, repr=False, compare=False)  # for ~ and !~
    _num: float | None = field(init=False, default=None, repr=False, compare=False)  # VALUE as a number

    def __post_init__(self) -> None:
        if self.op in ("~", "!~"):
            try:
                object.__setattr__(self, "_re", re2.compile(self.value.encode()))
            except re2.error as e:
                raise QueryError(f"where {self.name}{self.op}{self.value}: invalid regex: {e}") from None
        object.__setattr__(self, "_num", _number(self.value))

    def holds(self, fields: Fields) -> bool:
        v = lookup(fields, self.name)
        if v is None:
            return self.op in ("!=", "!~")
        text = _text(v)
        if self._re is not None:
            found = self._re.search(text.encode()) is not None
            return found if self.op == "~" else not found
        a, b = _number(v), self._num
        if a is not None and b is not None:
            return bool(_COMPARE[self.op](a, b))
        return bool(_COMPARE[self.op](text, self.value))

    def literals(self) -> list[bytes]:
        """Bytes every line satisfying this condition holds."""
        if self.op in ("!=", "!~"):
            return []
        out = [self.name.rsplit(".", 1)[-1].encode()]
        if self.op == "=" and self._num is None and self.value and _plain(self.value):
            out.append(self.value.encode())
        return out


def _plain(text: str) -> bool:
    """Text JSON and logfmt write as is (no escapes)."""
    return all(c.isascii() and (c.isalnum() or c in "_-.:/@") for c in text)


def parse_condition(text: str) -> Condition:
    m = _NAME.match(text)
    if not m:
        raise QueryError(f"where {text!r}: use NAME OP VALUE with OP one of {' '.join(OPS)} (status>=500, level=error)")
    name, op, value = m.group(1), m.group(2), m.group(3).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return Condition(name, op, value)


def _number(v: object) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return f if f == f else None  # NaN compares as text
    return None


def _text(v: object) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def lookup(fields: Fields, name: str) -> Any:  # a JSON value: anything
    """The field ``name`` (whole, else a dotted path into nested objects), or None."""
    if name in fields:
        return fields[name]
    cur: Any = fields
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def parse_fields(line: bytes) -> Fields | None:
    """The fields of a JSON object or logfmt line; None when it is neither."""
    s = line.strip()
    if s.startswith(b"{"):
        try:
            obj = json.loads(s)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            return obj
    pairs = _PAIR.findall(line)
    if not pairs:
        return None
    out: Fields = {}
    for k, v in pairs:
        key = k.decode("utf-8", "replace")
        if v.startswith(b'"') and len(v) >= 2:
            v = re.sub(rb"\\(.)", rb"\1", v[1:-1])
        out.setdefault(key, v.decode("utf-8", "replace"))
    return out


_BARE = re.compile(r'[^\s,;"]+\Z')


def _logfmt_eq(conditions: list[Condition]) -> tuple[bytes, bytes, int] | None:
    """``(NAME, VALUE, kind)`` of a lone ``NAME=VALUE`` condition whose VALUE a
    logfmt line can hold bare (what ``_fast.logfmt_eq`` decides), else None;
    kind: 0 VALUE compares as text, 1 it is a decimal integer, 2 another number."""
    if len(conditions) != 1 or conditions[0].op != "=":
        return None
    c = conditions[0]
    if not _BARE.match(c.value) or not re.fullmatch(r'[^\s="\',;.]+', c.name):
        return None  # a dotted name may reach into JSON, whose lines need not hold it
    if c._num is None:
        kind = 0
    else:
        kind = 1 if re.fullmatch(r"[0-9]{1,15}", c.value.lstrip("0") or "0") and c.value.isascii() else 2
    return c.name.encode(), c.value.encode(), kind


def _line(record: bytes) -> bytes:
    sp = record.find(b" ", HEADER_MIN)
    return record[sp + 1 :] if sp >= 0 else b""


class WhereFilter:
    """Keeps the records of a raw buffer whose line satisfies every condition."""

    def __init__(self, conditions: list[Condition]) -> None:
        if len(conditions) > MAX_CONDITIONS:
            raise QueryError(f"{len(conditions)} where conditions; the limit is {MAX_CONDITIONS}")
        self.conditions = conditions
        lits = sorted({lit for c in conditions for lit in c.literals()}, key=len, reverse=True)
        self.prefilters = [Matcher(Query(lit)) for lit in lits[:3] if lit]
        self.skipped = 0  # candidate lines that were neither JSON nor logfmt
        self.want_skipped = False  # apply() keeps those lines instead (to count them)
        self._lock = threading.Lock()
        self._logfmt = _logfmt_eq(conditions)

    def _apply_logfmt(self, buf: bytes) -> bytes:
        """One ``NAME=VALUE`` condition: the C helper decides the lines whose
        first NAME pair is plain logfmt (most of them); the rest are parsed."""
        import numpy as np

        import oklog._fast as _fast

        assert self._logfmt is not None
        cand, verdicts = _fast.logfmt_eq(buf, 0, len(buf), *self._logfmt)
        if not verdicts:
            return b""
        keep = bytearray(verdicts)
        skipped = 0
        undecided = np.flatnonzero(np.frombuffer(verdicts, dtype=np.uint8) == 2).tolist()
        if undecided:
            t = np.frombuffer(cand, dtype=np.int64)
            for i in undecided:
                ls, re_ = int(t[3 * i + 1]), int(t[3 * i + 2])
                line = buf[ls : re_ - 1] if buf[re_ - 1 : re_] == b"\n" else buf[ls:re_]
                fields = parse_fields(line)
                if fields is None and all(m.query.q in line for m in self.prefilters):
                    skipped += 1  # as the prefilters alone would have let it through
                keep[i] = fields is not None and all(c.holds(fields) for c in self.conditions)
        if skipped:
            with self._lock:
                self.skipped += skipped
        return _fast.pick(buf, cand, bytes(keep), MODE_RAW)

    def apply(self, buf: bytes) -> bytes:
        if self._logfmt is not None and not self.want_skipped and buf:
            return self._apply_logfmt(buf)
        for m in self.prefilters:
            if not buf:
                return b""
            buf = m.scan_format(buf, 0, len(buf), MODE_RAW)
        if not buf:
            return b""
        keep = []
        skipped = 0
        for rec in buf.split(b"\n")[:-1]:
            fields = parse_fields(_line(rec))
            if fields is None:
                skipped += 1
                if self.want_skipped:
                    keep.append(rec)
                continue
            if not self.want_skipped and all(c.holds(fields) for c in self.conditions):
                keep.append(rec)
        with self._lock:  # units are scanned in several threads
            self.skipped += skipped
        if not keep:
            return b""
        keep.append(b"")
        return b"\n".join(keep)


def field_values(records: bytes, name: str) -> list[str | None]:
    """The value of a field (or the record's topic for ``topic``) of every
    record; None where the line has no such field."""
    out: list[str | None] = []
    for rec in records.split(b"\n")[:-1]:
        if name == "topic":
            out.append(rec.split(b" ", 2)[1].decode("utf-8", "replace"))
            continue
        fields = parse_fields(_line(rec))
        v = lookup(fields, name) if fields is not None else None
        out.append(None if v is None else _text(v))
    return out


def project(lines: bytes, names: list[str]) -> bytes:
    """``-fields a,b``: each line (``LINE LF``) as the chosen fields in logfmt,
    missing ones left out; lines without fields are left out."""
    from oklog.logfmt import logfmt_pairs

    out = []
    for line in lines.split(b"\n")[:-1]:
        fields = parse_fields(line)
        if fields is None:
            continue
        pairs = [(n, _text(v)) for n in names if (v := lookup(fields, n)) is not None]
        out.append(logfmt_pairs(pairs).encode() + b"\n")
    return b"".join(out)


def by_lines(records: bytes, name: str) -> bytes:
    """``ULID SP SIZE SP VALUE LF`` for every record (SIZE: the record's bytes;
    VALUE: the field's value as a JSON string, or null): what a member sends
    for ``-count -by`` (and ``oklog topics``)."""
    vals = field_values(records, name)
    out = []
    for rec, v in zip(records.split(b"\n")[:-1], vals, strict=True):
        out.append(b"%s %d %s\n" % (rec[:26], len(rec) + 1, json.dumps(v).encode()))
    return b"".join(out)
