"""Prometheus metrics: ``GET /metrics`` in the text exposition format 0.0.4.

The node's figures already exist in one place, the dict ``Node.state()`` returns
for ``/cluster/state``; ``StateCollector`` turns that dict into metric families
at scrape time, so nothing else in the node has to know about Prometheus. Keys
that are missing (a store-only node has no ``pipeline.ingest``) just produce no
samples. The one figure that is not a running total is query latency: the
``oklog_query_duration_seconds`` histogram, which the store API observes (or
``observe_queries`` wraps its handlers to do so).

Names: everything starts with ``oklog_``; counters end in ``_total``; byte
figures in ``_bytes``; durations in ``_seconds``. What is exported (``state``
key → metric):

* ``pipeline.ingest``: ``oklog_ingest_segments{state}``,
  ``oklog_ingest_segment_bytes{state}``, ``oklog_ingest_oldest_flushed_age_seconds``,
  ``oklog_ingest_records_total``, ``oklog_ingest_bytes_total``,
  ``oklog_ingest_segments_flushed_total``, ``..._committed_total``,
  ``..._failed_total``, ``oklog_ingest_pending_timeouts_total``,
  ``oklog_ingest_open_connections``, ``oklog_ingest_connections_total``,
  ``oklog_ingest_records_split_total``; and, when present,
  ``pipeline.ingest.syslog`` (``oklog_syslog_*``) and ``pipeline.ingest.http``
  (``oklog_http_ingest_*``), ``pipeline.ingest.fluent`` (``oklog_fluent_*``).
* ``pipeline.store``: ``oklog_store_segments``, ``oklog_store_bytes``,
  ``oklog_store_segments_written_total``, ``oklog_store_bytes_written_total``,
  ``oklog_store_replications_received_total``, ``oklog_store_quarantined_segments``.
* ``pipeline.consumer``: ``oklog_consumer_batches_total``,
  ``oklog_consumer_segments_consumed_total``, ``oklog_consumer_bytes_consumed_total``,
  ``oklog_consumer_replications_total{result="ok|failed"}``,
  ``oklog_consumer_commits_failed_total``, ``oklog_consumer_replicated_bytes_total``
  and ``oklog_consumer_replicated_wire_bytes_total`` (records' bytes sent to other
  members, and what they took on the wire).
* ``members``: ``oklog_cluster_members{state}``; the node itself:
  ``oklog_node_info{id,role}``, ``oklog_uptime_seconds``, ``oklog_replication_factor``.
* ``pipeline.gossip``: ``oklog_gossip_datagrams_total{direction}``,
  ``oklog_gossip_malformed_datagrams_total``, ``oklog_gossip_bad_updates_total``
  (update rows refused at decode), ``oklog_gossip_refused_updates_total`` (rumours
  above the incarnation cap), ``oklog_gossip_refutations_total``,
  ``oklog_gossip_unauthenticated_total`` (datagrams the cluster key did not open).
* ``pipeline.errors``: ``oklog_component_errors_total{component}``, errors caught
  at a long-running component's boundary (consumer, coordinator, stream, gossip,
  state); ``oklog_state_error`` counts the sections of this scrape that could not
  be rendered (each is logged; the others are still exported).

And ``oklog_http_requests_total{route,code}``: every HTTP request by route
(the registered path or pattern; ``(unknown)`` for paths nothing serves) and
the status answered.

Plus the process collector's ``process_*`` figures (CPU, memory, open fds).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from oklog.net.http import Handler, Request, Response, Router, Start, Write
from oklog.node.state import (
    CompactionStats,
    ConsumerStats,
    ErrorCounts,
    GossipStats,
    IngestStats,
    NodeState,
    Pipeline,
    QueryStats,
    StoreStats,
    StreamStats,
)

log = logging.getLogger("oklog.node.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
MEMBER_STATES = ("alive", "suspect", "dead")

StateFn = Callable[[], NodeState]


# The plain figures of each state section: (field, kind, metric name, help).
_Row = tuple[str, str, str, str]
_STREAMS: tuple[_Row, ...] = (
    ("subscribers", "gauge", "oklog_streams", "Live tail subscribers on this node"),
)
_GOSSIP: tuple[_Row, ...] = (
    ("malformed", "counter", "oklog_gossip_malformed_datagrams", "Gossip datagrams refused at decode"),
    ("bad_updates", "counter", "oklog_gossip_bad_updates", "Gossip update rows refused at decode (types, ranges, meta)"),
    ("refused_updates", "counter", "oklog_gossip_refused_updates", "Second-hand gossip rumours above the incarnation cap"),
    ("refutations", "counter", "oklog_gossip_refutations", "Rumours about this node it refuted"),
    ("unauthenticated", "counter", "oklog_gossip_unauthenticated", "Gossip datagrams no key of the cluster key opened"),
)
_COMPACTION: tuple[_Row, ...] = (
    ("bytes_in", "counter", "oklog_compaction_bytes_in", "Bytes read by compaction"),
    ("bytes_out", "counter", "oklog_compaction_bytes_out", "Bytes written by compaction"),
    ("duplicates_dropped_bytes", "counter", "oklog_compaction_duplicate_bytes_dropped", "Duplicate record bytes dropped by compaction"),
    ("trashed", "counter", "oklog_retention_trashed_segments", "Segments moved to trash by retention or the disk cap"),
    ("purged", "counter", "oklog_retention_purged_segments", "Trashed segments deleted"),
    ("trash_segments", "gauge", "oklog_trash_segments", "Segments in trash"),
    ("trash_bytes", "gauge", "oklog_trash_bytes", "Bytes in trash"),
)
_QUERIES: tuple[_Row, ...] = (
    ("total", "counter", "oklog_queries", "Cluster queries answered by this node"),
    ("partial", "counter", "oklog_queries_partial", "Queries answered 206 (a member failed)"),
    ("read_repairs", "counter", "oklog_read_repairs", "Queries that scheduled read repair"),
    ("read_repair_records", "counter", "oklog_read_repair_records", "Record copies made by read repair"),
)
_INGEST: tuple[_Row, ...] = (
    ("oldest_flushed_age_seconds", "gauge", "oklog_ingest_oldest_flushed_age_seconds", "Age of the oldest segment waiting for the store tier"),
    ("records_in", "counter", "oklog_ingest_records", "Records written to ingest segments"),
    ("bytes_in", "counter", "oklog_ingest_bytes", "Bytes written to ingest segments"),
    ("flushes", "counter", "oklog_ingest_segments_flushed", "Ingest segments flushed"),
    ("commits", "counter", "oklog_ingest_segments_committed", "Ingest segments committed by the store tier"),
    ("failures", "counter", "oklog_ingest_segments_failed", "Ingest segments the store tier failed"),
    ("pending_timeouts", "counter", "oklog_ingest_pending_timeouts", "Pending ingest segments that timed out"),
    ("connections", "gauge", "oklog_ingest_open_connections", "Open producer connections"),
    ("connections_total", "counter", "oklog_ingest_connections", "Producer connections accepted"),
    ("records_split", "counter", "oklog_ingest_records_split", "Over-long records split"),
)
_SYSLOG: tuple[_Row, ...] = (
    ("malformed", "counter", "oklog_syslog_malformed", "Malformed syslog frames"),
    ("oversized", "counter", "oklog_syslog_oversized", "Syslog messages over the max record size, dropped"),
    ("connections", "gauge", "oklog_syslog_open_connections", "Open syslog TCP connections"),
    ("connections_total", "counter", "oklog_syslog_connections", "Syslog TCP connections accepted"),
    ("event_time", "counter", "oklog_syslog_event_time_records", "Syslog records stamped with their message's TIMESTAMP"),
    ("event_time_outside", "counter", "oklog_syslog_event_time_outside", "Syslog TIMESTAMPs outside the event-time window (arrival time taken)"),
    ("segments_cut", "counter", "oklog_syslog_segments_cut", "Syslog segments flushed early to keep ULID order"),
)
_HTTP_INGEST: tuple[_Row, ...] = (
    ("requests", "counter", "oklog_http_ingest_requests", "HTTP ingest requests"),
    ("records", "counter", "oklog_http_ingest_records", "Records taken by HTTP ingest"),
    ("bytes", "counter", "oklog_http_ingest_bytes", "Request body bytes taken by HTTP ingest"),
    ("invalid_json", "counter", "oklog_http_ingest_invalid_json", "NDJSON lines that were not JSON (kept verbatim)"),
    ("rejected", "counter", "oklog_http_ingest_rejected", "HTTP ingest requests refused"),
    ("records_split", "counter", "oklog_http_ingest_records_split", "Over-long HTTP ingest records split"),
)
_FLUENT: tuple[_Row, ...] = (
    ("messages", "counter", "oklog_fluent_messages", "Fluent forward messages received"),
    ("records", "counter", "oklog_fluent_records", "Records written from the Fluent forward port"),
    ("acks", "counter", "oklog_fluent_acks", "Fluent chunks acknowledged"),
    ("bad_messages", "counter", "oklog_fluent_bad_messages", "Fluent messages of the wrong shape, skipped"),
    ("bad_streams", "counter", "oklog_fluent_bad_streams", "Fluent connections closed for malformed or oversized input"),
    ("connections", "gauge", "oklog_fluent_open_connections", "Open Fluent forward connections"),
)
_STORE: tuple[_Row, ...] = (
    ("segments", "gauge", "oklog_store_segments", "Store segments"),
    ("bytes", "gauge", "oklog_store_bytes", "Bytes in store segments"),
    ("segments_written", "counter", "oklog_store_segments_written", "Store segments written"),
    ("bytes_written", "counter", "oklog_store_bytes_written", "Bytes written to store segments"),
    ("replications_received", "counter", "oklog_store_replications_received", "Replicated segments received"),
    ("record_conflicts", "counter", "oklog_store_record_conflicts", "Records received under a stored ULID with other text (stored text kept)"),
    ("duplicates_dropped", "counter", "oklog_store_duplicates_dropped", "Records received that the store already held"),
    ("expired_dropped", "counter", "oklog_store_expired_dropped", "Replicated records older than retention, dropped"),
    ("refused_future", "counter", "oklog_store_refused_future", "Replicated bodies refused for ULIDs ahead of the clock"),
)
_CONSUMER: tuple[_Row, ...] = (
    ("batches", "counter", "oklog_consumer_batches", "Batches gathered by the store consumer"),
    ("segments_consumed", "counter", "oklog_consumer_segments_consumed", "Ingest segments consumed"),
    ("bytes_consumed", "counter", "oklog_consumer_bytes_consumed", "Ingest bytes consumed"),
    ("commits_failed", "counter", "oklog_consumer_commits_failed", "Commits to ingest nodes that failed"),
    ("replicated_bytes", "counter", "oklog_consumer_replicated_bytes",
     "Records' bytes replicated to other members' stores"),
    ("replicated_wire_bytes", "counter", "oklog_consumer_replicated_wire_bytes",
     "Bytes those replications took on the wire"),
)


def _num(v: object) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    return None


class _Families:
    """Collects families for one scrape, skipping figures that are absent."""

    def __init__(self) -> None:
        self.out: list[Metric] = []

    def gauge(self, name: str, doc: str, value: object) -> None:
        v = _num(value)
        if v is not None:
            self.out.append(GaugeMetricFamily(name, doc, value=v))

    def counter(self, name: str, doc: str, value: object) -> None:
        v = _num(value)
        if v is not None:
            self.out.append(CounterMetricFamily(name, doc, value=v))

    def rows(self, section: object, rows: tuple[_Row, ...]) -> None:
        """The plain figures of one state section (none when it is absent)."""
        if not isinstance(section, dict):
            return
        for key, kind, name, doc in rows:
            (self.gauge if kind == "gauge" else self.counter)(name, doc, section.get(key))

    def labelled(self, kind: str, name: str, doc: str, label: str, values: Mapping[str, object]) -> None:
        cls = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
        fam = cls(name, doc, labels=[label])
        any_ = False
        for key, value in values.items():
            v = _num(value)
            if v is not None:
                fam.add_metric([str(key)], v)
                any_ = True
        if any_:
            self.out.append(fam)


class StateCollector(Collector):
    """Reads ``state()`` (the ``/cluster/state`` dict) at each scrape."""

    def __init__(self, state: StateFn) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        f = _Families()
        doc = "Sections of the node state that could not be rendered in this scrape"
        try:
            st = self.state()
        except Exception:
            log.exception("reading node state for /metrics failed")
            f.gauge("oklog_state_error", doc, 1)
            return iter(f.out)
        pipe = st.get("pipeline") if isinstance(st, dict) else None
        p: Pipeline | None = pipe if isinstance(pipe, dict) else None
        sections: list[Callable[[], None]] = [
            lambda: self._node(f, st),
            lambda: self._ingest(f, p.get("ingest") if p else None),
            lambda: self._store(f, p.get("store") if p else None),
            lambda: self._consumer(f, p.get("consumer") if p else None),
            lambda: self._maintenance(f, p.get("compaction") if p else None, p.get("queries") if p else None),
            lambda: self._gossip(f, p.get("gossip") if p else None, p.get("errors") if p else None),
            lambda: self._streams(f, p.get("streams") if p else None),
        ]
        failed = 0
        for section in sections:
            kept = len(f.out)
            try:
                section()
            except Exception:
                del f.out[kept:]  # no half-rendered section
                failed += 1
                log.exception("rendering a /metrics section failed; the others are exported")
        f.gauge("oklog_state_error", doc, failed)
        return iter(f.out)

    def _streams(self, f: _Families, streams: StreamStats | None) -> None:
        f.rows(streams, _STREAMS)

    def _gossip(self, f: _Families, gos: GossipStats | None, errors: ErrorCounts | None) -> None:
        if isinstance(gos, dict):
            f.labelled("counter", "oklog_gossip_datagrams", "Gossip datagrams", "direction",
                       {"in": gos.get("datagrams_in"), "out": gos.get("datagrams_out")})
        f.rows(gos, _GOSSIP)
        if isinstance(errors, dict):
            f.labelled("counter", "oklog_component_errors",
                       "Unexpected errors caught at a component's boundary (logged; the component carried on)",
                       "component", errors)

    def _maintenance(self, f: _Families, comp: CompactionStats | None, queries: QueryStats | None) -> None:
        if isinstance(comp, dict):
            f.labelled("counter", "oklog_compaction_jobs", "Compaction jobs by kind", "kind",
                       {"merge": comp.get("merges"), "concat": comp.get("concats"), "split": comp.get("splits")})
        f.rows(comp, _COMPACTION)
        f.rows(queries, _QUERIES)

    def _node(self, f: _Families, st: NodeState) -> None:
        members = st.get("members") if isinstance(st, dict) else None
        if isinstance(members, list):
            counts = dict.fromkeys(MEMBER_STATES, 0)
            for m in members:
                s = m.get("state") if isinstance(m, dict) else None
                if isinstance(s, str):
                    counts[s] = counts.get(s, 0) + 1
            f.labelled("gauge", "oklog_cluster_members", "Cluster members by state, as this node sees them", "state", counts)
            me = next((m for m in members if isinstance(m, dict) and m.get("id") == st.get("self")), None)
            if me is not None:
                info = GaugeMetricFamily("oklog_node_info", "This node's id and role", labels=["id", "role"])
                info.add_metric([str(me.get("id", "")), str(me.get("role", ""))], 1)
                f.out.append(info)
                f.gauge("oklog_uptime_seconds", "Seconds since the node started", me.get("uptime_seconds"))
        f.gauge("oklog_replication_factor", "Copies kept of each record", st.get("replication_factor"))

    def _ingest(self, f: _Families, ing: IngestStats | None) -> None:
        if not isinstance(ing, dict):
            return
        segs, sizes = ing.get("segments"), ing.get("bytes")
        if isinstance(segs, dict):
            f.labelled("gauge", "oklog_ingest_segments", "Ingest segments by state", "state", segs)
        if isinstance(sizes, dict):
            f.labelled("gauge", "oklog_ingest_segment_bytes", "Bytes in ingest segments by state", "state", sizes)
        f.rows(ing, _INGEST)
        sl = ing.get("syslog")
        if isinstance(sl, dict):
            f.labelled("counter", "oklog_syslog_messages", "Syslog messages received", "transport",
                       {"tcp": sl.get("messages_tcp"), "udp": sl.get("messages_udp")})
        f.rows(sl, _SYSLOG)
        f.rows(ing.get("http"), _HTTP_INGEST)
        f.rows(ing.get("fluent"), _FLUENT)

    def _store(self, f: _Families, sto: StoreStats | None) -> None:
        if not isinstance(sto, dict):
            return
        f.rows(sto, _STORE)
        q = sto.get("quarantined")
        if isinstance(q, list | tuple):
            f.gauge("oklog_store_quarantined_segments", "Store segments set aside as unreadable", len(q))

    def _consumer(self, f: _Families, con: ConsumerStats | None) -> None:
        if not isinstance(con, dict):
            return
        f.rows(con, _CONSUMER)
        f.labelled("counter", "oklog_consumer_replications", "Replications of gathered batches", "result",
                   {"ok": con.get("replications_ok"), "failed": con.get("replications_failed")})


class Metrics:
    """A node's metrics: its own registry (no global state), state and latency."""

    def __init__(self, state: StateFn, *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(StateCollector(state))
        if process:
            ProcessCollector(registry=self.registry)
        self.query_duration = Histogram(
            "oklog_query_duration_seconds",
            "Time to answer a query, from request to the last byte of the result",
            buckets=QUERY_BUCKETS,
            registry=self.registry,
        )

        self.http_requests = Counter(
            "oklog_http_requests",
            "HTTP requests by route (the path, its pattern, or (unknown)) and status answered",
            ["route", "code"],
            registry=self.registry,
        )

    def observe_query(self, seconds: float) -> None:
        self.query_duration.observe(seconds)

    def count_request(self, route: str, status: int) -> None:
        """``Router.on_response``: routes are a fixed set, so labels stay bounded."""
        self.http_requests.labels(route, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_router(metrics: Metrics) -> Router:
    """``GET /metrics`` (and HEAD) in the Prometheus text format."""

    async def handle(req: Request) -> Response:
        return Response(200, metrics.render(), content_type=CONTENT_TYPE)

    r = Router()
    r.add("GET", "/metrics", handle)
    return r


def observe_queries(router: Router, metrics: Metrics, paths: tuple[str, ...] = ("/store/query",)) -> None:
    """Wrap ``paths``' handlers in ``router`` so each one's duration (until the
    last byte of a streamed body) goes to ``oklog_query_duration_seconds``."""
    for path in paths:
        methods = router._routes.get(path, {})
        for method, handler in list(methods.items()):
            methods[method] = _timed(handler, metrics)


def _timed(handler: Handler, metrics: Metrics) -> Handler:
    return _TimedQuery(handler, metrics)


class _TimedQuery:
    """A query handler whose duration, until the last byte of its answer (deferred
    or streamed), goes to ``oklog_query_duration_seconds``."""

    def __init__(self, handler: Handler, metrics: Metrics) -> None:
        self.handler = handler
        self.metrics = metrics

    async def __call__(self, req: Request) -> Response:
        started = time.monotonic()
        try:
            resp = await self.handler(req)
        except Exception:
            self.metrics.observe_query(time.monotonic() - started)
            raise
        if resp.respond is not None:
            resp.respond = functools.partial(self._respond, resp.respond, started)
        elif resp.stream is not None:
            resp.stream = functools.partial(self._stream, resp.stream, started)
        else:
            self.metrics.observe_query(time.monotonic() - started)
        return resp

    async def _respond(
        self, inner: Callable[[Start, Write], Awaitable[None]], started: float, start: Start, write: Write
    ) -> None:
        try:
            await inner(start, write)
        finally:
            self.metrics.observe_query(time.monotonic() - started)

    async def _stream(self, inner: Callable[[Write], Awaitable[None]], started: float, write: Write) -> None:
        try:
            await inner(write)
        finally:
            self.metrics.observe_query(time.monotonic() - started)
