"""Typed, frozen settings of a node; defaults as named constants."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_API_PORT = 7650
DEFAULT_FAST_PORT = 7651
DEFAULT_DURABLE_PORT = 7652
DEFAULT_BULK_PORT = 7653
DEFAULT_CLUSTER_PORT = 7659

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

DEFAULT_SEGMENT_FLUSH_SIZE = 16 * MiB
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
    consume_batch_size: int = DEFAULT_CONSUME_BATCH
    replication_factor: int = 1
    retain: float = DEFAULT_RETAIN
    purge: float = DEFAULT_PURGE
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE
    max_disk_usage: int = 0  # 0: no cap
    max_connections: int = 0  # 0: unlimited
    drain_timeout: float = 10.0
    member_timeout: float = 15.0
    advertise_host: str = ""
    node_id: str = ""
    ingest_syslog: Addr | None = None
    syslog_topic: str = "syslog"
    gossip_timing: dict = field(default_factory=dict, compare=False)
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def is_ingest(self) -> bool:
        return self.role in ("ingest", "ingeststore")

    @property
    def is_store(self) -> bool:
        return self.role in ("store", "ingeststore")


_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "kib": KiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
}


def parse_size(text: str) -> int:
    """``16MB``, ``16MiB``, ``512k``, ``1048576`` → bytes (binary units)."""
    t = text.strip().lower().replace("_", "")
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num) :]
    if unit not in _UNITS or not num:
        raise ValueError(f"bad size {text!r} (examples: 16MiB, 512k, 1048576)")
    value = float(num) * _UNITS[unit]
    if value < 0:
        raise ValueError(f"negative size {text!r}")
    return int(value)


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Go-style durations: ``3s``, ``1m30s``, ``168h``, ``500ms``, ``2d``; a bare number is seconds."""
    import re

    t = text.strip()
    if not t:
        raise ValueError("empty duration")
    try:
        return float(t)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)", t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(t) or pos == 0:
        raise ValueError(f"bad duration {text!r} (examples: 3s, 5m, 1h30m, 168h)")
    return total
