"""Several terms in one query: ``-q`` terms that must all match, ``-v`` terms
that must not, and ``-i`` (case-insensitive) for all of them. Pure.

The first ``-q`` term drives the scan as a single term does (the C substring
search, hyperscan, the segment blooms). Case-insensitive regexes become RE2 /
hyperscan patterns with the ``(?i)`` flag — the engines fold case while they
scan, no lowercase copy of the data is made — and such a pattern has no
required literal, so blooms (built over the bytes as they are) skip nothing.
A case-insensitive substring stays a substring (``Query.icase``): ``_fast.grep``
compares both cases of its rare bytes as it scans; blooms skip nothing for it
either.
The other terms then filter the first term's matches, a whole buffer at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import oklog._fast as _fast
from oklog.query.engine import MODE_RAW, Buffer, Matcher, Query, Ranges

if TYPE_CHECKING:
    from oklog.query.fields import WhereFilter


def term_query(term: bytes, regex: bool, icase: bool, topic: bytes | None = None) -> Query:
    if icase and term:
        if regex:
            return Query(b"(?i)(?:" + term + b")", True, topic)
        return Query(term, False, topic, icase=True)  # the C search folds ASCII case itself
    return Query(term, regex, topic)


class TermsMatcher:
    """A Matcher for the first term, narrowed by the others. Offers what the
    store's scan uses of a Matcher: ``scan_format`` and ``without_topic``."""

    def __init__(
        self, first: Matcher, must: list[Matcher], must_not: list[Matcher], where: WhereFilter | None = None
    ) -> None:
        self.first = first
        self.must = must
        self.must_not = must_not
        self.where = where  # applied last
        self.query = first.query

    def without_topic(self, topic: str) -> TermsMatcher:
        return TermsMatcher(self.first.without_topic(topic), self.must, self.must_not, self.where)

    def scan_format(self, buf: Buffer, start: int, end: int, mode: int) -> bytes:
        out = self.first.scan_format(buf, start, end, MODE_RAW)
        for m in self.must:
            if not out:
                return b""
            out = m.scan_format(out, 0, len(out), MODE_RAW)
        for m in self.must_not:
            if not out:
                return b""
            out = _without(out, m.scan(out, 0, len(out)))
        if self.where is not None and out:
            out = self.where.apply(out)
        if not out or mode == MODE_RAW:
            return out
        return _fast.format(out, 0, len(out), mode)


def _without(buf: bytes, ranges: Ranges) -> bytes:
    """``buf`` less the given (sorted, disjoint) ranges of records."""
    if not ranges:
        return buf
    parts = []
    pos = 0
    for s, e in ranges:
        if s > pos:
            parts.append(buf[pos:s])
        pos = e
    if pos < len(buf):
        parts.append(buf[pos:])
    return b"".join(parts)


def build_matcher(
    terms: Sequence[bytes],
    regex: bool,
    icase: bool,
    without: Sequence[bytes],
    topic: bytes | None,
    where: Sequence[str] = (),
) -> Matcher | TermsMatcher:
    """The matcher of a query with these terms and ``-where`` conditions
    (text); raises QueryError for a bad one."""
    first = Matcher(term_query(terms[0] if terms else b"", regex, icase, topic))
    if len(terms) <= 1 and not without and not where:
        return first
    must = [Matcher(term_query(t, regex, icase)) for t in terms[1:] if t]
    must_not = [Matcher(term_query(t, regex, icase)) for t in without if t]
    wf = None
    if where:
        from oklog.query.fields import WhereFilter, parse_condition

        wf = WhereFilter([parse_condition(w) for w in where])
    return TermsMatcher(first, must, must_not, wf)
