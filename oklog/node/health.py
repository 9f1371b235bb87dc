"""What is wrong with this node now: warnings from recent events. Pure (no I/O, no clock).

Components report outcomes as they happen (the consumer: each gather from an
ingest member, each replicate to a store member, each commit); the node samples
its ingest counters once a second. ``Health.warnings(now)`` turns that into the
warnings ``/cluster/state`` carries, each naming its cause:

    replicate  to store member X failed      → "replication to X failing"   (error)
    gather     from ingest member X failed   → "cannot read from ingest member X"
    commit     to ingest member X failed     → "commits to ingest member X failing"
    ingest     connections open, no writes   → "ingest stalled"

A failure is current while it is recent (``RECENT`` seconds) and no later
success with the same subject superseded it, so a warning clears when its cause
has gone: the member answers again, or nothing has failed for a while (a member
that died stops being tried; its death is the member list's warning). For a
commit, the consumer reports that success also when the member answers and no
longer holds the segment whose commit failed (it restarted or timed it out, and
maybe another store member consumed it again): the consumer that failed may
never commit to that member again.
Times are the node's monotonic clock, passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from oklog.node.state import FailureCounts, HealthWarning, Recent

RECENT = 60.0  # a failure not superseded by a success is current for this long
KEEP = 300.0  # events kept for the figures (failures in the last five minutes)
MAX_EVENTS = 4096  # a storm of failures is bounded in memory
STALL_AFTER = 30.0  # producers connected and nothing written for this long: a stall

KINDS = ("replicate", "gather", "commit")


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    kind: str  # replicate, gather, commit
    subject: str  # the member the outcome concerns ("" when none: no store members)
    ok: bool
    text: str = ""


@dataclass(frozen=True, slots=True)
class Failing:
    """A subject whose last outcome of a kind failed, recently."""

    kind: str
    subject: str
    count: int  # failures in the last RECENT seconds
    last_age: float  # seconds since the last failure
    last_text: str


@dataclass(frozen=True, slots=True)
class Warning:
    level: str  # "warning" | "error"
    kind: str  # replicate, gather, commit, ingest_stall, consumer
    subject: str
    text: str

    def as_dict(self) -> HealthWarning:
        return {"level": self.level, "kind": self.kind, "subject": self.subject, "text": self.text}


class RecentEvents:
    """Outcomes of the last ``KEEP`` seconds (at most ``MAX_EVENTS``), oldest first."""

    def __init__(self, keep: float = KEEP, cap: int = MAX_EVENTS) -> None:
        self.keep = keep
        self.events: deque[Event] = deque(maxlen=cap)
        # The latest outcome per (kind, subject) survives trimming, so a success
        # long ago is not mistaken for "never succeeded".
        self.last: dict[tuple[str, str], Event] = {}

    def add(self, now: float, kind: str, subject: str, ok: bool, text: str = "") -> None:
        e = Event(now, kind, subject, ok, text)
        self.last[(kind, subject)] = e
        if not ok:  # successes only matter as "the latest outcome"
            self.events.append(e)
        self.trim(now)

    def trim(self, now: float) -> None:
        while self.events and self.events[0].time < now - self.keep:
            self.events.popleft()
        for key in [k for k, e in self.last.items() if e.time < now - self.keep]:
            del self.last[key]

    def failures(self, now: float, within: float) -> FailureCounts:
        """Failures per kind in the last ``within`` seconds."""
        out = dict.fromkeys(KINDS, 0)
        for e in self.events:
            if e.time >= now - within:
                out[e.kind] = out.get(e.kind, 0) + 1
        return cast(FailureCounts, out)

    def failing(self, now: float, within: float = RECENT) -> list[Failing]:
        """(kind, subject) pairs whose latest outcome is a failure in the last ``within`` s."""
        out = []
        for (kind, subject), last in sorted(self.last.items()):
            if last.ok or last.time < now - within:
                continue
            n = sum(1 for e in self.events
                    if e.kind == kind and e.subject == subject and e.time >= now - within)
            out.append(Failing(kind, subject, max(n, 1), now - last.time, last.text))
        return out


class IngestWatch:
    """When records were last written while producers were connected."""

    def __init__(self) -> None:
        self.records: int | None = None
        self.changed: float | None = None  # when records_in last moved (or watching began)
        self.connections = 0

    def observe(self, now: float, records_in: int, connections: int) -> None:
        if self.records is None or records_in != self.records:
            self.records, self.changed = records_in, now
        elif connections > 0 and self.connections == 0:
            self.changed = now  # a producer just connected: its silence starts now
        self.connections = connections

    def idle_for(self, now: float) -> float | None:
        return None if self.changed is None else max(0.0, now - self.changed)

    def stalled_for(self, now: float, after: float = STALL_AFTER) -> float | None:
        idle = self.idle_for(now)
        if self.connections <= 0 or idle is None or idle < after:
            return None
        return idle


class Health:
    def __init__(self) -> None:
        self.events = RecentEvents()
        self.ingest = IngestWatch()

    def report(self, now: float, kind: str, subject: str, ok: bool, text: str = "") -> None:
        self.events.add(now, kind, subject, ok, text)

    def figures(self, now: float, ingest_idle: float | None = None) -> Recent:
        """Counts over fixed windows, for dashboards and ``/metrics`` readers;
        ``ingest_idle``: seconds since the last record (None: never, or no ingest)."""
        self.events.trim(now)
        return {
            "window_seconds": RECENT,
            "failures": self.events.failures(now, RECENT),
            "failures_5m": self.events.failures(now, KEEP),
            "ingest_idle_seconds": None if ingest_idle is None else round(ingest_idle, 3),
        }

    def warnings(self, now: float, consumer_warnings: Sequence[str] = ()) -> list[Warning]:
        self.events.trim(now)
        return decide(self.events.failing(now), self.ingest.stalled_for(now),
                      self.ingest.connections, list(consumer_warnings))


def decide(failing: list[Failing], stalled: float | None, connections: int,
           consumer_warnings: list[str]) -> list[Warning]:
    """The warnings for what is failing now. Pure."""
    out: list[Warning] = []
    for f in failing:
        times = f"{f.count} failure{'s' if f.count != 1 else ''} in the last {_dur(RECENT)}, " \
                f"last {_dur(f.last_age)} ago"
        err = f": {f.last_text}" if f.last_text else ""
        if f.kind == "replicate":
            if f.subject:
                text = f"replication to store member {f.subject} failing ({times}){err}"
            else:
                text = f"replication failing: no store member to replicate to ({times})"
            out.append(Warning("error", f.kind, f.subject, text))
        elif f.kind == "gather":
            out.append(Warning(
                "warning", f.kind, f.subject,
                f"cannot read from ingest member {f.subject} ({times}); its unconsumed "
                f"segments wait on its disk{err}"))
        elif f.kind == "commit":
            out.append(Warning(
                "warning", f.kind, f.subject,
                f"commits to ingest member {f.subject} failing ({times}); its segments will be "
                f"consumed again (duplicates are dropped){err}"))
    if stalled is not None:
        out.append(Warning(
            "warning", "ingest_stall", "",
            f"ingest stalled: {connections} producer connection{'s' if connections != 1 else ''} "
            f"open, nothing written for {_dur(stalled)}"))
    for w in consumer_warnings:
        out.append(Warning("warning", "consumer", "", str(w)))
    return out


def _dur(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m" + (f"{int(s % 60):02d}s" if s % 60 >= 1 else "")
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
