"""Context around matches (``-A N``, ``-B N``, ``-C N``), as grep prints it,
within each topic. Pure.

Neighbours may be held by other members than the match, so the coordinator
asks the members for every record of the range (and topic) and decides here,
over the merged stream in ULID order, what to print: each match, the ``B``
records of its topic before it and the ``A`` after it. ``None`` in the output
stands for grep's ``--`` between groups of one topic that are not adjacent.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from oklog.query.engine import HEADER_MIN, MODE_RAW, Matcher, ScanMatcher
from oklog.query.format import Formatter

if TYPE_CHECKING:
    from oklog.net.http import Request, Write
    from oklog.query.params import QueryParams

MAX_CONTEXT = 1000


@dataclass
class _Topic:
    seen: int = 0
    printed: int | None = None  # index (in this topic) of the last record printed
    after: int = 0
    before: collections.deque[tuple[int, bytes]] = field(default_factory=collections.deque)  # (index, record)


class ContextFilter:
    """Decides, over the merged stream, which records print: matches and the
    records of their topic around them."""

    def __init__(self, matcher: ScanMatcher, before: int, after: int) -> None:
        self.matcher = matcher
        self.before = before
        self.after = after
        self.topics: dict[bytes, _Topic] = {}

    def feed(self, records: bytes) -> list[bytes | None]:
        """Records of ``records`` (whole, in ULID order) to print, with None
        where a ``--`` separator goes."""
        if not records:
            return []
        hits = self.matcher.scan_format(records, 0, len(records), MODE_RAW)
        matched = {rec[:26] for rec in hits.split(b"\n")[:-1]}
        out: list[bytes | None] = []
        for rec in records.split(b"\n")[:-1]:
            sp = rec.find(b" ", HEADER_MIN)
            topic = rec[27:sp]
            st = self.topics.get(topic)
            if st is None:
                st = self.topics[topic] = _Topic(before=collections.deque(maxlen=self.before or 1))
            i = st.seen
            st.seen += 1
            if rec[:26] in matched:
                if self.before:
                    for j, old in st.before:
                        self._print(st, j, old, out)
                st.before.clear()
                self._print(st, i, rec, out)
                st.after = self.after
            elif st.after > 0:
                self._print(st, i, rec, out)
                st.after -= 1
            elif self.before:
                st.before.append((i, rec))
        return out

    @staticmethod
    def _print(st: _Topic, i: int, rec: bytes, out: list[bytes | None]) -> None:
        if st.printed is not None and i != st.printed + 1:
            out.append(None)
        st.printed = i
        out.append(rec + b"\n")


def context_args(req: Request) -> tuple[int, int] | None:
    """``(before, after)`` from the A, B and C parameters; None without them."""
    from oklog.net.http import HTTPError

    def n(name: str) -> int | None:
        v = req.arg(name)
        if v is None or v == "":
            return None
        try:
            x = int(v)
        except ValueError:
            x = -1
        if not 0 <= x <= MAX_CONTEXT:
            raise HTTPError(400, f"{name}={v!r}: use a number of records from 0 to {MAX_CONTEXT}")
        return x

    a, b, c = n("A"), n("B"), n("C")
    if a is None and b is None and c is None:
        return None
    return (b if b is not None else c or 0, a if a is not None else c or 0)


MATCH_PARAMS = ("q", "not", "where", "i", "regex", "fields", "format", "A", "B", "C")


Emit = Callable[[bytes], Awaitable[None]]


class Emitter(Protocol):
    """Makes the emitter of a query's answer from its output format and the response's write."""

    def __call__(self, fmt: Formatter | None, write: Write) -> Emit: ...


def with_context(
    req: Request, params: QueryParams, matcher: ScanMatcher, ctx: tuple[int, int]
) -> tuple[str, QueryParams, Matcher, Emitter]:
    """What the coordinator asks of members for a query with context (every
    record of the range and topic: the query string, plan parameters and
    matcher), and the emitter that prints matches and their context."""
    import dataclasses
    from urllib.parse import urlencode

    from oklog.query.engine import Query

    pairs = [(k, v) for k, vs in req.query.items() if k not in MATCH_PARAMS for v in vs]
    pairs.append(("format", "raw"))
    qs = urlencode(pairs, encoding="latin-1")
    everything = dataclasses.replace(params, query=Query(b"", False, params.topic))
    filt = ContextFilter(matcher, ctx[0], ctx[1])
    return qs, everything, Matcher(everything.query), functools.partial(ContextEmit, filt)


class ContextEmit:
    """Writes the records ``filt`` keeps of each merged piece, formatted,
    with ``--`` between groups (raw and JSON records: none)."""

    def __init__(self, filt: ContextFilter, fmt: Formatter | None, write: Write) -> None:
        self.filt = filt
        self.fmt = fmt
        self.write = write
        self.sep = fmt is not None and getattr(fmt, "__name__", "") != "as_json"

    async def __call__(self, data: bytes) -> None:
        run: list[bytes] = []
        for item in self.filt.feed(data):
            if item is not None:
                run.append(item)
                continue
            await self._flush(run)
            run = []
            if self.sep:
                await self.write(b"--\n")
        await self._flush(run)

    async def _flush(self, run: list[bytes]) -> None:
        if run:
            chunk = b"".join(run)
            await self.write(chunk if self.fmt is None else self.fmt(chunk))
