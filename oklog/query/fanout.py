"""Scatter-gather: one query to every store member, one merged answer.

Each member's answer is a stream of records sorted by ULID. The merge emits,
as data arrives, every record up to the *watermark* — the smallest "last ULID
received" among streams still open — so output is in order and starts before
the slowest member finishes. Duplicates (the same ULID from several replicas)
are dropped by the block merge.

Status: a member must begin its answer within the per-member deadline; one
that does not, that errors, or that is skipped after failing repeatedly is
named in ``X-Oklog-Errors`` together with the members that may hold records
but cannot be asked (dead, left with data, forgotten by gossip). A member
that fails after streaming began is dropped if the others are known to hold
its records; otherwise the response is aborted (the client sees a truncated
transfer, never a hang and never a silently short 200).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

import trio

from oklog.query.answer import Absent as Absent
from oklog.query.answer import complete_without as complete_without
from oklog.query.answer import sanitize as sanitize
from oklog.records.merge import iter_merge, seek
from oklog.records.record import ULID_LEN

Emit = Callable[[bytes], Awaitable[None]]


@dataclass
class MergeState:
    buffers: list[bytes] = field(default_factory=list)
    done: list[bool] = field(default_factory=list)

    def watermark(self) -> bytes | None:
        """Largest key below which every open stream is complete; None: wait."""
        w: bytes | None = None
        for buf, done in zip(self.buffers, self.done, strict=True):
            if done:
                continue
            if not buf:
                return None
            start = buf.rfind(b"\n", 0, len(buf) - 1) + 1
            last = buf[start : start + ULID_LEN]
            if w is None or last < w:
                w = last
        return w

    def take_upto(self, key: bytes | None) -> bytes:
        """Merge and remove everything <= key (everything if key is None)."""
        parts = []
        for i, buf in enumerate(self.buffers):
            if not buf:
                continue
            if key is None:
                parts.append(buf)
                self.buffers[i] = b""
            else:
                cut = seek(buf, key + b"\x00")
                if cut:
                    parts.append(buf[:cut])
                    self.buffers[i] = buf[cut:]
        if not parts:
            return b""
        if len(parts) == 1:
            return parts[0]
        return b"".join(iter_merge(parts))


READ_AHEAD = 4 << 20  # bytes buffered per member stream beyond what can be emitted


class RecordStream(Protocol):
    """A member's answer as the merge reads it: whole-record chunks in ULID
    order (a trio receive channel, or ``coordinator._Unwrap`` around one);
    a member's failure raises from the iteration."""

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> object: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...


OnFail = Callable[[int, BaseException], bool]


class _Merge:
    """The pumps (one per stream, each filling its buffer) and the loop that
    emits everything below the watermark whenever a pump brings data."""

    def __init__(self, n: int, emit: Emit, on_fail: OnFail | None) -> None:
        self.state = MergeState([b""] * n, [False] * n)
        self.emit = emit
        self.on_fail = on_fail
        self.wake = trio.Event()
        self.emitted = trio.Event()
        self.failures: list[BaseException] = []

    async def pump(self, i: int, rx: RecordStream) -> None:
        state = self.state
        try:
            async with rx:
                async for chunk in rx:
                    state.buffers[i] += chunk
                    self.wake.set()
                    while len(state.buffers[i]) > READ_AHEAD and not self.failures:
                        await self.emitted.wait()
        except Exception as e:  # noqa: BLE001 - a member's failure, whatever it is, is decided by on_fail
            if self.on_fail is None or not self.on_fail(i, e):
                self.failures.append(e)
        finally:
            state.done[i] = True
            self.wake.set()

    async def run(self) -> None:
        """Emit until every stream is done; a failure not carried on raises here."""
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            if self.failures:
                raise self.failures[0]
            if all(self.state.done):
                out = self.state.take_upto(None)
                if out:
                    await self.emit(out)
                return
            await self._emit_below_watermark()

    async def _emit_below_watermark(self) -> None:
        w = self.state.watermark()
        if w is None:
            return
        out = self.state.take_upto(w)
        if out:
            await self.emit(out)
            self.emitted.set()
            self.emitted = trio.Event()


async def merge_streams(
    streams: Sequence[RecordStream],
    emit: Emit,
    on_fail: OnFail | None = None,
) -> None:
    """Merge sorted record streams (channels of whole-record chunks) in order.

    ``emit`` gets raw records; a slow ``emit`` holds the pumps back (each reads
    at most ``READ_AHEAD`` bytes ahead), which holds back the members' scans.
    A stream that fails is passed to ``on_fail(index, exc)``: True carries on
    without it (its records are held elsewhere), False (or no callback) aborts.
    """
    if not streams:
        return
    merge = _Merge(len(streams), emit, on_fail)
    async with trio.open_nursery() as nursery:
        for i, rx in enumerate(streams):
            nursery.start_soon(merge.pump, i, rx)
        await merge.run()


# -- who may hold records, and who is not answering (pure) ----------------------------

# A member can only hold records ingested while it was alive; ULIDs carry their
# ingest (or event) time, which may run a little ahead of the clock that saw the
# member alive.
CLOCK_SKEW_MS = 5 * 60 * 1000
REMEMBER = 24 * 3600.0  # how long a store member gossip has forgotten stays known
MAX_REMEMBERED = 1024
# A member's advertised oldest record (``store_lo_ms``) is trusted only this far:
# a query ending more than SPAN_SLACK_MS before it skips the member. The slack
# absorbs records a little older than the oldest (late events, a new member's
# first writes) arriving before the lowered figure has spread through gossip.
SPAN_SLACK_MS = CLOCK_SKEW_MS
# After a store member leaves (its records handed off to the others, whose
# lowered figures spread through gossip only afterwards), nobody's span is
# trusted for this long.
SPAN_GRACE = 120.0


def describe(exc: BaseException) -> str:
    """An exception as a person reads it: its message, never its repr."""
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    text = str(exc).strip()
    return sanitize(text or type(exc).__name__)


@dataclass(frozen=True)
class Observed:
    """One store member as gossip shows it now."""

    id: str
    api_addr: str | None  # None: this node (queried in-process)
    state: str  # alive | suspect | dead | left
    since: float  # wall-clock time of the last state change
    holds_data: bool  # advertised stored records (True when unknown)
    stored_bytes: int | None = None
    is_self: bool = False
    lo_ms: int | None = None  # advertised oldest record (ms); None: unknown, may hold anything


@dataclass
class Known:
    id: str
    api_addr: str | None
    state: str  # alive | suspect | dead | left | gone (forgotten by gossip)
    last_alive: float
    holds_data: bool
    stored_bytes: int | None
    is_self: bool
    lo_ms: int | None = None


@dataclass
class Roster:
    """Store members this node knows, including those gossip has declared dead
    and, for ``remember`` seconds after they were last alive, those it has
    forgotten. ``plan`` says which to ask and which are missing."""

    remember: float = REMEMBER
    known: dict[str, Known] = field(default_factory=dict)
    grace: float = SPAN_GRACE
    now: float = 0.0  # of the last ``observe``
    departed: float = float("-inf")  # last time a store member was seen leaving

    def observe(self, now: float, members: list[Observed]) -> None:
        self.now = now
        for m in members:
            self._see(now, m)
        present = {m.id for m in members}
        for k in list(self.known.values()):
            if k.id in present:
                continue
            if k.state in ("alive", "suspect", "dead"):
                k.state = "gone"
            if now - k.last_alive > self.remember:
                del self.known[k.id]
        if len(self.known) > MAX_REMEMBERED:
            for k in sorted(self.known.values(), key=lambda k: k.last_alive)[: len(self.known) - MAX_REMEMBERED]:
                del self.known[k.id]

    def _see(self, now: float, m: Observed) -> None:
        """One member's row of this observation."""
        k = self.known.get(m.id)
        alive = m.state in ("alive", "suspect")
        if m.state == "left" and (k is None or k.state != "left"):
            # First seen already gone: since it left (its clock, capped by ours).
            self.departed = max(self.departed, now if k is not None else min(now, m.since))
        if k is None:
            # First seen dead: it was last alive no later than when it died.
            last = now if alive else m.since
            k = self.known[m.id] = Known(
                m.id, m.api_addr, m.state, last, m.holds_data, m.stored_bytes, m.is_self, m.lo_ms
            )
        k.state = m.state
        if m.api_addr is not None or m.is_self:
            k.api_addr = m.api_addr
        k.is_self = m.is_self
        if alive:
            k.last_alive = now
            k.holds_data = m.holds_data
            k.stored_bytes = m.stored_bytes
            k.lo_ms = m.lo_ms
        else:
            # Gossip's last word on a member that is gone may be newer than
            # what was seen while it was alive: only ever widen the span.
            k.lo_ms = _lower(k.lo_ms, m.lo_ms)
        if m.state == "left":
            # A leaving member's last word on what it holds.
            k.holds_data = m.holds_data
            k.stored_bytes = m.stored_bytes

    def total(self) -> int:
        return len(self.known)

    def plan(self, lo_ms: int) -> tuple[list[Known], list[Absent]]:
        """Members to ask, and members that may hold records at or after
        ``lo_ms`` (ms since the epoch) but cannot be asked."""
        ask, absent, _ = self.plan_range(lo_ms, None)
        return ask, absent

    def trusts_spans(self) -> bool:
        """False for ``grace`` seconds after a store member left: the records
        it handed off may lower the others' spans faster than gossip says so."""
        return self.now - self.departed >= self.grace

    def plan_range(self, lo_ms: int, hi_ms: int | None) -> tuple[list[Known], list[Absent], list[Known]]:
        """For a query over ``lo_ms``..``hi_ms`` (inclusive ms; None: open):
        members to ask, members that may hold its records but cannot be
        asked, and members skipped because they advertise holding nothing that
        old (see ``holds_nothing_before``)."""
        ask: list[Known] = []
        absent: list[Absent] = []
        skipped: list[Known] = []
        trust = self.trusts_spans()
        for k in sorted(self.known.values(), key=lambda k: k.id):
            if trust and holds_nothing_before(k.lo_ms, hi_ms):
                skipped.append(k)
                continue
            if k.is_self or (k.state in ("alive", "suspect") and k.api_addr):
                ask.append(k)
                continue
            if k.state == "left" and not k.holds_data:
                continue  # left holding nothing (handed off, or never stored)
            if lo_ms > int(k.last_alive * 1000) + CLOCK_SKEW_MS:
                continue  # the range starts after it was last alive
            absent.append(Absent(k.id, self._reason(k)))
        return ask, absent, skipped

    @staticmethod
    def _reason(k: Known) -> str:
        if k.state == "left":
            held = f" holding {k.stored_bytes} bytes" if k.stored_bytes else ""
            return f"left the cluster{held}"
        if k.state == "gone":
            return "dead (no longer in gossip)"
        if k.state in ("alive", "suspect"):
            return "no API address advertised"
        return k.state


def holds_nothing_before(lo_ms: int | None, hi_ms: int | None) -> bool:
    """Is a member advertising ``lo_ms`` as its oldest record known to hold
    nothing at or before ``hi_ms``? Only an advertised figure counts (None:
    unknown, it may hold anything), and only with ``SPAN_SLACK_MS`` to spare.
    There is no upper bound: a live member may be written any record at any
    moment, so no advertisement can say it holds nothing recent."""
    if lo_ms is None or hi_ms is None:
        return False
    return hi_ms < lo_ms - SPAN_SLACK_MS


def _lower(a: int | None, b: int | None) -> int | None:
    """The more conservative (older) of two advertised oldest records."""
    if a is None or b is None:
        return None
    return min(a, b)


@dataclass
class _Health:
    failures: int = 0
    skip_until: float = 0.0
    skip_for: float = 0.0
    last_error: str = ""


@dataclass
class MemberHealth:
    """Members whose queries fail ``threshold`` times in a row are skipped for a
    while (``backoff`` seconds, doubling up to ``max_backoff`` while they keep
    failing); a success clears the record. Skipped members are reported."""

    threshold: int = 3
    backoff: float = 15.0
    max_backoff: float = 300.0
    members: dict[str, _Health] = field(default_factory=dict)

    def skipped(self, name: str, now: float) -> str | None:
        h = self.members.get(name)
        if h is None or now >= h.skip_until:
            return None
        return (
            f"skipped for {h.skip_until - now:.0f}s after {h.failures} failed queries in a row"
            f" (last: {h.last_error})"
        )

    def failed(self, name: str, now: float, error: str) -> None:
        h = self.members.setdefault(name, _Health())
        h.failures += 1
        h.last_error = error
        if h.failures >= self.threshold:
            h.skip_for = min(self.max_backoff, h.skip_for * 2 if h.skip_for else self.backoff)
            h.skip_until = now + h.skip_for

    def succeeded(self, name: str) -> None:
        self.members.pop(name, None)

    def prune(self, names: set[str]) -> None:
        for n in list(self.members):
            if n not in names:
                del self.members[n]
