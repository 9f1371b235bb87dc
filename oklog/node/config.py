"""Typed, frozen settings of a node; defaults as named constants."""

from __future__ import annotations

from dataclasses import dataclass, field

from oklog.units import (
    DEFAULT_API_PORT,
    DEFAULT_BULK_PORT,
    DEFAULT_CLUSTER_PORT,
    DEFAULT_DURABLE_PORT,
    DEFAULT_FAST_PORT,
    DEFAULT_NODE_PORT,
    GiB,
    KiB,
    MiB,
    parse_duration,
    parse_size,
)

# The units are re-exported: oklog.node.config is their historical home.
__all__ = [
    "DEFAULT_API_PORT",
    "DEFAULT_BULK_PORT",
    "DEFAULT_CLUSTER_PORT",
    "DEFAULT_DURABLE_PORT",
    "DEFAULT_FAST_PORT",
    "DEFAULT_NODE_PORT",
    "GiB",
    "KiB",
    "MiB",
    "parse_duration",
    "parse_size",
    "DEFAULT_SEGMENT_FLUSH_SIZE",
    "DEFAULT_PROBE_INTERVAL",
    "DEFAULT_SUSPICION_TIMEOUT",
    "GossipTiming",
    "DEFAULT_SEGMENT_FLUSH_AGE",
    "DEFAULT_PENDING_TIMEOUT",
    "DEFAULT_STORE_TARGET_SIZE",
    "DEFAULT_STORE_TARGET_AGE",
    "DEFAULT_CONSUME_BATCH",
    "DEFAULT_RETAIN",
    "DEFAULT_PURGE",
    "DEFAULT_MAX_RECORD_SIZE",
    "ROLES",
    "Addr",
    "NodeConfig",
]

DEFAULT_SEGMENT_FLUSH_SIZE = 16 * MiB
DEFAULT_PROBE_INTERVAL = 0.5  # seconds between gossip probes (oklog.cluster.transport's default)
DEFAULT_SUSPICION_TIMEOUT = 3.0  # seconds a suspect member has to refute before it is dead


DEFAULT_SEGMENT_FLUSH_AGE = 3.0
DEFAULT_PENDING_TIMEOUT = 60.0
DEFAULT_STORE_TARGET_SIZE = 128 * MiB
DEFAULT_STORE_TARGET_AGE = 3.0
DEFAULT_CONSUME_BATCH = 16 * MiB
DEFAULT_RETAIN = 7 * 24 * 3600.0
DEFAULT_PURGE = 24 * 3600.0
DEFAULT_MAX_RECORD_SIZE = 1 * MiB

ROLES = ("ingest", "store", "ingeststore")


@dataclass(frozen=True)
class Addr:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class GossipTiming:
    """How fast gossip probes and gives up on a silent member."""

    probe_interval: float = DEFAULT_PROBE_INTERVAL
    suspicion_timeout: float = DEFAULT_SUSPICION_TIMEOUT


@dataclass(frozen=True)
class NodeConfig:
    role: str = "ingeststore"
    api: Addr = Addr("0.0.0.0", DEFAULT_API_PORT)
    ingest_fast: Addr = Addr("0.0.0.0", DEFAULT_FAST_PORT)
    ingest_durable: Addr = Addr("0.0.0.0", DEFAULT_DURABLE_PORT)
    ingest_bulk: Addr = Addr("0.0.0.0", DEFAULT_BULK_PORT)
    cluster: Addr = Addr("0.0.0.0", DEFAULT_CLUSTER_PORT)
    peers: tuple[str, ...] = ()
    ingest_path: str = "data/ingest"
    store_path: str = "data/store"
    segment_flush_size: int = DEFAULT_SEGMENT_FLUSH_SIZE
    segment_flush_age: float = DEFAULT_SEGMENT_FLUSH_AGE
    segment_pending_timeout: float = DEFAULT_PENDING_TIMEOUT
    store_target_size: int = DEFAULT_STORE_TARGET_SIZE
    store_target_age: float = DEFAULT_STORE_TARGET_AGE
    store_level: int = 3  # zstd level compaction compresses store segments with (1 MiB blocks)
    store_idle_level: int = 9  # of full segments, recompressed in 8 MiB blocks when idle (0: never)
    store_cold_level: int = 19  # of cold segments, recompressed in 8 MiB blocks when idle (0: never)
    store_cold_age: float = 3600.0  # a segment is cold this long after its newest record
    consume_batch_size: int = DEFAULT_CONSUME_BATCH
    replication_factor: int = 1
    retain: float = DEFAULT_RETAIN
    purge: float = DEFAULT_PURGE
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE
    max_disk_usage: int = 0  # 0: no cap
    max_connections: int = 0  # 0: unlimited
    max_bodies_in_flight: int = 256 * MiB  # request bodies held at once across the API
    ingest_idle_timeout: float = 300.0  # seconds a TCP ingest connection may send nothing
    api_idle_timeout: float = 30.0  # seconds an API connection may take to send a request's head
    drain_timeout: float = 10.0
    member_timeout: float = 5.0
    max_queries: int = 16  # concurrent /store/query requests (0: no limit)
    advertise_host: str = ""
    node_id: str = ""
    cluster_key: str = ""  # key file: gossip sealed with AES-GCM (oklog.cluster.keyring)
    cluster_api: Addr | None = None  # members' TLS listener (oklog.cluster.nodetls); None: cluster host, DEFAULT_NODE_PORT
    insecure: bool = False  # no cluster key, yet other than loopback or -peer (oklog.net.auth)
    auth_tokens: str = ""  # client tokens file: TOKEN ROLE NAME lines (oklog.net.auth)
    tls_cert: str = ""  # TLS on the API and TCP ingest ports (oklog.net.tls)
    tls_key: str = ""
    tls_client_ca: str = ""
    tls_ca: str = ""  # CA this node trusts calling its peers over TLS
    ingest_syslog: Addr | None = None
    syslog_topic: str = "syslog"
    ingest_syslog_tls: Addr | None = None  # syslog over TLS (RFC 5425), TCP; needs tls_cert
    ingest_topic: str = "default"
    ingest_fluent: Addr | None = None  # Fluent forward protocol listener (off by default)
    event_time_past: float = 3600.0  # push protocols' event times this far back stamp the ULID
    event_time_future: float = 300.0  # ... and this far ahead
    otlp_topic_attributes: tuple[str, ...] = ("service.name",)
    loki_topic_labels: tuple[str, ...] = ("topic", "job", "app", "application", "service_name")
    stream_max_subscribers: int = 256  # live-tail subscribers (and /store/stream clients) per node
    stream_write_timeout: float = 60.0  # a stream whose client takes nothing this long ends
    gossip_timing: GossipTiming = field(default_factory=GossipTiming, compare=False)

    @property
    def is_ingest(self) -> bool:
        return self.role in ("ingest", "ingeststore")

    @property
    def is_store(self) -> bool:
        return self.role in ("store", "ingeststore")
