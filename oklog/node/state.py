"""The node-state document: what ``GET /cluster/state`` answers, typed.

This module is its one definition. The node builds it (``oklog.node.root``),
``/metrics`` renders it (``oklog.node.metrics``), the TUI and ``oklog repair``
read it; each component's own stats return their section's type. Every
section is a ``TypedDict`` (the JSON as sent), so mypy checks writers and
readers against the same names. ``total=False`` marks sections and fields a
node sends only for some roles or versions: readers must treat them as
optional. ``python -m oklog.node.state`` prints the schema as Markdown
(docs/state.md is that output; a test keeps them equal).
"""

import sys
import typing
from typing import Any, Literal, NotRequired, TypedDict

# -- members (from gossip) ----------------------------------------------------


class MemberMeta(TypedDict, total=False):
    """What a member advertises in gossip (validated by ``oklog.cluster.codec``)."""

    api_addr: str | None  # HTTP API, host:port
    fast_addr: str | None  # fast ingest port
    durable_addr: str | None  # durable ingest port
    bulk_addr: str | None  # bulk ingest port
    node_addr: str | None  # members-only TLS listener (with a cluster key)
    started: float  # process start, Unix seconds
    connections: int  # open ingest connections
    records_in: int  # records ingested since start
    store_bytes: int  # store bytes on disk
    store_segments: int  # store segments
    store_lo_ms: int  # the millisecond of its oldest record (absent: holds nothing); queries skip it before
    replicate_segfile: int  # /store/replicate takes segment files of this index version (absent: plain records only)


class MemberRow(TypedDict):
    """One member as this node sees it."""

    id: str  # its gossip address, host:port
    role: str  # ingest, store or ingeststore
    gossip_addr: str
    api_addr: str | None
    state: str  # alive, suspect, dead or left
    incarnation: int
    meta_version: int
    last_heard: float | None  # Unix seconds
    state_since: float | None  # Unix seconds: when it entered its state
    self: bool  # this node
    uptime_seconds: float | None
    meta: MemberMeta
    error: NotRequired[str]  # set when the row could not be rendered ("unreadable")


# -- this node's pipeline --------------------------------------------------------


class FailureCounts(TypedDict):
    replicate: int
    gather: int
    commit: int


class Recent(TypedDict):
    """Outcomes of the last minute and five minutes."""

    window_seconds: float
    failures: FailureCounts
    failures_5m: FailureCounts
    ingest_idle_seconds: float | None  # since the last record arrived; None: never


class HealthWarning(TypedDict):
    """A current problem, naming its cause."""

    level: str  # warn or error
    kind: str
    subject: str
    text: str


class ByIngestState(TypedDict):
    active: int
    flushed: int
    pending: int


class Gate(TypedDict):
    """The connection gate shared by every ingest listener."""

    open: int
    max_connections: int  # 0: no limit beyond the descriptor budget
    fd_budget: int
    refused: int
    refused_fds: int
    buffered_bytes: int
    shed: int
    nofile: int  # the process's descriptor limit


class SyslogStats(TypedDict):
    connections: int
    connections_total: int
    messages_tcp: int
    messages_udp: int
    malformed: int
    oversized: int
    idle_closed: int
    event_time: int  # records stamped with the message's own TIMESTAMP
    event_time_outside: int  # TIMESTAMPs outside the event-time window: arrival time
    segments_cut: int  # segments flushed early to keep a batch of earlier times sorted


class BulkStats(TypedDict):
    frames: int
    records: int
    bytes: int
    acked: int
    errors: int
    idle_closed: int
    refused_ulids: int


class HTTPIngestStats(TypedDict):
    requests: int
    records: int
    bytes: int
    invalid_json: int
    records_split: int
    rejected: int
    segments: int


class FluentStats(TypedDict):
    connections: int
    connections_total: int
    messages: int
    records: int
    acks: int
    bad_messages: int
    bad_streams: int
    write_errors: int


class IngestLogStats(TypedDict):
    """``IngestLog.stats()``: the ingest segments."""

    segments: ByIngestState
    bytes: ByIngestState
    oldest_flushed_age_seconds: float
    records_in: int
    bytes_in: int
    flushes: int
    commits: int
    failures: int
    pending_timeouts: int


class IngestStats(IngestLogStats):
    """Ingest segments plus every ingest path's listener figures."""

    connections: int
    connections_total: int
    records_split: int
    connections_refused: int
    write_errors: int
    bad_topic_lines: int
    idle_closed: int
    gate: Gate
    syslog: SyslogStats
    bulk: BulkStats
    http: HTTPIngestStats
    fluent: FluentStats


class StoreLogStats(TypedDict):
    """``StoreLog.stats()``: the store segments."""

    segments: int
    bytes: int  # on disk
    records_bytes: int  # uncompressed
    oldest: str | None  # first ULID held
    newest: str | None  # last ULID held
    segments_written: int
    bytes_written: int
    replications_received: int
    quarantined: list[str]
    unvalidated: int  # segments not yet scrubbed since start
    salvaged_records: int
    dropped_records: int
    time: float


class ImmutableStats(TypedDict):
    """``Immutable.as_dict()``: writes that would have replaced a record."""

    record_conflicts: int
    duplicates_dropped: int
    expired_dropped: int
    refused_future: int


class StoreStats(StoreLogStats, ImmutableStats):
    pass


class ConsumerStats(TypedDict):
    state: str  # idle, gathering, replicating, committing
    batches: int
    segments_consumed: int
    bytes_consumed: int
    replications_ok: int
    replications_failed: int
    commits_failed: int
    cycle_errors: int
    last_error: str
    last_batch_time: float
    factor_effective: int
    replicated_bytes: int  # records' bytes acknowledged by other members' stores
    replicated_wire_bytes: int  # the bytes those bodies took on the wire (compressed where the member takes it)
    warnings: list[str]


class CompactionStats(TypedDict):
    runs: int
    merges: int
    concats: int
    splits: int
    recompressions: int
    segments_in: int
    segments_out: int
    bytes_in: int
    bytes_out: int
    duplicates_dropped_bytes: int
    trashed: int
    purged: int
    trash_segments: int
    trash_bytes: int
    last_error: str
    errors: list[str]


class Missing(TypedDict):
    """Store members a query would miss now."""

    members: list[str]
    complete: bool


class QueryStats(TypedDict):
    total: int
    partial: int
    running: int
    rejected: int
    missing: Missing
    read_repairs: int
    read_repair_records: int
    members_skipped: int  # store members not asked: nothing in the query's range


class GossipStats(TypedDict):
    datagrams_in: int
    datagrams_out: int
    malformed: int
    send_errors: int
    recv_errors: int
    send_dropped: int
    bad_updates: int
    refused_updates: int
    refutations: int
    errors: int
    unauthenticated: int
    last_error: str


class StreamStats(TypedDict):
    subscribers: int
    clients: int
    max_subscribers: int
    dropped: int
    refused: int


class ErrorCounts(TypedDict):
    """Failures caught at a component's boundary (logged, counted, carried on)."""

    consumer: int
    coordinator: int
    stream: int
    gossip: int
    state: int


class APIConnections(TypedDict):
    open: int
    cap: int
    evicted: int
    refused: int


class HTTPStats(TypedDict):
    bodies_in_flight_bytes: int
    bodies_budget_bytes: int
    bodies_refused: int
    connections: APIConnections
    node_port_requests: int  # member calls received on the members' TLS port
    api_member_calls: int  # member proofs received on the public API (tools)


class Pipeline(TypedDict):
    """This node's own figures; sections of roles it doesn't run are absent."""

    time: float
    recent: Recent
    warnings: list[HealthWarning]
    ingest: NotRequired[IngestStats]
    store: NotRequired[StoreStats]
    consumer: NotRequired[ConsumerStats]
    compaction: NotRequired[CompactionStats]
    queries: NotRequired[QueryStats]
    gossip: NotRequired[GossipStats]
    streams: StreamStats
    errors: ErrorCounts
    http: HTTPStats




class NodeState(TypedDict):
    """The whole document."""

    self: str  # this node's id
    role: str
    uptime_seconds: float
    members: list[MemberRow]
    pipeline: Pipeline
    replication_factor: int


# -- the schema as Markdown -------------------------------------------------------


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin is NotRequired:
        return _type_name(typing.get_args(t)[0])
    if origin is Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(t))
    if origin in (list,):
        return f"list of {_type_name(typing.get_args(t)[0])}"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in typing.get_args(t))
    if t is type(None):
        return "null"
    if isinstance(t, type) and typing.is_typeddict(t):
        return f"[{t.__name__}](#{t.__name__.lower()})"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(t, str(t))


def _sections(root: type) -> list[type]:
    """``root`` and every TypedDict it reaches, depth first, each once."""
    out: list[type] = []

    def visit(t: Any) -> None:
        if isinstance(t, type) and typing.is_typeddict(t):
            if t in out:
                return
            out.append(t)
            for ft in typing.get_type_hints(t).values():
                visit(ft)
        for a in typing.get_args(t):
            visit(a)

    visit(root)
    return out


def _comments(td: type) -> dict[str, str]:
    """Field comments from the source (``name: type  # comment``)."""
    import inspect

    out: dict[str, str] = {}
    try:
        src = inspect.getsource(td)
    except (OSError, TypeError):
        return out
    for line in src.splitlines():
        name, sep, rest = line.strip().partition(":")
        if sep and "#" in rest and name.isidentifier():
            out[name] = rest.split("#", 1)[1].strip()
    return out


def schema_markdown() -> str:
    lines = [
        "# The node-state document (`GET /cluster/state`)",
        "",
        "Generated from `oklog/node/state.py` by `python -m oklog.node.state`; do not edit.",
        "Optional fields (sent only for some roles) are marked *optional*.",
    ]
    for td in _sections(NodeState):
        hints = typing.get_type_hints(td, include_extras=True)
        notes = {}
        for klass in reversed(td.__mro__):
            if typing.is_typeddict(klass) or klass is td:
                notes.update(_comments(klass))
        lines += ["", f"## {td.__name__}", ""]
        doc = (td.__doc__ or "").strip()
        if doc and not doc.startswith(td.__name__ + "("):
            lines += [" ".join(doc.split()), ""]
        lines += ["| field | type | |", "| --- | --- | --- |"]
        optional = td.__optional_keys__  # type: ignore[attr-defined]  # TypedDict classes have it; `type` does not
        for name, t in hints.items():
            note = notes.get(name, "")
            if name in optional:
                note = ("*optional*; " + note).rstrip("; ")
            lines.append(f"| `{name}` | {_type_name(t)} | {note} |")
    return "\n".join(lines) + "\n"


def unknown_keys(doc: Any, td: type = NodeState, path: str = "") -> list[str]:
    """Keys of ``doc`` the definition does not name, and required keys it lacks
    (``path: reason`` each), recursively; empty when ``doc`` fits the definition."""
    if not isinstance(doc, dict):
        return [f"{path or '.'}: not an object"]
    hints = typing.get_type_hints(td)
    out = [f"{path}.{k}: not in {td.__name__}" for k in doc if k not in hints]
    required = td.__required_keys__  # type: ignore[attr-defined]  # TypedDict classes have it; `type` does not
    out += [f"{path}.{k}: missing from the document" for k in required if k not in doc]
    for k, t in hints.items():
        if k in doc:
            out += _check_value(doc[k], t, f"{path}.{k}")
    return out


def _check_value(v: Any, t: Any, path: str) -> list[str]:
    if isinstance(t, type) and typing.is_typeddict(t):
        return unknown_keys(v, t, path)
    if typing.get_origin(t) is list and isinstance(v, list):
        (item,) = typing.get_args(t)
        return [e for i, x in enumerate(v) for e in _check_value(x, item, f"{path}[{i}]")]
    for a in typing.get_args(t):  # X | None
        if isinstance(a, type) and typing.is_typeddict(a) and isinstance(v, dict):
            return unknown_keys(v, a, path)
    return []


if __name__ == "__main__":
    sys.stdout.write(schema_markdown())
