"""Matching records in whole buffers. Pure: works on bytes-like objects.

A buffer holds records ``ULID SP TOPIC SP LINE LF`` sorted by ULID. A query
matches the LINE only. The scan never loops over records in Python: the C
helper ``oklog._fast`` (a SIMD substring search, then record boundaries and
output formatting, without the GIL) or hyperscan works on the whole buffer, and
Python sees only the result.

* Substring queries: ``_fast.grep`` finds the literal; a hit counts when it
  starts inside the line (not in the ULID or topic).
* Regex queries use RE2 syntax (as the original system's Go regexp), byte
  semantics, linear time. When every match must contain a literal (a run of
  plain characters at the top level of the pattern, as GNU grep finds one),
  ``_fast.grep`` finds the lines holding it and RE2 decides each of those.
  Otherwise hyperscan runs a relaxed form of the pattern over the buffer as a
  prefilter whose hits are a superset of the matching lines, and RE2 decides each
  candidate line. Patterns hyperscan cannot compile fall back to RE2 on every
  line (slower, still linear).
"""

from __future__ import annotations

import copy
import mmap
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import hyperscan
import numpy as np
import numpy.typing as npt
import re2

import oklog._fast as _fast
from oklog.records.record import ULID_LEN

if TYPE_CHECKING:
    from sre_parse import SubPattern  # typeshed's stub of re._parser (3.11: same module)

HEADER_MIN = ULID_LEN + 1  # ULID and its space; the topic follows
MAX_QUERY_LEN = 4096
# Output modes of scan_format (and of oklog._fast): whole records, LINE LF,
# ULID SP LINE LF; candidates are int64 triples (record start, line start, end).
MODE_RAW, MODE_LINES, MODE_ULID, MODE_CANDIDATES = 0, 1, 2, 3


class QueryError(ValueError):
    """A query that cannot be run; the message is shown to the user (HTTP 400)."""


Ranges = list[tuple[int, int]]
U8Array = npt.NDArray[np.uint8]
I64Array = npt.NDArray[np.int64]
# Records to scan: a mapped segment or bytes in memory. Not a memoryview:
# the scans find LFs with the buffer's own ``find`` (only the C helper and
# hyperscan are handed views).
Buffer = bytes | bytearray | mmap.mmap
Line = bytes | bytearray  # a slice of a Buffer
LineTest = Callable[[Line], bool]  # whether a line (without its LF) matches
Search = Callable[[Line], object]  # RE2's search: None when the line does not match


class ScanMatcher(Protocol):
    """What the store's scans use of a matcher (a Matcher, or several terms'
    oklog.query.terms.TermsMatcher)."""

    @property
    def query(self) -> Query: ...

    def scan_format(self, buf: Buffer, start: int, end: int, mode: int) -> bytes: ...

    def without_topic(self, topic: str) -> ScanMatcher: ...


def _re2_options() -> re2.Options:
    opts = re2.Options()
    opts.encoding = re2.Options.Encoding.LATIN1  # bytes in, byte semantics
    opts.max_mem = 64 << 20
    opts.log_errors = False  # a user's bad pattern is a 400, not a line in the node's log
    return opts


def relax_anchors(pattern: bytes) -> bytes:
    """Drop ``^`` and ``\\A`` outside character classes; turn ``\\z`` into ``$``.

    Record starts in a buffer are not line starts, so a start anchor cannot be
    given to hyperscan as is; dropping it only widens the prefilter.
    """
    out = bytearray()
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == 0x5C and i + 1 < n:  # backslash escape
            nxt = pattern[i + 1]
            if not in_class and nxt == ord("A"):
                i += 2
                continue
            if not in_class and nxt == ord("z"):
                out += b"$"
                i += 2
                continue
            out += pattern[i : i + 2]
            i += 2
            continue
        if in_class:
            if c == ord("]"):
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == ord("["):
            in_class = True
            out.append(c)
            i += 1
            # A ']' right after '[' or '[^' is a literal member.
            if i < n and pattern[i] == ord("^"):
                out.append(pattern[i])
                i += 1
            if i < n and pattern[i] == ord("]"):
                out.append(pattern[i])
                i += 1
            continue
        if c == ord("^"):
            i += 1
            continue
        out.append(c)
        i += 1
    return bytes(out)


def _trim_tail(p: bytes) -> bytes:
    """A pattern that matches a line iff ``p`` does, with fewer match ends (so
    fewer prefilter callbacks): a trailing ``X+`` needs one X, ``X*``/``X?`` none.
    (Hyperscan's start-of-match mode would avoid verification altogether, but it
    crashed on patterns like ``(a|aa)+b``; a user's regex must never do that.)"""
    atom = re.compile(rb"(\\[wdWDsSbB]|\[[^\]\\]*\]|[A-Za-z0-9 _.-])([+*?])\Z")
    while True:
        m = atom.search(p)
        if m is None or p[: m.start()].endswith(b"\\") or len(p) - len(m.group(0)) < 1:
            return p
        head = p[: m.start()]
        if head.endswith((b"(", b"|")):
            return p
        p = head + m.group(1) if m.group(2) == b"+" else head


# Constructs that could let a match cross a record's LF or differ between
# hyperscan and RE2: patterns with any of them always get RE2 per candidate line.
_MAY_CROSS_LF = re.compile(rb"\[\^|\\[sSDWnrCpPxQEzZ0-9]|\(\?[a-zA-Z]*[sU]")


def max_width(pattern: bytes) -> int | None:
    """The longest match of ``pattern`` in bytes when it is bounded and the
    pattern cannot match across an LF; None otherwise. A hit that ends at
    ``to`` with ``to - width`` inside the line is a match in the line: no RE2."""
    if b"\n" in pattern or _MAY_CROSS_LF.search(pattern):
        return None
    parsed = _parse(pattern)
    if parsed is None:
        return None
    width: int = parsed.getwidth()[1]
    return width if width < 1 << 16 else None


def _parse(pattern: bytes) -> SubPattern | None:
    """``pattern`` read by Python's regex parser (its syntax is close to
    RE2's), or None where it rejects it: a syntax it lacks (re.error), a
    repeat count over its limit (OverflowError), nesting deeper than the
    recursion limit (RecursionError), an invalid code point (ValueError)."""
    from re import _parser  # type: ignore[attr-defined]  # private stdlib module, no stub

    try:
        parsed: SubPattern = _parser.parse(pattern.decode("latin-1"))
    except (re.error, OverflowError, RecursionError, ValueError):
        return None
    return parsed


def _top_level_bar(p: bytes) -> bool:
    """Whether ``|`` splits the whole pattern (trimming the tail is then unsafe)."""
    depth, i, in_class = 0, 0, False
    while i < len(p):
        c = p[i : i + 1]
        if c == b"\\":
            i += 2
            continue
        if in_class:
            in_class = c != b"]"
        elif c == b"[":
            in_class = True
            if p[i + 1 : i + 2] == b"]":
                i += 1
        elif c == b"(":
            depth += 1
        elif c == b")":
            depth -= 1
        elif c == b"|" and depth == 0:
            return True
        i += 1
    return False


@dataclass(frozen=True)
class Query:
    q: bytes = b""
    regex: bool = False
    topic: bytes | None = None  # only records of this topic
    icase: bool = False  # a substring in any ASCII case (a regex carries (?i) instead)

    @property
    def match_all(self) -> bool:
        return not self.q


class Matcher:
    """Compiled form of a query; ``scan`` returns record ranges that match."""

    def __init__(self, query: Query) -> None:
        q = query.q
        if len(q) > MAX_QUERY_LEN:
            raise QueryError(f"query is {len(q)} bytes; the limit is {MAX_QUERY_LEN}")
        self.query = query
        self._verify: re2._Regexp | None = None
        self._db: hyperscan.Database | None = None
        self.match_all = False
        self.match_none = False
        self._local = threading.local()  # hyperscan scratch is per thread
        self._topic = TopicFilter(query.topic) if query.topic else None
        self._maxw: int | None = None
        self._lit: bytes | None = None  # found by _fast.grep (the query, or a regex's required literal)
        self._icase = False  # _lit found in any ASCII case (a substring query only)
        self._hs_c: object | None = None  # _fast.hs_compile's database: the candidate lines decided in C
        if not q:
            self.match_all = True
            return
        if query.regex:
            try:
                self._verify = re2.compile(q, _re2_options())
            except re2.error as e:
                why = e.args[0] if e.args else e
                if isinstance(why, bytes):
                    why = why.decode("latin-1")
                raise QueryError(f"invalid regex: {why}") from None
            if self._verify.search(b"") is not None:
                self.match_all = True  # matches the empty line, hence every line
                return
            pattern = relax_anchors(q)
            if not _top_level_bar(pattern):
                pattern = _trim_tail(pattern)  # fewer match ends, same candidate lines
            self._maxw = max_width(pattern) if pattern == q or _trim_tail(q) == pattern else None
            flags = hyperscan.HS_FLAG_MULTILINE | hyperscan.HS_FLAG_ALLOWEMPTY
            self._lit = required_literal(q)
            if self._lit is not None:
                self._found = _line_matcher(q)
                if self._maxw is None:
                    return  # candidates by the literal, decided by RE2 one by one
                # else hyperscan decides the candidate lines at once: a hit of
                # bounded width that cannot cross LF is a match in its line
        else:
            if b"\n" in q:
                self.match_none = True  # no line contains LF
                return
            self._lit = q
            self._icase = query.icase
            return
        self._compile_hs(pattern, flags)

    def _compile_hs(self, pattern: bytes, flags: int) -> None:
        """Hyperscan's database of the (relaxed, trimmed) pattern, and with a
        required literal the C scan's own (oklog._fast.hs_compile, None
        without libhs.so.5); where Hyperscan rejects it, RE2 on every line."""
        try:
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            db.compile(expressions=[pattern], flags=[flags])
            self._db = db
            self._scratch_proto = hyperscan.Scratch(db)
            if self._lit is not None:
                self._hs_c = _fast.hs_compile(pattern, flags)
        except hyperscan.error:
            self._db = None  # RE2 on every line

    def without_topic(self, topic: str) -> Matcher:
        """This matcher for bytes known to hold only records of ``topic``
        (a segment named by it): the topic filter is dropped when it is that
        topic, and the compiled pattern is shared."""
        if self._topic is None or self._topic.topic.decode("latin-1") != topic:
            return self
        m = copy.copy(self)
        m._topic = None
        return m

    def plain_needle(self) -> tuple[bool, bytes | None]:
        """(True, literal) when a record matches exactly if its line holds the
        literal, (True, None) when every record matches, with no topic filter
        or regex to check: then the C helper alone decides (oklog._fast.zscan).
        (False, None) otherwise."""
        if self.match_all and self._topic is None:
            return True, None
        sub = self.substring()
        if sub is None or sub[1]:  # zscan's search is exact-case: -i keeps the matcher's scan
            return False, None
        return True, sub[0]

    def substring(self) -> tuple[bytes, bool] | None:
        """(literal, icase) when a record matches exactly if its line holds the
        literal (in any ASCII case with icase), with no topic filter or regex
        to check; None otherwise, also when every record or none matches."""
        if self._topic is not None or self.match_all or self.match_none:
            return None
        if self._lit is None or self._verify is not None:
            return None
        return self._lit, self._icase

    def c_verifier(self) -> tuple[bytes, object] | None:
        """(literal, database) when a record matches exactly if its line holds
        the literal and a hit of the database (a regex Hyperscan alone
        decides, compiled for oklog._fast.zscan's verify), with no topic
        filter; None otherwise."""
        if self._hs_c is None or self._topic is not None:
            return None
        assert self._lit is not None  # _hs_c is compiled only with one
        return self._lit, self._hs_c

    def literal(self) -> bytes | None:
        """A literal every matching line holds (the query, or a regex's
        required literal, in its exact case), or None (also for -i)."""
        return None if self._icase else self._lit

    # -- scanning -------------------------------------------------------------

    def _hs_scan(self, data: Buffer | memoryview, on_match: hyperscan.match_event_callback) -> None:
        assert self._db is not None
        _hs_scan(self._db, self._scratch_proto, self._local, data, on_match)

    def scan(self, buf: Buffer, start: int = 0, end: int | None = None) -> Ranges:
        """Ranges [s, e) of whole matching records within buf[start:end].

        ``start`` must be a record start and ``end`` a record end (after LF).
        Adjacent matching records are coalesced into one range.
        """
        if end is None:
            end = len(buf)
        if start >= end or self.match_none:
            return []
        if self.match_all:
            if self._topic is not None:
                return self._topic.records(buf, start, end)
            return [(start, end)]
        if self._lit is not None:
            cand, keep = self._candidates(buf, start, end)
            ranges = _coalesce(cand, keep)
        elif self._db is None:
            ranges = self._scan_lines(buf, start, end)
        else:
            ranges = self._scan_prefiltered(buf, start, end)
        if self._topic is not None:
            return self._topic.filter(buf, ranges)
        return ranges

    def scan_format(self, buf: Buffer, start: int, end: int, mode: int) -> bytes:
        """The matching records of buf[start:end] as output bytes in ``mode``
        (MODE_RAW, MODE_LINES or MODE_ULID), without building range lists
        where the C helper can do it all."""
        if start >= end or self.match_none:
            return b""
        if self._topic is None:
            if self.match_all:
                return _fast.format(buf, start, end, mode)
            if self._lit is not None:
                if self._verify is None:
                    return _fast.grep(buf, start, end, self._lit, mode, self._icase)
                cand, keep = self._candidates(buf, start, end)
                return _fast.pick(buf, cand, keep, mode) if keep else b""
        out = b"".join(buf[s:e] for s, e in self.scan(buf, start, end))
        return out if mode == MODE_RAW else _fast.format(out, 0, len(out), mode)

    def _candidates(self, buf: Buffer, start: int, end: int) -> tuple[bytes, bytes | None]:
        """Records whose line holds the literal (int64 triples: record start,
        line start, record end), and for a regex which of them RE2 accepts
        (one byte each; None: all)."""
        assert self._lit is not None
        cand = _fast.grep(buf, start, end, self._lit, MODE_CANDIDATES, self._icase)
        if self._verify is None or not cand:
            return cand, None
        t = np.frombuffer(cand, dtype=np.int64)
        if self._db is not None and self._maxw is not None:
            n = len(t) // 3
            lines = _fast.pick(buf, cand, b"\x01" * n, MODE_LINES)  # LINE LF of each candidate
            ends = self._hit_ends(lines, 0, len(lines))
            mask = np.zeros(n, dtype=np.uint8)
            if ends:
                nl = np.flatnonzero(np.frombuffer(lines, dtype=np.uint8) == 0x0A)
                mask[np.searchsorted(nl, np.asarray(ends, dtype=np.int64) - 1)] = 1
            return cand, mask.tobytes()
        found = self._found
        keep = bytes([found(buf[ls : re_ - 1]) for ls, re_ in zip(t[1::3].tolist(), t[2::3].tolist(), strict=True)])
        return cand, keep

    def _hit_ends(self, buf: Buffer, start: int, end: int) -> list[int]:
        """Where hyperscan's hits end, relative to ``start``. The callback only
        records offsets, so two scanning threads hardly contend for the GIL."""
        ends: list[int] = []
        add = ends.append

        def on_match(_id: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            add(to)

        self._hs_scan(_view(buf, start, end), on_match)
        return ends

    def _scan_prefiltered(self, buf: Buffer, start: int, end: int) -> Ranges:
        """Candidate lines from hyperscan, decided by RE2 unless the hit's
        bounded width keeps it inside the line (then it is a match as is)."""
        ends = self._hit_ends(buf, start, end)
        search = self._verify.search  # type: ignore[union-attr]
        if self._maxw is not None and len(ends) >= DENSE_HITS:
            return _records_of_hits_np(buf, start, end, ends, self._maxw, search)
        back = self._maxw if self._maxw is not None else 1 << 62
        return _records_of_hits(buf, start, ends, back, search)

    def _scan_lines(self, buf: Buffer, start: int, end: int) -> Ranges:
        search = self._verify.search  # type: ignore[union-attr]
        ranges: Ranges = []
        pos = start
        find = buf.find
        while pos < end:
            re_ = find(b"\n", pos) + 1 or end
            ls = find(b" ", pos + HEADER_MIN) + 1
            if search(buf[ls : re_ - 1]) is not None:
                if ranges and ranges[-1][1] == pos:
                    ranges[-1] = (ranges[-1][0], re_)
                else:
                    ranges.append((pos, re_))
            pos = re_
        return ranges


class TopicFilter:
    """Records of one topic: found by hyperscan on their header when the query
    has no term, checked per matched record when it has one."""

    def __init__(self, topic: bytes) -> None:
        self.topic = topic
        self.needle = b" " + topic + b" "
        self.header = ULID_LEN + len(self.needle)
        pattern = b"^[0-9A-HJKMNP-TV-Z]{26}" + b"".join(b"\\x%02x" % c for c in self.needle)
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._db.compile(expressions=[pattern], flags=[hyperscan.HS_FLAG_MULTILINE])
        self._proto = hyperscan.Scratch(self._db)
        self._local = threading.local()

    def _is(self, buf: Buffer, rs: int) -> bool:
        return buf[rs + ULID_LEN : rs + self.header] == self.needle

    def filter(self, buf: Buffer, ranges: Ranges) -> Ranges:
        out: Ranges = []
        find = buf.find
        for s, e in ranges:
            p = s
            while p < e:
                nl = find(b"\n", p, e) + 1 or e
                if self._is(buf, p):
                    if out and out[-1][1] == p:
                        out[-1] = (out[-1][0], nl)
                    else:
                        out.append((p, nl))
                p = nl
        return out

    def records(self, buf: Buffer, start: int, end: int) -> Ranges:
        out: Ranges = []
        find = buf.find
        header = self.header

        def on_match(_id: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            rs = start + to - header
            nl = find(b"\n", start + to, end) + 1 or end
            if out and out[-1][1] == rs:
                out[-1] = (out[-1][0], nl)
            else:
                out.append((rs, nl))

        _hs_scan(self._db, self._proto, self._local, _view(buf, start, end), on_match)
        return out


def _hs_scan(
    db: hyperscan.Database,
    proto: hyperscan.Scratch,
    local: threading.local,
    data: Buffer | memoryview,
    on_match: hyperscan.match_event_callback,
) -> None:
    """Scan ``data`` with ``db``, with this thread's clone of ``proto``
    (hyperscan scratch space may serve one scan at a time)."""
    scratch = getattr(local, "scratch", None)
    if scratch is None:
        scratch = local.scratch = proto.clone()
    # The binding scans any buffer (mmap, memoryview); its stub says AnyStr.
    db.scan(data, match_event_handler=on_match, scratch=scratch)  # type: ignore[type-var]


DENSE_HITS = 512  # from this many hits in a buffer, find their records with numpy
MIN_LITERAL = 3  # a regex's required literal shorter than this finds too many candidates


def required_literal(pattern: bytes) -> bytes | None:
    """The longest run of plain characters at the top level of ``pattern``
    (so in every match), if at least MIN_LITERAL long; None otherwise or when
    case folding is on. Python's parser reads RE2 syntax closely enough; what it
    rejects simply gets no literal."""
    from re import _constants  # type: ignore[attr-defined]  # private stdlib module, no stub

    parsed = _parse(pattern)
    if parsed is None:
        return None
    if parsed.state.flags & re.IGNORECASE:
        return None
    best, cur = b"", bytearray()
    for op, av in parsed.data:
        if op is _constants.LITERAL and isinstance(av, int) and av < 256 and av != 0x0A:
            cur.append(av)
            if len(cur) > len(best):
                best = bytes(cur)
        else:
            cur.clear()
    return best if len(best) >= MIN_LITERAL else None


def _line_matcher(pattern: bytes) -> LineTest:
    """``f(line) -> bool``: whether RE2 finds ``pattern`` in the line. Calls the
    binding's compiled RE2 directly, without submatches: about 1.3 us a line
    where ``re2.search`` takes 6 (it builds a match object in Python)."""
    opts = _re2_options()
    opts.never_capture = True
    compiled = re2.compile(pattern, opts)
    raw = getattr(compiled, "_regexp", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if raw is None or anchor is None:  # another binding version: the public API
        return lambda line: compiled.search(line) is not None
    match = raw.Match

    def found(line: Line) -> bool:
        return bool(match(anchor, line, 0, len(line))[0][0] >= 0)

    return found


def _coalesce(cand: bytes, keep: bytes | None) -> Ranges:
    """Ranges of the kept candidate records, adjacent ones joined."""
    if not cand:
        return []
    t = np.frombuffer(cand, dtype=np.int64).reshape(-1, 3)
    if keep is not None:
        t = t[np.frombuffer(keep, dtype=np.bool_)]
        if not len(t):
            return []
    rs, re_ = t[:, 0], t[:, 2]
    breaks = np.flatnonzero(rs[1:] != re_[:-1]) + 1
    starts = rs[np.concatenate(([0], breaks))].tolist()
    stops = re_[np.concatenate((breaks - 1, [len(t) - 1]))].tolist()
    return list(zip(starts, stops, strict=True))


def _records_of_hits(buf: Buffer, start: int, ends: list[int], back: int, verify: Search) -> Ranges:
    """``_records_of_hits_np`` for a few hits: string searches per hit."""
    ranges: Ranges = []
    find = buf.find
    rfind = buf.rfind
    done = start  # records before this offset are decided
    for to in ends:
        to += start
        if to <= done:
            continue
        pos = max(to - 1, start)
        rs = rfind(b"\n", start, pos) + 1 or start
        re_ = find(b"\n", pos) + 1
        ls = find(b" ", rs + HEADER_MIN) + 1
        if to - back < ls:  # the hit may start in the ULID/topic
            done = re_
            if verify(buf[ls : re_ - 1]) is None:
                continue
        done = re_
        if ranges and ranges[-1][1] == rs:
            ranges[-1] = (ranges[-1][0], re_)
        else:
            ranges.append((rs, re_))
    return ranges


def _records_of_hits_np(
    buf: Buffer, start: int, end: int, ends: list[int], back: int, verify: Search | None = None
) -> Ranges:
    """Records holding hits (hit end offsets relative to ``start``; a hit starts
    at most ``back`` bytes before its end), vectorized: LF positions by one
    pass, records by binary search, the header test on the hit records only.
    A record whose hits may start in the header is decided by ``verify`` on its
    line, or rejected if there is none (literals: the start is exact)."""
    arr = np.frombuffer(buf, dtype=np.uint8, count=end - start, offset=start)
    nl = np.flatnonzero(arr == 0x0A)  # relative LF positions
    e = np.asarray(ends, dtype=np.int64)  # sorted (hyperscan reports by end)
    last_byte = np.maximum(e - 1, 0)
    idx = np.unique(np.searchsorted(nl, last_byte))  # records (by their LF) holding a hit
    idx = idx[idx < len(nl)]
    rec_start = np.where(idx > 0, nl[np.maximum(idx - 1, 0)] + 1, 0)
    line_start = _line_starts(arr, rec_start)
    # The record's rightmost hit starts in its line if any of its hits does.
    last_hit = np.searchsorted(last_byte, nl[idx], side="right") - 1
    ok = e[last_hit] - back >= line_start
    if not np.all(ok):
        if verify is not None:
            for k in np.flatnonzero(~ok).tolist():
                ls, le = int(line_start[k]) + start, int(nl[idx[k]]) + start
                ok[k] = verify(buf[ls:le]) is not None
        idx, rec_start = idx[ok], rec_start[ok]
    if not len(idx):
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    run_first = np.concatenate(([0], breaks))
    run_last = np.concatenate((breaks - 1, [len(idx) - 1]))
    starts = (rec_start[run_first] + start).tolist()
    stops = (nl[idx[run_last]] + 1 + start).tolist()
    return list(zip(starts, stops, strict=True))


def _line_starts(arr: U8Array, rec_start: I64Array) -> I64Array:
    """Offsets where the lines of the records starting at ``rec_start`` begin."""
    first = arr[int(rec_start[0]) : int(rec_start[0]) + HEADER_MIN + MAX_TOPIC_BYTES + 1].tobytes()
    sp = first.find(b" ", HEADER_MIN)
    if sp > 0:
        needle = np.frombuffer(first[HEADER_MIN : sp + 1], dtype=np.uint8)  # topic + SP
        limit = len(arr) - 1
        same = np.ones(len(rec_start), dtype=np.bool_)
        for k, c in enumerate(needle):
            same &= arr[np.minimum(rec_start + HEADER_MIN + k, limit)] == c
        if np.all(same):
            return rec_start + sp + 1
    raw = arr.tobytes() if not isinstance(arr, bytes) else arr
    return np.array([raw.find(b" ", int(r) + HEADER_MIN) + 1 for r in rec_start], dtype=np.int64)


MAX_TOPIC_BYTES = 128


def _view(buf: Buffer, start: int, end: int) -> Buffer | memoryview:
    if start == 0 and end == len(buf):
        return buf
    return memoryview(buf)[start:end]
