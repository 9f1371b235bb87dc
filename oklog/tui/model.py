"""What the TUI shows, computed from ``GET /cluster/state`` documents. Pure.

The document's one definition is ``oklog.node.state`` (``NodeState``), and the
TUI reads it through those types. ``node_state`` is the light validation the
client applies to the decoded JSON: every section that is present has the
container type the definition gives it (an object, a list), so reads can rely
on it. A node of another version may send less: sections the definition marks
optional, and anything missing, read as "unknown" (``.get``), never a crash;
a figure that is not a number reads as 0 (``figure``). Pipeline figures come
from the top-level ``pipeline`` (the attached node's own) or ``with_pipelines``
(what the app fetched from the other members' own ``/cluster/state``).

Rates are not in the document: ``History`` keeps successive samples per node and
derives records/s and bytes/s from the deltas of ``records_in``/``bytes_in``.
"""

from __future__ import annotations

import types
import typing
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, cast

from oklog.human import format_duration
from oklog.node.state import ConsumerStats, HealthWarning, MemberRow, NodeState, Pipeline

HISTORY_SECONDS = 300.0  # sparklines cover the last five minutes
LAG_WARN = 10.0  # oldest flushed segment older than this (seconds) and growing: warn
LAG_ERROR = 60.0  # older than this: error, growing or not
RECENT = 60.0  # a node without warnings of its own: failures seen in this window warn

STATES = ("alive", "suspect", "dead", "left")
INGEST_ROLES = ("ingest", "ingeststore")
STORE_ROLES = ("store", "ingeststore")


# -- the document, validated --------------------------------------------------------------


def node_state(doc: object) -> NodeState:
    """The decoded JSON of a ``/cluster/state`` answer, as a ``NodeState``:
    ``ValueError`` if it is not an object; a present section of the wrong shape
    (a row that is not an object, a list that is not a list) is dropped, so a
    reader sees it as absent."""
    if not isinstance(doc, dict):
        raise ValueError("the cluster state is not a JSON object")
    return cast(NodeState, _conform(doc, NodeState))


def _conform(doc: dict[str, Any], td: type) -> dict[str, Any]:
    """``doc`` with each key ``td`` names kept only if its value has the right
    container shape (recursively); keys ``td`` does not name are kept as sent."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(td)
    for k, v in doc.items():
        t = hints.get(k)
        if t is None:
            out[k] = v
            continue
        ok, value = _shaped(v, t)
        if ok:
            out[k] = value
    return out


def _shaped(v: object, t: Any) -> tuple[bool, object]:
    """(fits, value conformed) for one value of declared type ``t``."""
    if typing.is_typeddict(t):
        return (True, _conform(v, t)) if isinstance(v, dict) else (False, None)
    origin = typing.get_origin(t)
    if origin is list:
        if not isinstance(v, list):
            return False, None
        (item,) = typing.get_args(t)
        kept = [x for ok, x in (_shaped(e, item) for e in v) if ok]
        return True, kept
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(t):
            ok, value = _shaped(v, a)
            if ok:
                return True, value
        return False, None
    if t is type(None):
        return v is None, v
    if t in (int, float):  # figures: read through ``figure``, which guards them
        return True, v
    if t is str:
        return isinstance(v, str), v
    if t is bool:
        return isinstance(v, bool), v
    return True, v


def figure(v: object, default: float = 0.0) -> float:
    """A figure as a float, or ``default`` when it is absent or not a number."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return default
    return float(v)


def _opt_num(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


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
    started: float | None = None  # process start (from its gossip meta), Unix seconds

    @property
    def ingests(self) -> bool:
        return self.role in INGEST_ROLES

    @property
    def down(self) -> bool:
        return self.state in ("dead", "left")

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
    pipelines: dict[str, Pipeline]  # member id → pipeline figures
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


def parse_state(doc: NodeState) -> ClusterState:
    """A ``/cluster/state`` document (validated by ``node_state``) → ClusterState.

    The top level names this node (``self``) and carries its own ``pipeline``;
    without ``self``, the member row marked ``self`` is this node.
    """
    self_id = doc.get("self") or ""
    members = []
    for i, m in enumerate(doc.get("members") or []):
        mid = m.get("id") or m.get("gossip_addr") or f"member-{i}"
        if not self_id and m.get("self") is True:
            self_id = mid
        members.append(member_of(m, mid, self_id))
    pipelines: dict[str, Pipeline] = {}
    pipeline = doc.get("pipeline")
    if pipeline is not None and self_id:
        pipelines[self_id] = pipeline
    members.sort(key=lambda m: (not m.is_self, m.id))
    rf = doc.get("replication_factor")
    return ClusterState(
        self_id=self_id,
        members=tuple(members),
        pipelines=pipelines,
        replication_factor=rf if isinstance(rf, int) and not isinstance(rf, bool) else None,
        time=_opt_num(pipeline.get("time")) if pipeline is not None else None,
    )


def member_of(m: MemberRow, mid: str, self_id: str) -> Member:
    meta = m.get("meta") or {}
    inc = m.get("incarnation")
    return Member(
        id=mid,
        role=m.get("role") or "?",
        api_addr=m.get("api_addr") or meta.get("api_addr") or "",
        gossip_addr=m.get("gossip_addr") or "",
        state=(m.get("state") or "alive").lower(),
        incarnation=inc if isinstance(inc, int) and not isinstance(inc, bool) else None,
        last_heard=_opt_num(m.get("last_heard")),
        uptime=_opt_num(m.get("uptime_seconds")),
        is_self=m.get("self") is True or mid == self_id,
        started=_opt_num(meta.get("started")),
    )


def peers_to_fetch(state: ClusterState) -> list[Member]:
    """Members whose pipeline the state lacks and who may answer a direct
    ``GET /cluster/state``: not this node, alive or suspect, with an API address."""
    return [m for m in state.members
            if not m.is_self and m.api_addr and m.state in ("alive", "suspect")
            and m.id not in state.pipelines]


def with_pipelines(state: ClusterState, extra: dict[str, Pipeline]) -> ClusterState:
    """The state plus pipelines fetched from other members (never overriding one
    the state already carries)."""
    if not extra:
        return state
    merged = {k: v for k, v in extra.items() if isinstance(v, dict)} | state.pipelines
    return replace(state, pipelines=merged)


# -- history and rates ------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    time: float
    records_in: float
    bytes_in: float
    lag: float
    replications_failed: float
    replications_ok: float


def sample_of(pipeline: Pipeline, fallback_time: float) -> Sample:
    ing, con = pipeline.get("ingest"), pipeline.get("consumer")
    return Sample(
        time=figure(pipeline.get("time"), default=fallback_time),
        records_in=figure(ing.get("records_in")) if ing is not None else 0.0,
        bytes_in=figure(ing.get("bytes_in")) if ing is not None else 0.0,
        lag=figure(ing.get("oldest_flushed_age_seconds")) if ing is not None else 0.0,
        replications_failed=figure(con.get("replications_failed")) if con is not None else 0.0,
        replications_ok=figure(con.get("replications_ok")) if con is not None else 0.0,
    )


class History:
    """Successive pipeline samples of one node, the last ``HISTORY_SECONDS``."""

    def __init__(self, seconds: float = HISTORY_SECONDS) -> None:
        self.seconds = seconds
        self.samples: deque[Sample] = deque()

    def add(self, pipeline: Pipeline, fallback_time: float) -> None:
        s = sample_of(pipeline, fallback_time)
        if self.samples and s.time <= self.samples[-1].time:
            self.samples[-1] = s  # same or older sample (clock step): replace
        else:
            self.samples.append(s)
        while self.samples and self.samples[0].time < s.time - self.seconds:
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


def pipeline_warnings(node: str, p: Pipeline, h: History | None, rf: int | None) -> Iterable[Alert]:
    ing = p.get("ingest")
    lag = figure(ing.get("oldest_flushed_age_seconds")) if ing is not None else 0.0
    if lag >= LAG_ERROR:
        yield Alert("error", node, f"consumer lag {duration(lag)}: oldest flushed segment not consumed")
    elif lag >= LAG_WARN and h is not None and h.lag_growing():
        yield Alert("warning", node, f"consumer lag growing: oldest flushed segment {duration(lag)} old")
    node_warnings = p.get("warnings")
    if node_warnings is not None:  # the node's own, each from a window of recent events
        yield from (alert_of(node, w) for w in node_warnings if w.get("text"))
    else:
        yield from _counter_warnings(node, p.get("consumer"), h)
    store = p.get("store")
    quarantined = store.get("quarantined") if store is not None else None
    if quarantined:
        yield Alert("warning", node, f"{len(quarantined)} store segment(s) quarantined")


def alert_of(node: str, w: HealthWarning) -> Alert:
    """A node's warning as an alert: its ``error`` level stays an error, anything
    else (``warn``) is a warning."""
    return Alert("error" if w.get("level") == "error" else "warning", node, str(w.get("text")))


def _counter_warnings(node: str, consumer: ConsumerStats | None, h: History | None) -> Iterable[Alert]:
    """For a node whose state carries no warnings of its own: only failures this TUI
    saw happen (between its samples in the last ``RECENT`` seconds), never the
    counter since the node started; the node's last error is shown only when it
    is about replication."""
    fresh = h.replication_failures_within(RECENT) if h is not None else 0.0
    if fresh > 0:
        err = str(consumer.get("last_error") or "") if consumer is not None else ""
        text = f"replication failing: {int(fresh)} failure{'s' if fresh != 1 else ''} in the last {duration(RECENT)}"
        yield Alert("error", node, f"{text}: {err}" if err.startswith(("replicate", "no store")) else text)
    for w in (consumer.get("warnings") or []) if consumer is not None else []:
        yield Alert("warning", node, str(w))


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
