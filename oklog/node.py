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

import logging
import os
import signal
import time
from dataclasses import dataclass, field

import trio

from oklog.config import NodeConfig
from oklog.fs import FS, RealFS
from oklog.http import Request, Response, Router, serve_http
from oklog.ingest.api import LocalIngest, ingest_router
from oklog.ingest.listener import IngestSettings, ListenerStats, serve_ingest
from oklog.ingest.log import IngestLog
from oklog.store.api import LocalStore, store_router
from oklog.store.compact import Maintenance
from oklog.store.consumer import Consumer
from oklog.store.log import StoreLog

log = logging.getLogger("oklog.node")

PENDING_SWEEP = 1.0
DRAIN_TIMEOUT = 10.0


@dataclass
class Bound:
    """Where the node's services actually listen (ports may have been 0)."""

    api: tuple[str, int] | None = None
    fast: tuple[str, int] | None = None
    durable: tuple[str, int] | None = None
    extra: dict = field(default_factory=dict)


class Node:
    def __init__(self, cfg: NodeConfig, fs: FS | None = None) -> None:
        self.cfg = cfg
        self.fs = fs or RealFS()
        self.started = time.time()
        self.id = cfg.extra.get("id") or f"{os.uname().nodename}-{os.getpid()}"
        self.bound = Bound()
        self.scan_limiter = trio.CapacityLimiter(max(1, os.cpu_count() or 1))
        self.ingest_log: IngestLog | None = None
        self.store_log: StoreLog | None = None
        self.listener_stats = ListenerStats()
        self.consumer: Consumer | None = None
        self.maintenance: Maintenance | None = None
        if cfg.is_ingest:
            self.ingest_log = IngestLog(self.fs, cfg.ingest_path, cfg.segment_pending_timeout)
            report = self.ingest_log.recover()
            if report.reactivated or report.torn_bytes:
                log.info(
                    "ingest recovery: %d segments back to flushed, %d torn bytes cut",
                    report.reactivated,
                    report.torn_bytes,
                )
        if cfg.is_store:
            self.store_log = StoreLog(self.fs, cfg.store_path)
            self.maintenance = Maintenance(
                self.store_log,
                cfg.store_target_size,
                cfg.retain,
                cfg.purge,
                trio.CapacityLimiter(1),
                cfg.max_disk_usage,
            )
            for q in self.store_log.quarantined:
                log.warning("quarantined store segment %s", q)

    # -- wiring -------------------------------------------------------------------

    def router(self) -> Router:
        r = Router()
        if self.ingest_log is not None:
            r.mount(ingest_router(self.ingest_log))
        if self.store_log is not None:
            r.mount(store_router(self.store_log, self.scan_limiter))
        r.add("GET", "/cluster/state", self._state)
        r.add("GET", "/store/_clusterstate", self._state)
        r.add("GET", "/health", self._health)
        return r

    def state(self) -> dict:
        cfg = self.cfg
        me = {
            "id": self.id,
            "role": cfg.role,
            "api_addr": _addr(self.bound.api),
            "fast_addr": _addr(self.bound.fast),
            "durable_addr": _addr(self.bound.durable),
            "state": "alive",
            "incarnation": 0,
            "last_heard": time.time(),
            "uptime_seconds": round(time.time() - self.started, 3),
        }
        pipeline: dict = {"time": time.time()}
        if self.ingest_log is not None:
            pipeline["ingest"] = self.ingest_log.stats() | {
                "connections": self.listener_stats.connections,
                "connections_total": self.listener_stats.connections_total,
                "records_split": self.listener_stats.records_split,
            }
        if self.store_log is not None:
            pipeline["store"] = self.store_log.stats()
        if self.consumer is not None:
            pipeline["consumer"] = vars(self.consumer.stats).copy()
        if self.maintenance is not None:
            pipeline["compaction"] = vars(self.maintenance.stats).copy()
        return {
            "self": self.id,
            "members": [me],
            "pipeline": pipeline,
            "replication_factor": cfg.replication_factor,
        }

    async def _state(self, req: Request) -> Response:
        return Response.json(self.state())

    async def _health(self, req: Request) -> Response:
        return Response(200, b"ok\n")

    # -- running --------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            self.bound.api = await nursery.start(
                serve_http, self.router(), cfg.api.host, cfg.api.port
            )
            ingest_scope = trio.CancelScope()
            if self.ingest_log is not None:
                settings = IngestSettings(
                    cfg.segment_flush_size, cfg.segment_flush_age, cfg.max_record_size
                )
                ilog = self.ingest_log

                async def listeners(task_status=trio.TASK_STATUS_IGNORED) -> None:
                    with ingest_scope:
                        async with trio.open_nursery() as ln:
                            self.bound.fast = await ln.start(
                                serve_ingest, cfg.ingest_fast.host, cfg.ingest_fast.port,
                                ilog, settings, self.listener_stats,
                            )
                            self.bound.durable = await ln.start(
                                _serve_durable, cfg.ingest_durable.host, cfg.ingest_durable.port,
                                ilog, settings, self.listener_stats,
                            )
                            task_status.started()

                await nursery.start(listeners)
                nursery.start_soon(self._sweep_pending)
            if self.store_log is not None:
                self.consumer = self._make_consumer()
                nursery.start_soon(self.consumer.run)
                assert self.maintenance is not None
                nursery.start_soon(self.maintenance.run)
            log.info(
                "oklog %s node %s: api %s, fast %s, durable %s",
                cfg.role, self.id, _addr(self.bound.api), _addr(self.bound.fast),
                _addr(self.bound.durable),
            )
            task_status.started(self.bound)
            nursery.start_soon(self._watch_signals, shutdown)
            await shutdown.wait()
            # Graceful: stop taking data, flush (the connection handlers flush on
            # cancel), let the store tier consume what is left, then stop.
            ingest_scope.cancel()
            await self._drain()
            nursery.cancel_scope.cancel()

    def _make_consumer(self) -> Consumer:
        assert self.store_log is not None
        local_store = LocalStore(self.store_log)
        sources = [LocalIngest(self.ingest_log)] if self.ingest_log is not None else []
        return Consumer(
            sources=lambda: sources,
            targets=lambda: [local_store],
            replication_factor=self.cfg.replication_factor,
            batch_size=min(self.cfg.consume_batch_size, self.cfg.store_target_size),
            batch_age=self.cfg.store_target_age,
            limiter=self.scan_limiter,
        )

    async def _drain(self) -> None:
        if self.ingest_log is None or self.consumer is None:
            return
        with trio.move_on_after(self.cfg.extra.get("drain_timeout", DRAIN_TIMEOUT)):
            while True:
                st = self.ingest_log.stats()["segments"]
                if not any(st.values()):
                    return
                await trio.sleep(0.1)

    async def _sweep_pending(self) -> None:
        assert self.ingest_log is not None
        while True:
            await trio.sleep(PENDING_SWEEP)
            n = self.ingest_log.expire_pending()
            if n:
                log.warning("%d pending segments timed out; back to flushed", n)

    async def _watch_signals(self, shutdown: trio.Event) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for sig in signals:
                log.info("signal %s: shutting down gracefully", signal.Signals(sig).name)
                shutdown.set()
                return


async def _serve_durable(host, port, ilog, settings, stats, task_status=trio.TASK_STATUS_IGNORED):
    await serve_ingest(host, port, ilog, settings, stats, durable=True, task_status=task_status)


def _addr(a: tuple[str, int] | None) -> str | None:
    if a is None:
        return None
    host = a[0] if a[0] not in ("", "0.0.0.0") else "127.0.0.1"
    return f"{host}:{a[1]}"
