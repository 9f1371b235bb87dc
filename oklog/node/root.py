"""Composition root: ``open_node(cfg)`` opens what the node's role needs on disk, then
``Node.run`` starts every component in one nursery.

    producers ──TCP fast / durable / bulk──┐   syslog TCP+UDP, syslog-TLS, Fluent forward
    HTTP pushes: /ingest/jsonline,         │   (each optional) ───────────────┐
    /insert/jsonline, Loki push, OTLP      │                                  │
    /v1/logs, Elasticsearch _bulk ────┐    ▼                                  ▼
    ┌─ IngestSide (ingest roles) ─────┴───────────────────────────────────────────────┐
    │ ConnectionGate ── listeners ── IngestLog (.active/.flushed/.pending) ── Tap ────┼─▶ /ingest/_stream,
    │ pending sweep (segments a consumer never committed go back to flushed)          │   /store/stream (live tail)
    └─────────────┬───────────────────────────────────────────────────────────────────┘
                  │ LocalIngest, or a remote member's /ingest/next|read|pending|commit|failed
                  ▼
    ┌─ StoreSide (store roles) ───────────────────────────────────────────────────────┐
    │ Consumer  gather → merge → replicate (LocalStore / RemoteStore) → commit        │
    │ StoreLog (FIRST-LAST.seg) + Immutable (dedup, retention)                        │
    │ Maintenance: compaction, recompression, retention purge, disk cap               │
    └─────────────┬───────────────────────────────────────────────────────────────────┘
                  │
    Coordinator: /store/query fan-out to store members, merge, read repair; /store/hits, /store/topics
                  │
    HTTP API (hypercorn on trio, optional TLS): /ingest /store /cluster/state /metrics /health
      guard: Auth (tokens, member signatures) ── Metrics (Prometheus, reads NodeState) ── Health (warnings)
    members-only TLS port (with a cluster key): the same router, members' certificates only
    Gossip (SWIM over UDP, signed with the cluster key): membership, each member's MemberMeta,
      republished every META_INTERVAL (sooner when the store's oldest record moves back)

``Node.state()`` is the ``/cluster/state`` document (``oklog.node.state.NodeState``).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

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
from oklog.node import state as S
from oklog.node.config import Addr, NodeConfig
from oklog.node.health import Health
from oklog.node.metrics import Metrics, metrics_router, observe_queries
from oklog.query.coordinator import Coordinator, StoreMember, observe_gossip
from oklog.records import segfile
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

HostPort = tuple[str, int]
T = TypeVar("T")


def _as(kind: type[T], d: Mapping[str, Any]) -> T:
    """A component's stats as the section of the document that ``kind`` defines."""
    return cast(T, d)


@dataclass
class Bound:
    """Where the node's services actually listen (ports may have been 0); None: not serving."""

    api: HostPort | None = None
    fast: HostPort | None = None
    durable: HostPort | None = None
    cluster: HostPort | None = None
    bulk: HostPort | None = None
    syslog: HostPort | None = None
    syslog_tls: HostPort | None = None
    fluent: HostPort | None = None
    node: HostPort | None = None  # the members-only TLS listener


@dataclass
class IngestSide:
    """What an ingest role runs: the segment log and its listeners' figures."""

    log: IngestLog
    listeners: ListenerStats = field(default_factory=ListenerStats)
    http: HTTPIngestStats = field(default_factory=HTTPIngestStats)
    syslog: SyslogStats = field(default_factory=SyslogStats)
    bulk: BulkStats = field(default_factory=BulkStats)
    fluent: FluentStats = field(default_factory=FluentStats)


@dataclass
class StoreSide:
    """What a store role runs: the store log, its dedup/retention gate, maintenance."""

    log: StoreLog
    immutable: Immutable
    maintenance: Maintenance


def open_ingest(cfg: NodeConfig, fs: FS, tap: Tap) -> IngestSide:
    """Open the ingest log, putting back what a crash left half-consumed."""
    ilog = IngestLog(fs, cfg.ingest_path, cfg.segment_pending_timeout)
    ilog.tap = tap
    report = ilog.recover()
    if report.reactivated or report.torn_bytes:
        log.info(
            "ingest recovery: %d segments back to flushed, %d torn bytes cut",
            report.reactivated,
            report.torn_bytes,
        )
    return IngestSide(ilog)


def open_store(cfg: NodeConfig, fs: FS) -> StoreSide:
    slog = StoreLog(fs, cfg.store_path)
    slog.sole_copy = cfg.replication_factor == 1
    # Bodies are written plain, so records are queryable without
    # waiting for compression; compaction compresses them at once.
    slog.level = 0
    maintenance = Maintenance(
        slog,
        cfg.store_target_size,
        cfg.retain,
        cfg.purge,
        trio.CapacityLimiter(1),
        cfg.max_disk_usage,
        level=cfg.store_level,
        cold_level=cfg.store_cold_level,
        cold_age=cfg.store_cold_age,
        idle_level=cfg.store_idle_level,
    )
    for q in slog.quarantined:
        log.warning("quarantined store segment %s", q)
    return StoreSide(slog, Immutable(slog, cfg.retain), maintenance)


def open_node(cfg: NodeConfig, fs: FS | None = None) -> Node:
    """Everything the node reads from disk before it serves: the cluster key, the
    ingest log (recovered) and the store log, as its role needs them."""
    fs = fs or RealFS()
    tap = Tap(cfg.stream_max_subscribers, write_timeout=cfg.stream_write_timeout)
    return Node(
        cfg,
        tap=tap,
        ingest=open_ingest(cfg, fs, tap) if cfg.is_ingest else None,
        store=open_store(cfg, fs) if cfg.is_store else None,
        keyring=Keyring.load(cfg.cluster_key) if cfg.cluster_key else None,
    )


def advertised_host(cfg: NodeConfig) -> str:
    return cfg.advertise_host or (cfg.cluster.host if cfg.cluster.host not in ("", "0.0.0.0") else guess_host())


class Node:
    """One node; its role's components are set (``ingest``/``store`` None when the role
    lacks them). Build it with ``open_node``; ``run`` serves until SIGTERM/SIGINT."""

    def __init__(
        self,
        cfg: NodeConfig,
        *,
        tap: Tap,
        ingest: IngestSide | None,
        store: StoreSide | None,
        keyring: Keyring | None,
    ) -> None:
        self.cfg = cfg
        self.tap = tap
        self.ingest = ingest
        self.store = store
        self.keyring = keyring
        self.started = time.time()
        self.health = Health()  # recent failures and ingest stalls: the state's warnings
        self.advertise_host = advertised_host(cfg)
        # Stable across restarts, unique per host and port: a restarted node
        # rejoins as itself (with a higher incarnation).
        self.id = cfg.node_id or f"{self.advertise_host}:{cfg.cluster.port}"
        self.bound = Bound()
        self.scan_limiter = trio.CapacityLimiter(max(1, os.cpu_count() or 1))
        self.metrics = Metrics(self.state)
        self.tls = TLSConfig(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca, cfg.tls_ca)
        self.auth = Auth(
            NodeKeys(keyring) if keyring is not None else None,
            Tokens(cfg.auth_tokens) if cfg.auth_tokens else None,
            cfg.insecure,
        )
        register_metrics(self.auth, self.metrics.registry)
        # With a cluster key, members call each other only over TLS made from it,
        # on a listener of their own (docs/decisions.md, "Node-to-node TLS").
        self.node_tls = NodeTLS(keyring, self.id) if keyring is not None else None
        self._peer_options: dict[str, Any] | None = None
        self.node_port_requests = 0
        self.api_member_calls = 0
        # Errors caught at component boundaries (each logged where caught).
        self.stream_errors = 0
        self.render_errors = 0
        self.body_budget = BodyBudget(cfg.max_bodies_in_flight)
        # Open files: as many as allowed, a share kept free for the API.
        self.nofile = raise_nofile()
        self.gate = ConnectionGate(cfg.max_connections, ingest_connection_budget(self.nofile))
        self.api_connections = APIConnections(api_connection_budget(self.nofile))
        # Started by run (None before, or for a role without them).
        self.gossip: Gossip | None = None
        self.coordinator: Coordinator | None = None
        self.consumer: Consumer | None = None

    @property
    def store_log(self) -> StoreLog | None:
        return self.store.log if self.store is not None else None

    # -- wiring -------------------------------------------------------------------

    def router(self, coordinator: Coordinator) -> Router:
        r = Router(self.body_budget)
        if self.ingest is not None:
            self._mount_ingest(r, self.ingest)
        if self.store is not None:
            self._mount_store(r, self.store, coordinator)
        r.add(
            "GET",
            "/store/stream",
            cluster_stream_handler(
                lambda: self._live("ingest"),
                self.tap,
                self.ingest is not None,
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

    def _mount_ingest(self, r: Router, side: IngestSide) -> None:
        r.mount(ingest_router(side.log))
        r.mount(
            httpingest_router(
                side.log, self.ingest_settings(), side.http,
                window=self.event_window(),
                otlp_topic_attributes=self.cfg.otlp_topic_attributes,
                loki_topic_labels=self.cfg.loki_topic_labels,
            )
        )
        r.add("GET", "/ingest/_stream", ingest_stream_handler(self.tap))

    def _mount_store(self, r: Router, side: StoreSide, coordinator: Coordinator) -> None:
        from oklog.query.hits import cluster_hits, cluster_topics

        async def hits(req: Request) -> Response:
            return await cluster_hits(coordinator, req)

        async def topics(req: Request) -> Response:
            return await cluster_topics(coordinator, req)

        r.mount(store_router(side.log, self.scan_limiter, coordinator.handle, side.maintenance.pending, side.immutable))
        r.add("GET", "/store/hits", hits)
        r.add("GET", "/store/topics", topics)

    def peer_client_options(self) -> dict[str, Any]:
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
            node_addr = m.meta.get("node_addr")
            if m.meta.get("api_addr") == api_addr and isinstance(node_addr, str):
                return node_addr
        return None

    def _guard(self, req: Request, route: str) -> Response | None:
        node = self.bound.node
        server = req.scope.get("server")
        if node is not None and server is not None and server[1] == node[1]:
            self.node_port_requests += 1
            return self.auth.check_member(req, route)
        if NODE_HEADER in req.headers:
            self.api_member_calls += 1  # a member's proof in clear (tools; members use the node port)
        return self.auth.check(req, route)

    def _stream_error(self) -> None:
        self.stream_errors += 1

    def _addr(self, a: HostPort | None) -> str | None:
        if a is None:
            return None
        host = a[0] if a[0] not in ("", "0.0.0.0") else self.advertise_host
        return f"{host}:{a[1]}"

    # -- the /cluster/state document -------------------------------------------------

    def meta(self) -> S.MemberMeta:
        """What this node advertises in gossip: addresses and load figures."""
        m: S.MemberMeta = {
            "api_addr": self._addr(self.bound.api),
            "fast_addr": self._addr(self.bound.fast),
            "durable_addr": self._addr(self.bound.durable),
            "bulk_addr": self._addr(self.bound.bulk),
            "started": self.started,
        }
        if self.bound.node is not None:
            m["node_addr"] = self._addr(self.bound.node)
        if self.ingest is not None:
            m["connections"] = self.ingest.listeners.connections
            m["records_in"] = self.ingest.log.records_in
        if self.store is not None:
            st = self.store.log.stats()
            m["replicate_segfile"] = segfile.INDEX_VERSION
            m["store_bytes"] = st["bytes"]
            m["store_segments"] = st["segments"]
            if st["oldest"]:
                # Queries over ranges that end before it skip this member:
                # see docs/decisions.md "Queries skip members with nothing in range".
                m["store_lo_ms"] = ulid_ms(st["oldest"].encode("latin-1"))
        return m

    def _self_row(self, now: float) -> S.MemberRow:
        """This node's row before gossip knows it (it runs alone, or has not started)."""
        return {
            "id": self.id,
            "role": self.cfg.role,
            "gossip_addr": self._addr(self.bound.cluster) or self.id,
            "api_addr": self._addr(self.bound.api),
            "state": "alive",
            "incarnation": 0,
            "meta_version": 0,
            "last_heard": now,
            "state_since": self.started,
            "self": True,
            "uptime_seconds": round(now - self.started, 3),
            "meta": self.meta(),
        }

    def members(self) -> list[S.MemberRow]:
        now = time.time()
        if self.gossip is None or not self.gossip.members():
            return [self._self_row(now)]
        out: list[S.MemberRow] = []
        for m in self.gossip.members():
            try:
                out.append(_as(S.MemberRow, member_row(m, now)))
            except Exception:  # a peer's odd metadata must not take the state page down
                self.render_errors += 1
                log.exception("rendering member %r failed; shown without details", m.id)
                out.append(unreadable_row(str(m.id), str(m.state), m.is_self))
        return out

    def _live(self, role: str) -> list[tuple[str, str | None]]:
        """(id, api_addr or None for self) of alive members doing ``role`` work."""
        if self.gossip is None or not self.gossip.members():
            mine = role == "ingest" and self.cfg.is_ingest or role == "store" and self.cfg.is_store
            return [(self.id, None)] if mine else []
        out: list[tuple[str, str | None]] = []
        for m in self.gossip.members_by_role(role):
            api = m.meta.get("api_addr")
            if m.is_self:
                out.append((m.id, None))
            elif isinstance(api, str):
                out.append((m.id, api))
        return out

    def state(self) -> S.NodeState:
        return {
            "self": self.id,
            "role": self.cfg.role,
            "uptime_seconds": round(time.time() - self.started, 3),
            "members": self.members(),
            "pipeline": self.pipeline(),
            "replication_factor": self.cfg.replication_factor,
        }

    def pipeline(self) -> S.Pipeline:
        now = time.monotonic()
        self._observe_ingest(now)
        p: S.Pipeline = {
            "time": time.time(),
            "recent": self._recent(now),
            "warnings": self._warnings(now),
            "streams": _as(S.StreamStats, self.tap.stats()),
            "errors": self._errors(),
            "http": self._http_stats(),
        }
        if self.ingest is not None:
            p["ingest"] = self._ingest_stats(self.ingest)
        if self.store is not None:
            p["store"] = _as(S.StoreStats, {**self.store.log.stats(), **self.store.immutable.as_dict()})
            p["compaction"] = _as(S.CompactionStats, vars(self.store.maintenance.stats).copy())
        if self.consumer is not None:
            p["consumer"] = _as(S.ConsumerStats, vars(self.consumer.stats).copy())
        if self.coordinator is not None:
            p["queries"] = query_stats(self.coordinator)
        if self.gossip is not None:
            p["gossip"] = _as(S.GossipStats, vars(self.gossip.stats).copy())
        return p

    def _ingest_stats(self, side: IngestSide) -> S.IngestStats:
        ls = side.listeners
        return _as(S.IngestStats, side.log.stats() | {
            "connections": ls.connections,
            "connections_total": ls.connections_total,
            "records_split": ls.records_split,
            "connections_refused": ls.connections_refused,
            "write_errors": ls.write_errors,
            "bad_topic_lines": ls.bad_topic_lines,
            "idle_closed": ls.idle_closed,
            "gate": self.gate.as_dict() | {"nofile": self.nofile},
            "syslog": side.syslog.as_dict(),
            "bulk": vars(side.bulk).copy(),
            "http": side.http.as_dict(),
            "fluent": side.fluent.as_dict(),
        })

    def _errors(self) -> S.ErrorCounts:
        return {
            "consumer": self.consumer.stats.cycle_errors if self.consumer is not None else 0,
            "coordinator": self.coordinator.errors if self.coordinator is not None else 0,
            "stream": self.stream_errors,
            "gossip": self.gossip.stats.errors if self.gossip is not None else 0,
            "state": self.render_errors,
        }

    def _http_stats(self) -> S.HTTPStats:
        return {
            "bodies_in_flight_bytes": self.body_budget.used,
            "bodies_budget_bytes": self.body_budget.capacity,
            "bodies_refused": self.body_budget.refused,
            "connections": _as(S.APIConnections, self.api_connections.as_dict()),
            "node_port_requests": self.node_port_requests,
            "api_member_calls": self.api_member_calls,
        }

    def _recent(self, now: float) -> S.Recent:
        """Failures over the last minute and five minutes, how long ingest has been idle."""
        idle = self.health.ingest.idle_for(now) if self.ingest is not None else None
        return self.health.figures(now, idle)

    def _warnings(self, now: float) -> list[S.HealthWarning]:
        """Each names its cause; current ones only."""
        consumer_warnings = self.consumer.stats.warnings if self.consumer is not None else []
        return [w.as_dict() for w in self.health.warnings(now, consumer_warnings)]

    async def _state(self, req: Request) -> Response:
        return Response.json(self.state())

    async def _health(self, req: Request) -> Response:
        return Response(200, b"ok\n")

    def _observe_ingest(self, now: float) -> None:
        if self.ingest is not None:
            self.health.ingest.observe(now, self.ingest.log.records_in, self.ingest.listeners.connections)

    def _consumer_event(self, kind: str, subject: str, ok: bool, text: str) -> None:
        self.health.report(time.monotonic(), kind, subject, ok, text)

    # -- running --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        shutdown = trio.Event()
        if cfg.insecure:
            log.warning("INSECURE: -insecure given: listening beyond loopback or clustering without a cluster key; "
                        "anyone who can reach this node can join, read and delete (oklog keygen -o cluster.key)")
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64), **self.peer_client_options()) as client:
            coordinator = self.coordinator = self._make_coordinator(client)
            async with trio.open_nursery() as nursery:
                coordinator.spawn = nursery.start_soon
                await self._serve_api(nursery, self.router(coordinator))
                nursery.start_soon(self.auth.watch_sighup)
                ingest_scope = trio.CancelScope()
                if self.ingest is not None:
                    await nursery.start(self._listeners, self.ingest, ingest_scope)
                    nursery.start_soon(self._sweep_pending, self.ingest.log)
                gossip = self.gossip = self._make_gossip()
                gossip_scope = trio.CancelScope()
                self.bound.cluster = await nursery.start(self._run_gossip, gossip, gossip_scope)
                nursery.start_soon(self._publish_meta, gossip)
                if self.store is not None:
                    self._start_store(nursery, self.store, client)
                self._log_started()
                task_status.started(self.bound)
                nursery.start_soon(self._watch_signals, shutdown)
                await shutdown.wait()
                # Graceful: stop taking data, flush (the connection handlers flush on
                # cancel), keep serving /ingest/* until the store tier has consumed
                # what is left or the drain timeout passes, then leave the cluster.
                ingest_scope.cancel()
                await self._drain()
                with trio.move_on_after(2):
                    gossip.set_meta(self.meta())  # what it holds as it leaves
                    await gossip.leave()
                gossip_scope.cancel()
                nursery.cancel_scope.cancel()

    def _make_coordinator(self, client: httpx.AsyncClient) -> Coordinator:
        cfg = self.cfg
        return Coordinator(
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

    async def _serve_api(self, nursery: trio.Nursery, router: Router) -> None:
        """The API, and with a cluster key the members-only TLS port (same routes)."""
        cfg = self.cfg
        serve = functools.partial(
            serve_http, router, idle_timeout=cfg.api_idle_timeout, connections=self.api_connections,
        )
        if self.node_tls is not None:
            na = cfg.cluster_api or Addr(cfg.cluster.host, 0)
            self.bound.node = await nursery.start(
                functools.partial(serve, na.host, na.port, ssl_context=self.node_tls.server_context())
            )
        self.bound.api = await nursery.start(
            functools.partial(
                serve, cfg.api.host, cfg.api.port,
                configure=self.tls.configure_hypercorn if self.tls.on else None,
            )
        )

    def _make_gossip(self) -> Gossip:
        cfg = self.cfg
        return Gossip(
            self.id,
            cfg.role,
            bind=(cfg.cluster.host, cfg.cluster.port),
            advertise_host=self.advertise_host,
            seeds=cfg.peers,
            meta=self.meta(),
            keyring=self.keyring,
            probe_interval=cfg.gossip_timing.probe_interval,
            suspicion_timeout=cfg.gossip_timing.suspicion_timeout,
        )

    @staticmethod
    async def _run_gossip(
        gossip: Gossip, scope: trio.CancelScope, task_status: trio.TaskStatus[HostPort] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with scope:
            await gossip.run(task_status=task_status)

    def _start_store(self, nursery: trio.Nursery, side: StoreSide, client: httpx.AsyncClient) -> None:
        consumer = self.consumer = self._make_consumer(side, client)
        consumer.on_event = self._consumer_event
        if self.ingest is not None:  # a local flush need not wait for the poll
            self.ingest.log.on_flushed = consumer.wake
        nursery.start_soon(consumer.run)
        nursery.start_soon(side.maintenance.run)

    def _log_started(self) -> None:
        cfg, b = self.cfg, self.bound
        log.info(
            "oklog %s node %s: api %s, fast %s, durable %s, cluster %s, node (TLS) %s, peers %s",
            cfg.role, self.id, self._addr(b.api), self._addr(b.fast),
            self._addr(b.durable), self._addr(b.cluster),
            self._addr(b.node) or "none (no cluster key)",
            ",".join(cfg.peers) or "none",
        )

    async def _listeners(
        self, side: IngestSide, scope: trio.CancelScope, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        cfg, b = self.cfg, self.bound
        settings = self.ingest_settings()
        ilog = side.log
        access = ingest_gate(self.auth, self.tls.server_context() if self.tls.on else None)
        with scope:
            async with trio.open_nursery() as ln:
                tcp = functools.partial(serve_ingest, log_=ilog, settings=settings, stats=side.listeners,
                                        gate=self.gate, access=access)
                b.fast = await ln.start(functools.partial(tcp, cfg.ingest_fast.host, cfg.ingest_fast.port))
                b.durable = await ln.start(
                    functools.partial(tcp, cfg.ingest_durable.host, cfg.ingest_durable.port, durable=True)
                )
                b.bulk = await ln.start(
                    functools.partial(
                        serve_bulk, cfg.ingest_bulk.host, cfg.ingest_bulk.port, ilog, side.bulk,
                        idle_timeout=cfg.ingest_idle_timeout, gate=self.gate, retain=cfg.retain,
                        access=access,
                    )
                )
                await self._optional_listeners(ln, side, settings, access)
                task_status.started()

    async def _optional_listeners(
        self, ln: trio.Nursery, side: IngestSide, settings: IngestSettings, access: Any
    ) -> None:
        """Syslog (TCP and UDP), syslog over TLS and Fluent forward, each when asked for."""
        cfg, b, ilog = self.cfg, self.bound, side.log
        topic = cfg.syslog_topic.encode()
        if cfg.ingest_syslog is not None:
            b.syslog = await ln.start(
                functools.partial(
                    serve_syslog, cfg.ingest_syslog.host, cfg.ingest_syslog.port,
                    ilog, settings, side.syslog, topic=topic, gate=self.gate, window=self.event_window(),
                )
            )
        if cfg.ingest_syslog_tls is not None and access is not None:
            self._warn_token_line_only("-ingest.syslog-tls", "syslog", "rsyslog and syslog-ng")
            b.syslog_tls = await ln.start(
                functools.partial(
                    serve_syslog_tls, cfg.ingest_syslog_tls.host, cfg.ingest_syslog_tls.port,
                    ilog, settings, side.syslog, access, topic=topic, gate=self.gate,
                )
            )
        if cfg.ingest_fluent is not None:
            self._warn_token_line_only("-ingest.fluent", "Fluent", "Fluentd and Fluent Bit")
            b.fluent = await ln.start(
                functools.partial(
                    serve_fluent, cfg.ingest_fluent.host, cfg.ingest_fluent.port,
                    ilog, settings, side.fluent, window=self.event_window(), gate=self.gate,
                    access=access,
                )
            )

    def _warn_token_line_only(self, flag: str, clients: str, senders: str) -> None:
        """A port whose usual senders cannot get in: tokens on, no client certificates."""
        if self.auth.tokens is not None and not self.tls.client_ca:
            log.warning("%s with -auth.tokens but no -tls.client-ca: %s clients must open with "
                        "a token line, which %s cannot send", flag, clients, senders)

    def event_window(self) -> EventWindow:
        return EventWindow(self.cfg.event_time_past, self.cfg.event_time_future)

    def ingest_settings(self) -> IngestSettings:
        c = self.cfg
        return IngestSettings(
            c.segment_flush_size, c.segment_flush_age, c.max_record_size,
            topic=c.ingest_topic.encode(), max_connections=c.max_connections,
            idle_timeout=c.ingest_idle_timeout,
        )

    async def _publish_meta(self, gossip: Gossip) -> None:
        published = trio.current_time()
        lo = self.meta().get("store_lo_ms")
        while True:
            await trio.sleep(META_LOWERED_CHECK)
            written = self.store.log.take_oldest_written() if self.store is not None else "~"
            lowered = lo is not None and written != "~" and ulid_ms(written.encode("latin-1")) < lo
            if not lowered and trio.current_time() - published < META_INTERVAL:
                continue
            meta = self.meta()
            lo = meta.get("store_lo_ms")
            published = trio.current_time()
            gossip.set_meta(meta)

    def _make_consumer(self, side: StoreSide, client: httpx.AsyncClient) -> Consumer:
        cfg = self.cfg
        peers = _Peers(
            client,
            self._live,
            LocalIngest(self.ingest.log, self.id) if self.ingest is not None else None,
            LocalStore(side.log, self.id, side.immutable),
            self._takes_segfile,
        )
        return Consumer(
            sources=peers.ingest_sources,
            targets=peers.store_targets,
            replication_factor=cfg.replication_factor,
            batch_size=min(cfg.consume_batch_size, cfg.store_target_size),
            batch_age=cfg.store_target_age,
            limiter=self.scan_limiter,
            strict=bool(cfg.peers) and cfg.replication_factor > 1,
            grace=3 * cfg.gossip_timing.probe_interval + 1.0 if cfg.replication_factor > 1 else 0.0,
            level=cfg.store_level,
        )

    def _takes_segfile(self, node_id: str) -> bool:
        """Whether the member advertises that /store/replicate takes the segment files this version writes."""
        if self.gossip is None:
            return False
        return any(
            m.id == node_id and m.meta.get("replicate_segfile") == segfile.INDEX_VERSION for m in self.gossip.members()
        )

    async def _drain(self) -> None:
        if self.ingest is None:
            return
        with trio.move_on_after(self.cfg.drain_timeout):
            while True:
                st = self.ingest.log.stats()["segments"]
                if not any(st.values()):
                    return
                await trio.sleep(0.1)

    async def _sweep_pending(self, ilog: IngestLog) -> None:
        while True:
            await trio.sleep(PENDING_SWEEP)
            self._observe_ingest(time.monotonic())  # once a second: when writes stopped
            n = ilog.expire_pending()
            if n:
                log.warning("%d pending segments timed out; back to flushed", n)

    async def _watch_signals(self, shutdown: trio.Event) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for sig in signals:
                log.info("signal %s: shutting down gracefully", signal.Signals(sig).name)
                shutdown.set()
                return


class _Peers:
    """The consumer's sources and targets: the local halves for this node, one
    remote client per other member (kept while its address holds)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        live: Callable[[str], list[tuple[str, str | None]]],
        local_ingest: LocalIngest | None,
        local_store: LocalStore,
        takes_segfile: Callable[[str], bool],
    ) -> None:
        self.client = client
        self.takes_segfile = takes_segfile
        self.live = live
        self.local_ingest = local_ingest
        self.local_store = local_store
        self.sources: dict[str, RemoteIngest] = {}
        self.targets: dict[str, RemoteStore] = {}

    def ingest_sources(self) -> list[LocalIngest | RemoteIngest]:
        make = functools.partial(RemoteIngest, self.client)
        return _members_as(self.live("ingest"), self.local_ingest, self.sources, make)

    def store_targets(self) -> list[LocalStore | RemoteStore]:
        def make(api: str, node_id: str) -> RemoteStore:
            return RemoteStore(self.client, api, node_id, functools.partial(self.takes_segfile, node_id))

        return _members_as(self.live("store"), self.local_store, self.targets, make)


L = TypeVar("L")
R = TypeVar("R")


def _members_as(
    live: list[tuple[str, str | None]], local: L | None, remotes: dict[str, R], make: Callable[[str, str], R]
) -> list[L | R]:
    """Each live member as ``local`` (this node: api None) or its remote client
    (``make(api, node_id)``, kept in ``remotes`` by address)."""
    out: list[L | R] = []
    for node_id, api in live:
        if api is None:
            if local is not None:
                out.append(local)
            continue
        r = remotes.get(api)
        if r is None:
            r = remotes[api] = make(api, node_id)
        out.append(r)
    return out


def unreadable_row(member_id: str, state: str, is_self: bool) -> S.MemberRow:
    """A member whose row could not be rendered: every field present, unknowns null."""
    return {
        "id": member_id,
        "role": "",
        "gossip_addr": "",
        "api_addr": None,
        "state": state,
        "incarnation": 0,
        "meta_version": 0,
        "last_heard": None,
        "state_since": None,
        "self": is_self,
        "uptime_seconds": None,
        "meta": {},
        "error": "unreadable",
    }


def query_stats(c: Coordinator) -> S.QueryStats:
    return {
        "total": c.queries,
        "partial": c.partial,
        "members_skipped": c.members_skipped,
        "running": c.running,
        "rejected": c.rejected,
        "missing": _as(S.Missing, c.missing()),
        "read_repairs": c.read_repairs,
        "read_repair_records": c.read_repair_records,
    }
