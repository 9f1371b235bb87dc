"""Composition root: one node, one nursery.

                 producers
                     │ TCP (fast / durable)
                     ▼
    ┌──────────── ingest listeners ─────────────┐
    │   per-connection active segments          │
    │        IngestLog (.active/.flushed/.pending)│◀── /ingest/* (remote consumers)
    └───────────────────┬───────────────────────┘
                        │ LocalIngest / remote /ingest/next|read|commit|failed
                        ▼
                  store Consumer  gather → merge → replicate → commit
                        │ LocalStore / remote POST /store/replicate
                        ▼
                     StoreLog (FIRST-LAST.seg) ◀── /store/query, /store/_query
                        │
                    HTTP API (hypercorn on trio): /ingest /store /cluster /metrics
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from dataclasses import dataclass, field

import httpx
import trio

from oklog.cluster.keyring import Keyring
from oklog.cluster.nodetls import NodeTLS
from oklog.cluster.transport import Gossip, guess_host
from oklog.cluster.view import member_row
from oklog.fs import FS, RealFS
from oklog.ingest.api import LocalIngest, ingest_router
from oklog.ingest.bulk import BulkStats, serve_bulk
from oklog.ingest.eventtime import EventWindow
from oklog.ingest.fluent import FluentStats, serve_fluent
from oklog.ingest.httpingest import HTTPIngestStats, httpingest_router
from oklog.ingest.listener import (
    ConnectionGate,
    IngestSettings,
    ListenerStats,
    api_connection_budget,
    ingest_connection_budget,
    raise_nofile,
    serve_ingest,
)
from oklog.ingest.log import IngestLog
from oklog.ingest.remote import RemoteIngest
from oklog.ingest.syslog import SyslogStats, serve_syslog, serve_syslog_tls
from oklog.net.auth import (
    NODE_HEADER,
    Auth,
    ClientAuth,
    NodeKeys,
    Tokens,
    ingest_gate,
    register_metrics,
)
from oklog.net.http import APIConnections, BodyBudget, Request, Response, Router, serve_http
from oklog.net.tls import TLSConfig, client_context
from oklog.node.config import NodeConfig
from oklog.node.health import Health
from oklog.node.metrics import Metrics, metrics_router, observe_queries
from oklog.query.coordinator import Coordinator, StoreMember, observe_gossip
from oklog.records.record import ulid_ms
from oklog.store.api import Immutable, LocalStore, store_router
from oklog.store.compact import Maintenance
from oklog.store.consumer import Consumer
from oklog.store.log import StoreLog
from oklog.store.remote import RemoteStore
from oklog.stream.server import Tap, cluster_stream_handler, ingest_stream_handler

log = logging.getLogger("oklog.node.root")

PENDING_SWEEP = 1.0
META_INTERVAL = 5.0  # seconds between load-figure updates in gossip
META_LOWERED_CHECK = 0.25  # seconds: a store written older records than it advertised says so this soon


@dataclass
class Bound:
    """Where the node's services actually listen (ports may have been 0)."""

    api: tuple[str, int] | None = None
    fast: tuple[str, int] | None = None
    durable: tuple[str, int] | None = None
    cluster: tuple[str, int] | None = None
    extra: dict = field(default_factory=dict)


class Node:
    def __init__(self, cfg: NodeConfig, fs: FS | None = None) -> None:
        self.cfg = cfg
        self.fs = fs or RealFS()
        self.started = time.time()
        self.health = Health()  # recent failures and ingest stalls: the state's warnings
        self.advertise_host = cfg.advertise_host or (
            cfg.cluster.host if cfg.cluster.host not in ("", "0.0.0.0") else guess_host()
        )
        # Stable across restarts, unique per host and port: a restarted node
        # rejoins as itself (with a higher incarnation).
        self.id = cfg.node_id or f"{self.advertise_host}:{cfg.cluster.port}"
        self.gossip: Gossip | None = None
        self.http_client: httpx.AsyncClient | None = None
        self._peer_options: dict | None = None
        self.coordinator: Coordinator | None = None
        self.bound = Bound()
        self.scan_limiter = trio.CapacityLimiter(max(1, os.cpu_count() or 1))
        self.ingest_log: IngestLog | None = None
        self.store_log: StoreLog | None = None
        self.listener_stats = ListenerStats()
        self.http_ingest_stats = HTTPIngestStats()
        self.syslog_stats = SyslogStats()
        self.bulk_stats = BulkStats()
        self.fluent_stats = FluentStats()
        self.metrics = Metrics(self.state)
        self.keyring = Keyring.load(cfg.cluster_key) if cfg.cluster_key else None
        self.tls = TLSConfig(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca, cfg.tls_ca)
        self.auth = Auth(
            NodeKeys(self.keyring) if self.keyring is not None else None,
            Tokens(cfg.auth_tokens) if cfg.auth_tokens else None,
            cfg.insecure,
        )
        register_metrics(self.auth, self.metrics.registry)
        # With a cluster key, members call each other only over TLS made from it,
        # on a listener of their own (docs/decisions.md, "Node-to-node TLS").
        self.node_tls = NodeTLS(self.keyring, self.id) if self.keyring is not None else None
        self.node_port_requests = 0
        self.api_member_calls = 0
        self.tap = Tap(cfg.stream_max_subscribers, write_timeout=cfg.stream_write_timeout)
        # Errors caught at component boundaries (each logged where caught).
        self.stream_errors = 0
        self.render_errors = 0
        self.body_budget = BodyBudget(cfg.max_bodies_in_flight)
        # Open files: as many as allowed, a share kept free for the API.
        self.nofile = raise_nofile()
        self.gate = ConnectionGate(cfg.max_connections, ingest_connection_budget(self.nofile))
        self.api_connections = APIConnections(api_connection_budget(self.nofile))
        self.consumer: Consumer | None = None
        self.maintenance: Maintenance | None = None
        self.immutable: Immutable | None = None
        if cfg.is_ingest:
            self.ingest_log = IngestLog(self.fs, cfg.ingest_path, cfg.segment_pending_timeout)
            self.ingest_log.tap = self.tap
            report = self.ingest_log.recover()
            if report.reactivated or report.torn_bytes:
                log.info(
                    "ingest recovery: %d segments back to flushed, %d torn bytes cut",
                    report.reactivated,
                    report.torn_bytes,
                )
        if cfg.is_store:
            self.store_log = StoreLog(self.fs, cfg.store_path)
            self.store_log.sole_copy = cfg.replication_factor == 1
            self.immutable = Immutable(self.store_log, cfg.retain)
            # Bodies are written plain, so records are queryable without
            # waiting for compression; compaction compresses them at once.
            self.store_log.level = 0
            self.maintenance = Maintenance(
                self.store_log,
                cfg.store_target_size,
                cfg.retain,
                cfg.purge,
                trio.CapacityLimiter(1),
                cfg.max_disk_usage,
                level=cfg.store_level,
                cold_level=cfg.store_cold_level,
                cold_age=cfg.store_cold_age,
            )
            for q in self.store_log.quarantined:
                log.warning("quarantined store segment %s", q)

    # -- wiring -------------------------------------------------------------------

    def router(self) -> Router:
        r = Router(self.body_budget)
        if self.ingest_log is not None:
            r.mount(ingest_router(self.ingest_log))
            r.mount(
                httpingest_router(
                    self.ingest_log, self.ingest_settings(), self.http_ingest_stats,
                    window=self.event_window(),
                    otlp_topic_attributes=self.cfg.otlp_topic_attributes,
                    loki_topic_labels=self.cfg.loki_topic_labels,
                )
            )
        if self.store_log is not None:
            pending = self.maintenance.pending if self.maintenance is not None else None
            r.mount(store_router(self.store_log, self.scan_limiter, self._query, pending, self.immutable))
            r.add("GET", "/store/hits", self._hits)
            r.add("GET", "/store/topics", self._topics)
        if self.ingest_log is not None:
            r.add("GET", "/ingest/_stream", ingest_stream_handler(self.tap))
        r.add(
            "GET",
            "/store/stream",
            cluster_stream_handler(
                lambda: self._live("ingest"),
                self.tap,
                self.ingest_log is not None,
                on_error=self._stream_error,
                client_options=self.peer_client_options,
            ),
        )
        r.mount(metrics_router(self.metrics))
        r.on_response = self.metrics.count_request
        r.guard = self._guard
        observe_queries(r, self.metrics)
        r.add("GET", "/cluster/state", self._state)
        r.add("GET", "/store/_clusterstate", self._state)
        r.add("GET", "/health", self._health)
        return r

    def peer_client_options(self) -> dict:
        """``auth`` and ``verify`` for an httpx client calling this node's peers:
        it signs as a member (cluster key) and, with a key, calls each member's TLS
        listener (node_addr), else the API (over TLS when the cluster's API speaks it).
        One TLS context for every such client (each costs about 1 MB)."""
        if self._peer_options is None:
            if self.node_tls is not None:
                self._peer_options = {
                    "auth": ClientAuth(self.auth.node_keys, node_route=self._node_route),
                    "verify": self.node_tls.client_context(),
                }
            else:
                self._peer_options = {
                    "auth": ClientAuth(self.auth.node_keys, https=self.tls.on),
                    "verify": client_context(self.tls.ca) if self.tls.on else True,
                }
        return self._peer_options

    def _node_route(self, api_addr: str) -> str | None:
        """The members' TLS address of the member whose API is ``api_addr``."""
        if self.gossip is None:
            return None
        for m in self.gossip.members():
            if m.meta.get("api_addr") == api_addr and isinstance(m.meta.get("node_addr"), str):
                return m.meta["node_addr"]
        return None

    def _guard(self, req: Request, route: str) -> Response | None:
        node = self.bound.extra.get("node")
        server = req.scope.get("server")
        if node is not None and server is not None and server[1] == node[1]:
            self.node_port_requests += 1
            return self.auth.check_member(req, route)
        if NODE_HEADER in req.headers:
            self.api_member_calls += 1  # a member's proof in clear (tools; members use the node port)
        return self.auth.check(req, route)

    def _stream_error(self) -> None:
        self.stream_errors += 1

    async def _query(self, req: Request) -> Response:
        assert self.coordinator is not None
        return await self.coordinator.handle(req)

    async def _hits(self, req: Request) -> Response:
        from oklog.query.hits import cluster_hits

        assert self.coordinator is not None
        return await cluster_hits(self.coordinator, req)

    async def _topics(self, req: Request) -> Response:
        from oklog.query.hits import cluster_topics

        assert self.coordinator is not None
        return await cluster_topics(self.coordinator, req)

    def _addr(self, a: tuple[str, int] | None) -> str | None:
        if a is None:
            return None
        host = a[0] if a[0] not in ("", "0.0.0.0") else self.advertise_host
        return f"{host}:{a[1]}"

    def meta(self) -> dict:
        """What this node advertises in gossip: addresses and load figures."""
        m: dict = {
            "api_addr": self._addr(self.bound.api),
            "fast_addr": self._addr(self.bound.fast),
            "durable_addr": self._addr(self.bound.durable),
            "bulk_addr": self._addr(self.bound.extra.get("bulk")),
            "started": self.started,
        }
        if self.bound.extra.get("node") is not None:
            m["node_addr"] = self._addr(self.bound.extra["node"])
        if self.ingest_log is not None:
            m["connections"] = self.listener_stats.connections
            m["records_in"] = self.ingest_log.records_in
        if self.store_log is not None:
            st = self.store_log.stats()
            m["store_bytes"] = st["bytes"]
            m["store_segments"] = st["segments"]
            if st["oldest"]:
                # Queries over ranges that end before it skip this member:
                # see docs/decisions.md "Queries skip members with nothing in range".
                m["store_lo_ms"] = ulid_ms(st["oldest"].encode("latin-1"))
        return m

    def members(self) -> list[dict]:
        if self.gossip is None or not self.gossip.members():
            return [
                {
                    "id": self.id,
                    "role": self.cfg.role,
                    "api_addr": self._addr(self.bound.api),
                    "state": "alive",
                    "incarnation": 0,
                    "last_heard": time.time(),
                    "self": True,
                    "meta": self.meta(),
                }
            ]
        out: list[dict[str, object]] = []  # the fallback rows below do not fill every MemberRow key
        now = time.time()
        for m in self.gossip.members():
            try:
                out.append(dict(member_row(m, now)))
            except Exception:
                self.render_errors += 1
                log.exception("rendering member %r failed; shown without details", m.id)
                out.append({"id": str(m.id), "state": str(m.state), "self": m.is_self, "error": "unreadable"})
        return out

    def _live(self, role: str) -> list[tuple[str, str | None]]:
        """(id, api_addr or None for self) of alive members doing ``role`` work."""
        if self.gossip is None or not self.gossip.members():
            mine = role == "ingest" and self.cfg.is_ingest or role == "store" and self.cfg.is_store
            return [(self.id, None)] if mine else []
        out: list[tuple[str, str | None]] = []
        for m in self.gossip.members_by_role(role):
            if m.is_self:
                out.append((m.id, None))
            elif isinstance(m.meta.get("api_addr"), str):
                out.append((m.id, m.meta["api_addr"]))
        return out

    def state(self) -> dict:
        cfg = self.cfg
        pipeline: dict = {"time": time.time()}
        self._health_into(pipeline)
        if self.ingest_log is not None:
            pipeline["ingest"] = self.ingest_log.stats() | {
                "connections": self.listener_stats.connections,
                "connections_total": self.listener_stats.connections_total,
                "records_split": self.listener_stats.records_split,
                "connections_refused": self.listener_stats.connections_refused,
                "write_errors": self.listener_stats.write_errors,
                "bad_topic_lines": self.listener_stats.bad_topic_lines,
                "idle_closed": self.listener_stats.idle_closed,
                "gate": self.gate.as_dict() | {"nofile": self.nofile},
                "syslog": self.syslog_stats.as_dict(),
                "bulk": vars(self.bulk_stats).copy(),
                "http": self.http_ingest_stats.as_dict(),
                "fluent": self.fluent_stats.as_dict(),
            }
        if self.store_log is not None:
            pipeline["store"] = self.store_log.stats() | (self.immutable.as_dict() if self.immutable else {})
        if self.consumer is not None:
            pipeline["consumer"] = vars(self.consumer.stats).copy()
        if self.maintenance is not None:
            pipeline["compaction"] = vars(self.maintenance.stats).copy()
        if self.coordinator is not None:
            pipeline["queries"] = {
                "total": self.coordinator.queries,
                "partial": self.coordinator.partial,
                "members_skipped": self.coordinator.members_skipped,
                "running": self.coordinator.running,
                "rejected": self.coordinator.rejected,
                "missing": self.coordinator.missing(),
                "read_repairs": self.coordinator.read_repairs,
                "read_repair_records": self.coordinator.read_repair_records,
            }
        if self.gossip is not None:
            pipeline["gossip"] = vars(self.gossip.stats).copy()
        pipeline["streams"] = self.tap.stats()
        pipeline["errors"] = {
            "consumer": self.consumer.stats.cycle_errors if self.consumer is not None else 0,
            "coordinator": self.coordinator.errors if self.coordinator is not None else 0,
            "stream": self.stream_errors,
            "gossip": self.gossip.stats.errors if self.gossip is not None else 0,
            "state": self.render_errors,
        }
        pipeline["http"] = {
            "bodies_in_flight_bytes": self.body_budget.used,
            "bodies_budget_bytes": self.body_budget.capacity,
            "bodies_refused": self.body_budget.refused,
            "connections": self.api_connections.as_dict(),
            "node_port_requests": self.node_port_requests,
            "api_member_calls": self.api_member_calls,
        }
        return {
            "self": self.id,
            "role": cfg.role,
            "uptime_seconds": round(time.time() - self.started, 3),
            "members": self.members(),
            "pipeline": pipeline,
            "replication_factor": cfg.replication_factor,
        }

    async def _state(self, req: Request) -> Response:
        return Response.json(self.state())

    async def _health(self, req: Request) -> Response:
        return Response(200, b"ok\n")

    def _health_into(self, pipeline: dict) -> None:
        """``warnings`` (each naming its cause, current only) and ``recent`` (failures
        over the last minute and five minutes, how long ingest has been idle)."""
        now = time.monotonic()
        self._observe_ingest(now)
        recent = self.health.figures(now)
        idle = self.health.ingest.idle_for(now) if self.ingest_log is not None else None
        recent["ingest_idle_seconds"] = None if idle is None else round(idle, 3)
        pipeline["recent"] = recent
        consumer_warnings = self.consumer.stats.warnings if self.consumer is not None else []
        pipeline["warnings"] = [w.as_dict() for w in self.health.warnings(now, consumer_warnings)]

    def _observe_ingest(self, now: float) -> None:
        if self.ingest_log is not None:
            self.health.ingest.observe(now, self.ingest_log.records_in, self.listener_stats.connections)

    def _consumer_event(self, kind: str, subject: str, ok: bool, text: str) -> None:
        self.health.report(time.monotonic(), kind, subject, ok, text)

    # -- running --------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        shutdown = trio.Event()
        if cfg.insecure:
            log.warning("INSECURE: -insecure given: listening beyond loopback or clustering without a cluster key; "
                        "anyone who can reach this node can join, read and delete (oklog keygen -o cluster.key)")
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64), **self.peer_client_options()) as client:
            self.http_client = client
            self.coordinator = Coordinator(
                self.store_log,
                self.scan_limiter,
                lambda: [StoreMember(i, a) for i, a in self._live("store")],
                client,
                cfg.member_timeout,
                cfg.replication_factor,
                view=lambda: observe_gossip(self.gossip.members()) if self.gossip is not None else None,
                assured=lambda: self.consumer is not None and self.consumer.strict,
                max_queries=cfg.max_queries,
            )
            async with trio.open_nursery() as nursery:
                self.coordinator.spawn = nursery.start_soon
                router = self.router()
                if self.node_tls is not None:
                    na = cfg.cluster_api or type(cfg.cluster)(cfg.cluster.host, 0)
                    self.bound.extra["node"] = await nursery.start(
                        functools.partial(
                            serve_http, router, na.host, na.port,
                            idle_timeout=cfg.api_idle_timeout, connections=self.api_connections,
                            ssl_context=self.node_tls.server_context(),
                        )
                    )
                self.bound.api = await nursery.start(
                    functools.partial(
                        serve_http, router, cfg.api.host, cfg.api.port,
                        idle_timeout=cfg.api_idle_timeout, connections=self.api_connections,
                        configure=self.tls.configure_hypercorn if self.tls.on else None,
                    )
                )
                nursery.start_soon(self.auth.watch_sighup)
                ingest_scope = trio.CancelScope()
                if self.ingest_log is not None:
                    await nursery.start(self._listeners, ingest_scope)
                    nursery.start_soon(self._sweep_pending)
                self.gossip = Gossip(
                    self.id,
                    cfg.role,
                    bind=(cfg.cluster.host, cfg.cluster.port),
                    advertise_host=self.advertise_host,
                    seeds=cfg.peers,
                    meta=self.meta(),
                    keyring=self.keyring,
                    **cfg.gossip_timing,
                )
                gossip_scope = trio.CancelScope()

                async def run_gossip(task_status=trio.TASK_STATUS_IGNORED) -> None:
                    assert self.gossip is not None
                    with gossip_scope:
                        await self.gossip.run(task_status=task_status)

                self.bound.cluster = await nursery.start(run_gossip)
                nursery.start_soon(self._publish_meta)
                if self.store_log is not None:
                    self.consumer = self._make_consumer()
                    self.consumer.on_event = self._consumer_event
                    if self.ingest_log is not None:  # a local flush need not wait for the poll
                        self.ingest_log.on_flushed = self.consumer.wake
                    nursery.start_soon(self.consumer.run)
                    assert self.maintenance is not None
                    nursery.start_soon(self.maintenance.run)
                log.info(
                    "oklog %s node %s: api %s, fast %s, durable %s, cluster %s, node (TLS) %s, peers %s",
                    cfg.role, self.id, self._addr(self.bound.api), self._addr(self.bound.fast),
                    self._addr(self.bound.durable), self._addr(self.bound.cluster),
                    self._addr(self.bound.extra.get("node")) or "none (no cluster key)",
                    ",".join(cfg.peers) or "none",
                )
                task_status.started(self.bound)
                nursery.start_soon(self._watch_signals, shutdown)
                await shutdown.wait()
                # Graceful: stop taking data, flush (the connection handlers flush on
                # cancel), keep serving /ingest/* until the store tier has consumed
                # what is left or the drain timeout passes, then leave the cluster.
                ingest_scope.cancel()
                await self._drain()
                with trio.move_on_after(2):
                    self.gossip.set_meta(self.meta())  # what it holds as it leaves
                    await self.gossip.leave()
                gossip_scope.cancel()
                nursery.cancel_scope.cancel()

    async def _listeners(self, scope: trio.CancelScope, task_status=trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        assert self.ingest_log is not None
        settings = self.ingest_settings()
        ilog = self.ingest_log
        access = ingest_gate(self.auth, self.tls.server_context() if self.tls.on else None)
        with scope:
            async with trio.open_nursery() as ln:
                self.bound.fast = await ln.start(
                    functools.partial(
                        serve_ingest, cfg.ingest_fast.host, cfg.ingest_fast.port,
                        ilog, settings, self.listener_stats, gate=self.gate, access=access,
                    )
                )
                self.bound.durable = await ln.start(
                    functools.partial(
                        serve_ingest, cfg.ingest_durable.host, cfg.ingest_durable.port,
                        ilog, settings, self.listener_stats, durable=True, gate=self.gate, access=access,
                    )
                )
                self.bound.extra["bulk"] = await ln.start(
                    functools.partial(
                        serve_bulk, cfg.ingest_bulk.host, cfg.ingest_bulk.port, ilog, self.bulk_stats,
                        idle_timeout=cfg.ingest_idle_timeout, gate=self.gate, retain=cfg.retain,
                        access=access,
                    )
                )
                if cfg.ingest_syslog is not None:
                    self.bound.extra["syslog"] = await ln.start(
                        functools.partial(
                            serve_syslog, cfg.ingest_syslog.host, cfg.ingest_syslog.port,
                            ilog, settings, self.syslog_stats, topic=cfg.syslog_topic.encode(), gate=self.gate,
                            window=self.event_window(),
                        )
                    )
                if cfg.ingest_syslog_tls is not None and access is not None:
                    if self.auth.tokens is not None and not self.tls.client_ca:
                        log.warning("-ingest.syslog-tls with -auth.tokens but no -tls.client-ca: syslog clients "
                                    "must open with a token line, which rsyslog and syslog-ng cannot send")
                    self.bound.extra["syslog_tls"] = await ln.start(
                        functools.partial(
                            serve_syslog_tls, cfg.ingest_syslog_tls.host, cfg.ingest_syslog_tls.port,
                            ilog, settings, self.syslog_stats, access,
                            topic=cfg.syslog_topic.encode(), gate=self.gate,
                        )
                    )
                if cfg.ingest_fluent is not None:
                    if self.auth.tokens is not None and not self.tls.client_ca:
                        log.warning("-ingest.fluent with -auth.tokens but no -tls.client-ca: Fluent clients "
                                    "must open with a token line, which Fluentd and Fluent Bit cannot send")
                    self.bound.extra["fluent"] = await ln.start(
                        functools.partial(
                            serve_fluent, cfg.ingest_fluent.host, cfg.ingest_fluent.port,
                            ilog, settings, self.fluent_stats, window=self.event_window(), gate=self.gate,
                            access=access,
                        )
                    )
                task_status.started()

    def event_window(self) -> EventWindow:
        return EventWindow(self.cfg.event_time_past, self.cfg.event_time_future)

    def ingest_settings(self) -> IngestSettings:
        c = self.cfg
        return IngestSettings(
            c.segment_flush_size, c.segment_flush_age, c.max_record_size,
            topic=c.ingest_topic.encode(), max_connections=c.max_connections,
            idle_timeout=c.ingest_idle_timeout,
        )

    async def _publish_meta(self) -> None:
        published = trio.current_time()
        lo = self.meta().get("store_lo_ms")
        while True:
            await trio.sleep(META_LOWERED_CHECK)
            written = self.store_log.take_oldest_written() if self.store_log is not None else "~"
            lowered = lo is not None and written != "~" and ulid_ms(written.encode("latin-1")) < lo
            if not lowered and trio.current_time() - published < META_INTERVAL:
                continue
            meta = self.meta()
            lo = meta.get("store_lo_ms")
            published = trio.current_time()
            if self.gossip is not None:
                self.gossip.set_meta(meta)

    def _make_consumer(self) -> Consumer:
        assert self.store_log is not None and self.http_client is not None
        client = self.http_client
        local_store = LocalStore(self.store_log, self.id, self.immutable)
        local_ingest = LocalIngest(self.ingest_log, self.id) if self.ingest_log is not None else None
        sources: dict[str, RemoteIngest] = {}
        targets: dict[str, RemoteStore] = {}

        def ingest_sources() -> list:
            out: list = []
            for node_id, api in self._live("ingest"):
                if api is None:
                    if local_ingest is not None:
                        out.append(local_ingest)
                    continue
                src = sources.get(api)
                if src is None:
                    src = sources[api] = RemoteIngest(client, api, node_id)
                out.append(src)
            return out

        def store_targets() -> list:
            out: list = []
            for node_id, api in self._live("store"):
                if api is None:
                    out.append(local_store)
                    continue
                t = targets.get(api)
                if t is None:
                    t = targets[api] = RemoteStore(client, api, node_id)
                out.append(t)
            return out

        return Consumer(
            sources=ingest_sources,
            targets=store_targets,
            replication_factor=self.cfg.replication_factor,
            batch_size=min(self.cfg.consume_batch_size, self.cfg.store_target_size),
            batch_age=self.cfg.store_target_age,
            limiter=self.scan_limiter,
            strict=bool(self.cfg.peers) and self.cfg.replication_factor > 1,
            grace=3 * self.cfg.gossip_timing.get("probe_interval", 0.5) + 1.0
            if self.cfg.replication_factor > 1
            else 0.0,
        )

    async def _drain(self) -> None:
        if self.ingest_log is None:
            return
        with trio.move_on_after(self.cfg.drain_timeout):
            while True:
                st = self.ingest_log.stats()["segments"]
                if not any(st.values()):
                    return
                await trio.sleep(0.1)

    async def _sweep_pending(self) -> None:
        assert self.ingest_log is not None
        while True:
            await trio.sleep(PENDING_SWEEP)
            self._observe_ingest(time.monotonic())  # once a second: when writes stopped
            n = self.ingest_log.expire_pending()
            if n:
                log.warning("%d pending segments timed out; back to flushed", n)

    async def _watch_signals(self, shutdown: trio.Event) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for sig in signals:
                log.info("signal %s: shutting down gracefully", signal.Signals(sig).name)
                shutdown.set()
                return

