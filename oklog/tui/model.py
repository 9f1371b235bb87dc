"""What the TUI shows, computed from ``GET /cluster/state`` documents. Pure.

The state document grows as the cluster grows features, so everything here is
tolerant: a missing key is "unknown", never a crash. Pipeline figures come from
the top-level ``pipeline`` (the attached node's own), a member's ``pipeline`` key
if a node ever carries one, or ``with_pipelines`` (what the app fetched from the
other members' own ``/cluster/state``).

Rates are not in the document: ``History`` keeps successive samples per node and
derives records/s and bytes/s from the deltas of ``records_in``/``bytes_in``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from oklog.human import format_duration

HISTORY_SECONDS = 300.0  # sparklines cover the last five minutes
LAG_WARN = 10.0  # oldest flushed segment older than this (seconds) and growing: warn
LAG_ERROR = 60.0  # older than this: error, growing or not
DISK_WARN = 0.80  # fraction of the disk used
DISK_ERROR = 0.90
RECENT = 60.0  # a node without warnings of its own: failures seen in this window warn

STATES = ("alive", "suspect", "dead", "left")
INGEST_ROLES = ("ingest", "ingeststore")
STORE_ROLES = ("store", "ingeststore")


def num(d: Any, *path: str, default: float = 0.0) -> float:
    """A number at ``d[path[0]][path[1]]...``, or ``default`` when absent or not a number."""
    cur = d
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return default
        cur = cur[key]
    if isinstance(cur, bool) or not isinstance(cur, int | float):
        return default
    return float(cur)


def sub(d: Any, key: str) -> dict:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, dict) else {}


@dataclass(frozen=True)
class Member:
    id: str
    role: str = "?"
    api_addr: str = ""
    gossip_addr: str = ""
    state: str = "alive"
    incarnation: int | None = None
    last_heard: float | None = None
    uptime: float | None = None
    is_self: bool = False
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def ingests(self) -> bool:
        return self.role in INGEST_ROLES

    @property
    def down(self) -> bool:
        return self.state in ("dead", "left")

    @property
    def started(self) -> float | None:
        return _opt_num(sub(self.raw, "meta").get("started"))

    @property
    def shown_uptime(self) -> float | None:
        """How long it has been up: for a dead or departed member, up to the last
        time it was heard from (a stopped process does not keep counting, whatever
        the node computed from its start time)."""
        started = self.started
        if not self.down or started is None or self.last_heard is None:
            return self.uptime
        stopped = max(0.0, self.last_heard - started)
        return stopped if self.uptime is None else min(self.uptime, stopped)

    @property
    def stores(self) -> bool:
        return self.role in STORE_ROLES


@dataclass(frozen=True)
class ClusterState:
    self_id: str
    members: tuple[Member, ...]
    pipelines: dict[str, dict]  # member id → pipeline figures
    replication_factor: int | None = None
    time: float | None = None  # the node's clock when it answered

    @property
    def me(self) -> Member | None:
        return next((m for m in self.members if m.is_self), None)

    def counts(self) -> tuple[int, int, int]:
        """(alive, total, left): members that left gracefully are not in the total."""
        total = [m for m in self.members if m.state != "left"]
        return sum(m.state == "alive" for m in total), len(total), len(self.members) - len(total)

    def counts_text(self) -> str:
        alive, total, left = self.counts()
        return f"{alive}/{total} members alive" + (f", {left} left" if left else "")


def parse_state(doc: dict) -> ClusterState:
    """A ``/cluster/state`` document → ClusterState.

    Members carry ``id`` (the gossip address), ``role``, ``gossip_addr``,
    ``api_addr``, ``state``, ``incarnation``, ``last_heard`` (unix time),
    ``self`` (bool), ``uptime_seconds`` and ``meta``; the top level names this
    node (``self``) and carries its own ``pipeline``.
    """
    self_id = doc.get("self") or doc.get("id")
    self_id = self_id if isinstance(self_id, str) else ""
    members = []
    pipelines: dict[str, dict] = {}
    raw_members = doc.get("members")
    for i, m in enumerate(raw_members if isinstance(raw_members, list) else []):
        if not isinstance(m, dict):
            continue
        meta = sub(m, "meta")
        mid = str(m.get("id") or m.get("name") or m.get("gossip_addr") or m.get("api_addr")
                  or f"member-{i}")
        if not self_id and m.get("self") is True:
            self_id = mid
        inc = m.get("incarnation")
        members.append(
            Member(
                id=mid,
                role=str(m.get("role") or meta.get("role") or "?"),
                api_addr=str(m.get("api_addr") or meta.get("api_addr") or m.get("addr") or ""),
                gossip_addr=str(m.get("gossip_addr") or ""),
                state=str(m.get("state") or "alive").lower(),
                incarnation=inc if isinstance(inc, int) and not isinstance(inc, bool) else None,
                last_heard=_opt_num(m.get("last_heard")),
                uptime=_opt_num(m.get("uptime_seconds", m.get("uptime"))),
                is_self=m.get("self") is True or mid == self_id,
                raw=m,
            )
        )
        if isinstance(m.get("pipeline"), dict):
            pipelines[mid] = m["pipeline"]
    if isinstance(doc.get("pipeline"), dict) and self_id:
        pipelines[self_id] = doc["pipeline"]
    members.sort(key=lambda m: (not m.is_self, m.id))
    rf = doc.get("replication_factor")
    t = _opt_num(doc.get("time"))
    return ClusterState(
        self_id=self_id,
        members=tuple(members),
        pipelines=pipelines,
        replication_factor=rf if isinstance(rf, int) and not isinstance(rf, bool) else None,
        time=t if t is not None else _opt_num(sub(doc, "pipeline").get("time")),
    )


def peers_to_fetch(state: ClusterState) -> list[Member]:
    """Members whose pipeline the state lacks and who may answer a direct
    ``GET /cluster/state``: not this node, alive or suspect, with an API address."""
    return [m for m in state.members
            if not m.is_self and m.api_addr and m.state in ("alive", "suspect")
            and m.id not in state.pipelines]


def with_pipelines(state: ClusterState, extra: dict[str, dict]) -> ClusterState:
    """The state plus pipelines fetched from other members (never overriding one
    the state already carries)."""
    if not extra:
        return state
    merged = {k: v for k, v in extra.items() if isinstance(v, dict)} | state.pipelines
    return replace(state, pipelines=merged)


def _opt_num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


# -- history and rates ------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    time: float
    records_in: float
    bytes_in: float
    lag: float
    replications_failed: float
    replications_ok: float


class History:
    """Successive pipeline samples of one node, the last ``HISTORY_SECONDS``."""

    def __init__(self, seconds: float = HISTORY_SECONDS) -> None:
        self.seconds = seconds
        self.samples: deque[Sample] = deque()

    def add(self, pipeline: dict, fallback_time: float) -> None:
        t = num(pipeline, "time", default=fallback_time)
        s = Sample(
            time=t,
            records_in=num(pipeline, "ingest", "records_in"),
            bytes_in=num(pipeline, "ingest", "bytes_in"),
            lag=num(pipeline, "ingest", "oldest_flushed_age_seconds"),
            replications_failed=num(pipeline, "consumer", "replications_failed"),
            replications_ok=num(pipeline, "consumer", "replications_ok"),
        )
        if self.samples and s.time <= self.samples[-1].time:
            self.samples[-1] = s  # same or older sample (clock step): replace
        else:
            self.samples.append(s)
        while self.samples and self.samples[0].time < t - self.seconds:
            self.samples.popleft()

    def _rates(self, attr: str) -> list[float]:
        out = []
        prev: Sample | None = None
        for s in self.samples:
            if prev is not None:
                dt = s.time - prev.time
                d = getattr(s, attr) - getattr(prev, attr)
                out.append(d / dt if dt > 0 and d >= 0 else 0.0)  # d < 0: node restarted
            prev = s
        return out

    def record_rates(self) -> list[float]:
        return self._rates("records_in")

    def byte_rates(self) -> list[float]:
        return self._rates("bytes_in")

    def lag_growing(self, window: int = 3) -> bool:
        lags = [s.lag for s in list(self.samples)[-window - 1 :]]
        return len(lags) > window and all(b > a for a, b in zip(lags, lags[1:], strict=False))

    def replication_failures_within(self, seconds: float) -> float:
        """Replication failures between the samples of the last ``seconds`` (a
        restart, which resets the counter, counts nothing)."""
        if len(self.samples) < 2:
            return 0.0
        last = self.samples[-1]
        total, prev = 0.0, None
        for s in self.samples:
            if prev is not None and s.time >= last.time - seconds:
                total += max(0.0, s.replications_failed - prev.replications_failed)
            prev = s
        return total


# -- warnings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    level: str  # "warning" | "error"
    node: str
    text: str


def warnings(state: ClusterState, histories: dict[str, History]) -> list[Alert]:
    out: list[Alert] = []
    for m in state.members:
        if m.state == "suspect":
            out.append(Alert("warning", m.id, "suspect: not answering probes"))
        elif m.state == "dead":
            out.append(Alert("error", m.id, "dead: not answering; " + data_of_down_member(state, m)))
    for node, p in sorted(state.pipelines.items()):
        out.extend(pipeline_warnings(node, p, histories.get(node), state.replication_factor))
    return out


def data_of_down_member(state: ClusterState, m: Member) -> str:
    """What a down member means for its data, from the replication factor and how
    many store members are down (dead or suspect; a member that left handed its
    data off and does not count)."""
    parts = []
    if m.stores:
        stores = [x for x in state.members if x.stores and x.state != "left"]
        down = [x for x in stores if x.state in ("dead", "suspect")]
        rf = state.replication_factor
        figures = f"rf {rf}, {len(down)} of {len(stores)} store members down" if rf else \
            f"replication factor unknown, {len(down)} of {len(stores)} store members down"
        if not rf:
            parts.append(f"records it holds may be missing from queries ({figures})")
        elif rf <= 1:
            parts.append(f"records it holds are missing from queries until it returns ({figures})")
        elif len(down) < rf:
            parts.append(f"records it holds have other copies on live members ({figures})")
        else:
            parts.append(f"records whose {rf} copies are all on down members are missing from "
                         f"queries ({figures})")
    if m.ingests:
        parts.append("records it took in but the store tier had not yet consumed wait on its disk")
    return "; ".join(parts) or "it holds no data"


def pipeline_warnings(node: str, p: dict, h: History | None, rf: int | None) -> Iterable[Alert]:
    lag = num(p, "ingest", "oldest_flushed_age_seconds")
    if lag >= LAG_ERROR:
        yield Alert("error", node, f"consumer lag {duration(lag)}: oldest flushed segment not consumed")
    elif lag >= LAG_WARN and h is not None and h.lag_growing():
        yield Alert("warning", node, f"consumer lag growing: oldest flushed segment {duration(lag)} old")
    node_warnings = p.get("warnings")
    if isinstance(node_warnings, list):
        # The node's own: each from a window of recent events, naming its cause.
        for w in node_warnings:
            if isinstance(w, dict) and w.get("text"):
                level = w.get("level") if w.get("level") in ("warning", "error") else "warning"
                yield Alert(str(level), node, str(w["text"]))
            elif isinstance(w, str) and w:
                yield Alert("warning", node, w)
    else:
        yield from _counter_warnings(node, sub(p, "consumer"), h)
    q = sub(p, "store").get("quarantined")
    if isinstance(q, list) and q:
        yield Alert("warning", node, f"{len(q)} store segment(s) quarantined")
    for where, used in disk_usage(p):
        if used >= DISK_ERROR:
            yield Alert("error", node, f"disk {where} {used:.0%} full")
        elif used >= DISK_WARN:
            yield Alert("warning", node, f"disk {where} filling: {used:.0%} used")


def _counter_warnings(node: str, consumer: dict, h: History | None) -> Iterable[Alert]:
    """For a node whose state carries no warnings of its own: only failures this TUI
    saw happen (between its samples in the last ``RECENT`` seconds), never the
    counter since the node started; the node's last error is shown only when it
    is about replication."""
    fresh = h.replication_failures_within(RECENT) if h is not None else 0.0
    if fresh > 0:
        err = str(consumer.get("last_error") or "")
        text = f"replication failing: {int(fresh)} failure{'s' if fresh != 1 else ''} in the last {duration(RECENT)}"
        yield Alert("error", node, f"{text}: {err}" if err.startswith(("replicate", "no store")) else text)
    for w in consumer.get("warnings") or []:
        yield Alert("warning", node, str(w))


def disk_usage(p: dict) -> list[tuple[str, float]]:
    """(where, used fraction) for every disk figure the node reports, in any of the
    shapes ``{"disk": {...}}``, ``{"store": {"disk": {...}}}`` with ``free_bytes``
    and ``total_bytes`` (or ``used_ratio``)."""
    out = []
    for where, d in (("", sub(p, "disk")), ("ingest", sub(sub(p, "ingest"), "disk")),
                     ("store", sub(sub(p, "store"), "disk"))):
        if not d:
            continue
        if "used_ratio" in d:
            out.append((where, num(d, "used_ratio")))
            continue
        total, free = num(d, "total_bytes"), num(d, "free_bytes", default=-1)
        if total > 0 and free >= 0:
            out.append((where, 1 - free / total))
    return [(w.strip(), u) for w, u in out]


# -- units ------------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def duration(seconds: float | None) -> str:
    return format_duration(seconds, unknown="–")


def count(n: float) -> str:
    return f"{int(n):,}"


def rate(n: float) -> str:
    if n >= 100:
        return f"{n:,.0f}"
    return f"{n:.1f}"
