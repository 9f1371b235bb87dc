"""Command line: parse arguments → config → call a runner. No logic here.

Flags accept the original single-dash form (``-from 5m``) and ``--from 5m``.

Only light modules are imported at the top: ``oklog query`` is run from scripts
and compared with grep, so its start-up is part of every query. logging,
dataclasses (oklog.node.config) and ctypes (oklog.malloc) are imported by the
commands that run a node.
"""

from __future__ import annotations

import argparse
import os
import sys

from oklog import units as U
from oklog.addr import parse_addr

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~5 ms)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from oklog.node.config import Addr, NodeConfig


def _flag(p: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    """Register ``-name`` and ``--name`` for one option; its help shows the
    default (as the flag would take it: 16MiB, 3s) unless it names one itself."""
    dest = kw.pop("dest", name.replace(".", "_").replace("-", "_"))
    shown = _shown_default(kw.get("default"), kw.get("type"))
    text = kw.get("help") or ""
    if shown and "default" not in text:
        kw["help"] = f"{text} (default: {shown})".strip().replace("%", "%%")
    p.add_argument(f"-{name}", f"--{name}", dest=dest, **kw)


def _shown_default(value: object, kind: object) -> str:
    """A default as one would type it; "" for none worth showing."""
    if value is None or value is False or value == "" or value == []:
        return ""
    if kind is _size and isinstance(value, int):
        for unit, n in (("GiB", U.GiB), ("MiB", U.MiB), ("KiB", U.KiB)):
            if value and value % n == 0:
                return f"{value // n}{unit}"
        return str(value)
    if kind is _duration and isinstance(value, int | float):
        v = float(value)
        for unit, n in (("h", 3600), ("m", 60), ("s", 1)):
            if v >= n and v % n == 0:
                return f"{int(v // n)}{unit}"
        return f"{round(v * 1000)}ms" if v else "0s"
    return str(value)


def _bool(text: str) -> bool:
    v = text.strip().lower()
    if v in ("1", "true", "t", "yes", "y", "on"):
        return True
    if v in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _size(text: str) -> int:
    try:
        return U.parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _duration(text: str) -> float:
    try:
        return U.parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _columns() -> int:
    """The terminal width as shutil.get_terminal_size() finds it, without importing shutil."""
    import os

    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, sized without shutil: argparse builds one per add_argument,
    and shutil (with its bz2, lzma and zlib imports) is ~4 ms of every start-up."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


def _parser(prog: str, help_: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog, description=help_, allow_abbrev=False, formatter_class=_HelpFormatter
    )


# -- oklog run ------------------------------------------------------------------------


def run_parser(prog: str = "oklog run", role: str | None = None) -> argparse.ArgumentParser:
    from oklog.node import config as C

    p = _parser(prog, "Run an oklog node (ingest, store or both).")
    if role is None:
        _flag(p, "role", default="ingeststore", choices=C.ROLES, help="node role (default ingeststore)")
    _listen_flags(p)
    _storage_flags(p)
    _cluster_flags(p)
    _limit_flags(p)
    return p


def _listen_flags(p: argparse.ArgumentParser) -> None:
    """Where the node listens, its peers and its directories."""
    _flag(p, "api", default=f"tcp://127.0.0.1:{U.DEFAULT_API_PORT}", help="HTTP API listen address")
    _flag(p, "ingest.fast", default=f"tcp://127.0.0.1:{U.DEFAULT_FAST_PORT}", help="fast ingest listen address")
    _flag(p, "ingest.durable", default=f"tcp://127.0.0.1:{U.DEFAULT_DURABLE_PORT}", help="durable ingest listen address")
    _flag(p, "ingest.bulk", default=f"tcp://127.0.0.1:{U.DEFAULT_BULK_PORT}", help="bulk ingest listen address")
    _flag(p, "cluster", default=f"tcp://127.0.0.1:{U.DEFAULT_CLUSTER_PORT}", help="cluster gossip listen address")
    _flag(p, "peer", action="append", default=[], help="cluster peer host:port (repeatable)")
    _flag(p, "ingest.path", default="data/ingest", help="ingest segment directory")
    _flag(p, "store.path", default="data/store", help="store segment directory")


def _storage_flags(p: argparse.ArgumentParser) -> None:
    """Ingest segments and the store: sizes, ages, retention, compression."""
    from oklog.node import config as C

    _flag(p, "ingest.segment-flush-size", type=_size, default=C.DEFAULT_SEGMENT_FLUSH_SIZE, help="flush an active segment at this size")
    _flag(p, "ingest.segment-flush-age", type=_duration, default=C.DEFAULT_SEGMENT_FLUSH_AGE, help="flush an active segment at this age")
    _flag(p, "ingest.segment-pending-timeout", type=_duration, default=C.DEFAULT_PENDING_TIMEOUT, help="pending segments older than this go back to flushed")
    _flag(p, "ingest.max-record-size", type=_size, default=C.DEFAULT_MAX_RECORD_SIZE, help="longer records are split (counted)")
    _flag(p, "store.segment-target-size", type=_size, default=C.DEFAULT_STORE_TARGET_SIZE, help="target store segment size")
    _flag(p, "store.segment-target-age", type=_duration, default=C.DEFAULT_STORE_TARGET_AGE, help="replicate a gathered batch after this long")
    _flag(p, "store.segment-replication-factor", type=int, default=None, help="copies of each record (default 1 alone, 2 in a cluster)")
    _flag(p, "store.segment-retain", type=_duration, default=C.DEFAULT_RETAIN, help="retention period")
    _flag(p, "store.segment-purge", type=_duration, default=C.DEFAULT_PURGE, help="purge trashed segments after")
    _flag(p, "store.max-disk-usage", type=_size, default=0, help="trash oldest segments above this size (0: no cap)")
    _flag(p, "store.consume-batch-size", type=_size, default=C.DEFAULT_CONSUME_BATCH, help="bytes gathered per consume cycle")
    _flag(p, "store.compression-level", type=int, default=3,
          help="zstd level of store segments (1-22; written plain, compressed by compaction within seconds, 1 MiB blocks)")
    _flag(p, "store.idle-level", type=int, default=9,
          help="zstd level segments of at least half the target size are recompressed to, in 8 MiB blocks, "
               "when compaction is idle (0: never)")
    _flag(p, "store.cold-level", type=int, default=19,
          help="zstd level cold segments are recompressed to, in 8 MiB blocks, when compaction is idle (0: never)")
    _flag(p, "store.cold-age", type=_duration, default=3600.0, help="a segment is cold this long after its newest record")


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    """Gossip, keys, tokens and TLS."""
    _flag(p, "cluster.advertise-addr", default="", help="host (or host:port) other members use to reach this node")
    _flag(p, "cluster.probe-interval", type=_duration, default=0.5, help="gossip probe interval")
    _flag(p, "cluster.suspicion-timeout", type=_duration, default=3.0, help="least wait before a suspect member is declared dead, times log10 of the cluster size (up to 4x that until others confirm)")
    _flag(p, "cluster.key", default="", metavar="FILE",
          help="cluster key file (oklog keygen): gossip encrypted and authenticated; first key sends, all receive")
    _flag(p, "cluster.api", default="", metavar="ADDR",
          help=f"with -cluster.key: members' TLS listener, node-to-node calls only (default: -cluster host, port {U.DEFAULT_NODE_PORT})")
    _flag(p, "insecure", action="store_true",
          help="allow listening beyond loopback or -peer without a cluster key / tokens (logged at every start)")
    _flag(p, "auth.tokens", default="", metavar="FILE",
          help="client tokens file, TOKEN ROLE NAME per line (roles ingest, query, admin); re-read on change or SIGHUP")
    _flag(p, "tls.cert", default="", metavar="FILE", help="TLS certificate (PEM) for the API and TCP ingest ports")
    _flag(p, "tls.key", default="", metavar="FILE", help="TLS private key (PEM) of -tls.cert")
    _flag(p, "tls.client-ca", default="", metavar="FILE", help="ask clients for certificates signed by this CA")
    _flag(p, "tls.ca", default="", metavar="FILE", help="CA to verify peers' TLS certificates (default: system CAs)")


def _limit_flags(p: argparse.ArgumentParser) -> None:
    """Connection and request limits, the push protocols, streams and logging."""
    _flag(p, "ingest.max-connections", type=int, default=0, help="refuse producer connections above this (0: no limit)")
    _flag(p, "ingest.idle-timeout", type=_duration, default=300.0, help="close TCP ingest and syslog connections silent this long (0: never)")
    _flag(p, "api.idle-timeout", type=_duration, default=30.0, help="close API connections that send no complete request head this long")
    _flag(p, "api.max-bodies-in-flight", type=_size, default=256 * 1024 * 1024, help="request bodies held at once; beyond it 503 with Retry-After")
    _flag(p, "ingest.drain-timeout", type=_duration, default=10.0, help="on SIGTERM, serve /ingest/* this long for the store tier to drain")
    _flag(p, "query.member-timeout", type=_duration, default=5.0, help="a store member that has not begun to answer a fanned-out query by then is reported missing (partial answer)")
    _flag(p, "query.max-concurrent", type=int, default=16, help="concurrent /store/query requests; more get 429 (0: no limit)")
    _flag(p, "ingest.syslog", default="", help="syslog listen address, TCP and UDP (RFC 5424/3164; off by default)")
    _flag(p, "ingest.syslog-tls", default="",
          help="syslog over TLS (RFC 5425) listen address, TCP (usually :6514; needs -tls.cert; off by default)")
    _flag(p, "ingest.syslog-topic", default="syslog", help="topic of syslog records")
    _flag(p, "ingest.topic", default="default",
          help="topic of records on the fast, durable and HTTP ingest ports (a connection or request may name its own)")
    _flag(p, "ingest.fluent", default="", help="Fluent forward protocol listen address, TCP (usually :24224; off by default)")
    _flag(p, "ingest.event-time-past", type=_duration, default=3600.0,
          help="push protocols' and syslog's event times up to this far back become the record's time (older: arrival time)")
    _flag(p, "ingest.event-time-future", type=_duration, default=300.0,
          help="event times up to this far ahead become the record's time")
    _flag(p, "ingest.otlp-topic-attributes", default="service.name",
          help="OTLP resource attributes whose first present value is the topic (comma-separated)")
    _flag(p, "ingest.loki-topic-labels", default="topic,job,app,application,service_name",
          help="Loki push labels whose first present value is the topic (comma-separated)")
    _flag(p, "stream.max-subscribers", type=int, default=256, help="live-tail subscribers per node; more get 503")
    _flag(p, "stream.write-timeout", type=_duration, default=60.0, help="end a stream whose client takes nothing this long")
    _flag(p, "log.format", default="text", choices=["text", "logfmt", "json"], help="format of the node's own logs")
    _flag(p, "log.level", default="info", choices=["debug", "info", "warning", "error"])


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _addr(text: str, port: int) -> Addr:
    from oklog.node import config as C

    host, p = parse_addr(text, port)
    return C.Addr(host, p)


def build_node_config(ns: argparse.Namespace, role: str) -> NodeConfig:
    """The node's config from its flags, after checking them (SystemExit says what is wrong)."""

    factor = ns.store_segment_replication_factor
    if factor is None:
        factor = 2 if ns.peer else 1
    if factor < 1:
        raise SystemExit("oklog: -store.segment-replication-factor must be at least 1")
    _check_levels(ns)
    _check_key(ns)
    _check_exposure(ns)
    if ns.cluster_api and not ns.cluster_key:
        raise SystemExit("oklog: -cluster.api is the members' TLS listener, made from the cluster key: give -cluster.key")
    _check_tls_and_tokens(ns)
    _check_topics_and_times(ns)
    return _node_config(ns, role, factor)


def _node_config(ns: argparse.Namespace, role: str, factor: int) -> NodeConfig:
    from oklog.node import config as C

    return C.NodeConfig(
        role=role,
        api=_addr(ns.api, U.DEFAULT_API_PORT),
        ingest_fast=_addr(ns.ingest_fast, U.DEFAULT_FAST_PORT),
        ingest_durable=_addr(ns.ingest_durable, U.DEFAULT_DURABLE_PORT),
        ingest_bulk=_addr(ns.ingest_bulk, U.DEFAULT_BULK_PORT),
        cluster=_addr(ns.cluster, U.DEFAULT_CLUSTER_PORT),
        peers=tuple(ns.peer),
        ingest_path=ns.ingest_path,
        store_path=ns.store_path,
        segment_flush_size=ns.ingest_segment_flush_size,
        segment_flush_age=ns.ingest_segment_flush_age,
        segment_pending_timeout=ns.ingest_segment_pending_timeout,
        store_target_size=ns.store_segment_target_size,
        store_target_age=ns.store_segment_target_age,
        consume_batch_size=ns.store_consume_batch_size,
        store_level=ns.store_compression_level,
        store_cold_level=ns.store_cold_level,
        store_idle_level=ns.store_idle_level,
        store_cold_age=ns.store_cold_age,
        replication_factor=factor,
        retain=ns.store_segment_retain,
        purge=ns.store_segment_purge,
        max_record_size=ns.ingest_max_record_size,
        max_disk_usage=ns.store_max_disk_usage,
        max_connections=ns.ingest_max_connections,
        max_bodies_in_flight=ns.api_max_bodies_in_flight,
        ingest_idle_timeout=ns.ingest_idle_timeout,
        api_idle_timeout=ns.api_idle_timeout,
        drain_timeout=ns.ingest_drain_timeout,
        member_timeout=ns.query_member_timeout,
        max_queries=ns.query_max_concurrent,
        ingest_syslog=_addr(ns.ingest_syslog, 5514) if ns.ingest_syslog else None,
        ingest_syslog_tls=_addr(ns.ingest_syslog_tls, 6514) if ns.ingest_syslog_tls else None,
        syslog_topic=ns.ingest_syslog_topic,
        ingest_topic=ns.ingest_topic,
        ingest_fluent=_addr(ns.ingest_fluent, 24224) if ns.ingest_fluent else None,
        event_time_past=ns.ingest_event_time_past,
        event_time_future=ns.ingest_event_time_future,
        otlp_topic_attributes=_names(ns.ingest_otlp_topic_attributes),
        loki_topic_labels=_names(ns.ingest_loki_topic_labels),
        stream_max_subscribers=ns.stream_max_subscribers,
        stream_write_timeout=ns.stream_write_timeout,
        advertise_host=parse_addr(ns.cluster_advertise_addr, 0)[0] if ns.cluster_advertise_addr else "",
        cluster_key=ns.cluster_key,
        cluster_api=(_addr(ns.cluster_api, U.DEFAULT_NODE_PORT) if ns.cluster_api
                     else C.Addr(_addr(ns.cluster, 0).host, U.DEFAULT_NODE_PORT)) if ns.cluster_key else None,
        insecure=ns.insecure,
        auth_tokens=ns.auth_tokens,
        tls_cert=ns.tls_cert,
        tls_key=ns.tls_key,
        tls_client_ca=ns.tls_client_ca,
        tls_ca=ns.tls_ca,
        gossip_timing=C.GossipTiming(probe_interval=ns.cluster_probe_interval, suspicion_timeout=ns.cluster_suspicion_timeout),
    )


def _check_levels(ns: argparse.Namespace) -> None:
    for flag, v, lo in (
        ("store.compression-level", ns.store_compression_level, 1),
        ("store.cold-level", ns.store_cold_level, 0),
        ("store.idle-level", ns.store_idle_level, 0),
    ):
        if not lo <= v <= 22:
            raise SystemExit(f"oklog: -{flag} must be {lo}..22 (zstd levels), got {v}")


def _check_topics_and_times(ns: argparse.Namespace) -> None:
    from oklog.records.record import RecordError, validate_topic

    for flag, value in (("ingest.topic", ns.ingest_topic), ("ingest.syslog-topic", ns.ingest_syslog_topic)):
        try:
            validate_topic(value)
        except RecordError as e:
            raise SystemExit(f"oklog: -{flag}: {e}") from None
    if not 0 <= ns.ingest_event_time_future <= 300:
        # The store refuses replicated ULIDs more than 5 minutes ahead of its clock.
        raise SystemExit("oklog: -ingest.event-time-future must be between 0s and 5m")
    if not 0 <= ns.ingest_event_time_past < ns.store_segment_retain:
        raise SystemExit("oklog: -ingest.event-time-past must be at least 0s and less than -store.segment-retain")


def _check_key(ns: argparse.Namespace) -> None:
    if ns.cluster_key:
        from oklog.cluster.keyring import KeyFileError, Keyring

        try:
            Keyring.load(ns.cluster_key)
        except KeyFileError as e:
            raise SystemExit(f"oklog: -cluster.key: {e}") from None


def _check_tls_and_tokens(ns: argparse.Namespace) -> None:
    """The TLS and tokens files can be read and make sense."""
    from oklog.net.tls import TLSConfig, check_files

    try:
        check_files(TLSConfig(ns.tls_cert, ns.tls_key, ns.tls_client_ca, ns.tls_ca))
    except ValueError as e:
        raise SystemExit(f"oklog: {e}") from None
    if ns.ingest_syslog_tls and not ns.tls_cert:
        raise SystemExit("oklog: -ingest.syslog-tls needs -tls.cert and -tls.key (the certificate it presents)")
    if ns.auth_tokens:
        from oklog.net.auth import TokenFileError, Tokens

        try:
            Tokens(ns.auth_tokens)
        except TokenFileError as e:
            raise SystemExit(f"oklog: {e}") from None


def _check_exposure(ns: argparse.Namespace) -> None:
    """Secure by default: beyond loopback, or in a cluster, only with a key (and tokens)."""
    if ns.insecure:
        return
    from oklog.net.auth import is_loopback

    listening = [("api", ns.api, True), ("ingest.fast", ns.ingest_fast, True),
                 ("ingest.durable", ns.ingest_durable, True), ("ingest.bulk", ns.ingest_bulk, True),
                 ("cluster", ns.cluster, False), ("ingest.syslog", ns.ingest_syslog, True),
                 ("ingest.fluent", ns.ingest_fluent, True), ("ingest.syslog-tls", ns.ingest_syslog_tls, True)]
    exposed = [(f, a.host, client) for f, text, client in listening if text
               for a in [_addr(text, 0)] if not is_loopback(a.host)]
    how = ("run `oklog keygen -o cluster.key` once, copy the file to every node and start each with "
           "`-cluster.key cluster.key`")
    if not ns.cluster_key:
        if ns.peer:
            raise SystemExit(f"oklog: -peer without a cluster key: anyone could join this cluster. To secure it, {how}. "
                             "(Or pass -insecure to run without, logged at every start.)")
        if exposed:
            f, host, _ = exposed[0]
            raise SystemExit(f"oklog: -{f} {host} listens beyond loopback without a cluster key. To secure it, {how}; "
                             "give clients tokens with `-auth.tokens FILE`. (Or pass -insecure to run without, "
                             "logged at every start.)")
    fluent_tls = bool(ns.tls_cert and ns.tls_client_ca)  # Fluent clients present certificates
    for f, host, _ in exposed:
        if f == "ingest.syslog" or (f == "ingest.fluent" and not fluent_tls):
            more = (" For syslog beyond loopback use -ingest.syslog-tls (TLS, clients with certificates "
                    "signed by -tls.client-ca)." if f == "ingest.syslog" else
                    " Beyond loopback it needs -tls.cert, -tls.key and -tls.client-ca: Fluent clients "
                    "(Fluent Bit tls.crt_file) present certificates, as they cannot send tokens.")
            raise SystemExit(f"oklog: -{f} {host}: this listener takes no tokens, so it listens on "
                             f"loopback only (a local relay forwards to it), or pass -insecure.{more}")
    if ns.cluster_key and not ns.auth_tokens:
        for f, host, client in exposed:
            if client:
                raise SystemExit(f"oklog: -{f} {host} takes clients beyond loopback without tokens: write a tokens "
                                 "file (a line `TOKEN ROLE NAME`, e.g. `echo \"$(oklog keygen) admin ops\" > tokens`) "
                                 "and pass `-auth.tokens tokens`. (Or pass -insecure.)")


def cmd_run(argv: list[str], role: str | None = None, prog: str = "oklog run") -> int:
    ns = run_parser(prog, role).parse_args(argv)
    try:
        cfg = build_node_config(ns, role or ns.role)
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    import logging

    from oklog.logfmt import configure_logging
    from oklog.malloc import tune_malloc

    tune_malloc()  # before the node allocates its buffers; see oklog.malloc
    configure_logging(ns.log_format, getattr(logging, ns.log_level.upper()))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    import trio

    from oklog.node.root import open_node

    try:
        trio.run(open_node(cfg).run)
    except (OSError, BaseExceptionGroup) as e:
        err = _first_os_error(e)
        if err is None:
            raise
        print(f"{prog}: {_start_failure(cfg, err)}", file=sys.stderr)
        return 1
    return 0


def _first_os_error(e: BaseException) -> OSError | None:
    if isinstance(e, OSError):
        return e
    if isinstance(e, BaseExceptionGroup):
        for x in e.exceptions:
            found = _first_os_error(x)
            if found is not None:
                return found
    return None


def _start_failure(cfg: NodeConfig, err: OSError) -> str:
    """What stopped the node, in one line: a listen address that cannot be
    bound names its flag (the socket error itself does not say which)."""
    import socket

    from oklog.human import describe_error

    listens = [("api", cfg.api, False), ("ingest.fast", cfg.ingest_fast, False),
               ("ingest.durable", cfg.ingest_durable, False), ("ingest.bulk", cfg.ingest_bulk, False),
               ("cluster", cfg.cluster, True)]
    if cfg.ingest_syslog is not None:
        listens.append(("ingest.syslog", cfg.ingest_syslog, True))
    if cfg.ingest_syslog_tls is not None:
        listens.append(("ingest.syslog-tls", cfg.ingest_syslog_tls, False))
    for flag, addr, udp_too in listens:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp_too else (socket.SOCK_STREAM,):
            try:
                infos = socket.getaddrinfo(addr.host, addr.port, type=kind)
                with socket.socket(infos[0][0], kind) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(infos[0][4])
            except OSError as probe:
                return f"cannot listen on -{flag} {addr.host}:{addr.port}: {describe_error(probe)}"
    return f"cannot start: {describe_error(err)}"


# -- clients ----------------------------------------------------------------------------


def _range_flags(p: argparse.ArgumentParser, since: str, note: str = "") -> None:
    """``-from`` (default ``since``) and ``-to`` of a command over a time range."""
    _flag(p, "from", default=since, help=f"from: duration ago (5m), RFC 3339 time or ULID{note}")
    _flag(p, "to", default="now", help="to: duration ago, RFC 3339 time, ULID or now")


def _access_flags(p: argparse.ArgumentParser, tool: bool = False) -> None:
    """``-token`` and ``-tls.ca`` of a client command; an operator's tool (``tool``),
    which calls every member, may also sign as a member with ``-cluster.key``."""
    if not tool:
        _flag(p, "token", default="", help="client token (default $OKLOG_TOKEN)")
        _flag(p, "tls.ca", default="", metavar="FILE", help="CA to verify the node's TLS certificate (and use https)")
        return
    _flag(p, "token", default="", help="admin token (default $OKLOG_TOKEN)")
    _flag(p, "tls.ca", default="", metavar="FILE", help="CA to verify the nodes' TLS certificates (and use https)")
    _flag(p, "cluster.key", default="", metavar="FILE", help="sign requests as a member instead of a token")


def cmd_forward(argv: list[str]) -> int:
    p = _parser("oklog forward", "Forward stdin to ingest nodes, one record per line.")
    p.add_argument("addrs", nargs="+", metavar="HOST[:PORT]", help="ingest node(s); port 7651 by default")
    _flag(p, "prefix", action="append", default=[], help="prefix each record (repeatable)")
    _flag(p, "backoff", type=_duration, default=1.0, help="max reconnect backoff")
    _flag(p, "mode", default="fast", choices=["fast", "durable", "bulk"], help="ingest port to use (default fast)")
    _flag(p, "topic", default="", help="topic of the records (default: the node's -ingest.topic; bulk: default)")
    _flag(p, "buffer", type=_size, default=64 << 20, help="bytes buffered while no node is reachable")
    _flag(p, "policy", default="block", choices=["block", "drop"], help="when the buffer is full")
    _flag(p, "write-timeout", type=_duration, default=10.0,
          help="fail over when a node accepts no data (durable: acknowledges nothing) for this long")
    _flag(p, "give-up", type=_duration, default=60.0,
          help="once the input has ended, exit 1 if nothing is delivered for this long")
    _access_flags(p)
    ns = p.parse_args(argv)
    from oklog.cli.forward import forward_main

    return forward_main(
        ns.addrs, prefixes=ns.prefix, max_backoff=ns.backoff, mode=ns.mode,
        topic=ns.topic, buffer=ns.buffer, policy=ns.policy,
        write_timeout=ns.write_timeout, give_up=ns.give_up, token=ns.token, tls_ca=ns.tls_ca,
    )


class _VerboseOrTerm(argparse.Action):
    """``-v TERM`` excludes TERM, as grep's -v; a bare ``-v`` is the original
    CLI's verbose flag (statistics to stderr)."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if values is None:
            ns.v = True
        else:
            ns.without = [*ns.without, values]


def query_parser() -> argparse.ArgumentParser:
    p = _parser("oklog query", "Query the cluster; matching records to stdout.")
    _flag(p, "store", default="localhost:7650", help="store node API address")
    _range_flags(p, "1h")
    _flag(p, "q", action="append", default=[], help="query: substring, or regex with -regex; repeat it: every term must match")
    _flag(p, "regex", type=_bool, nargs="?", const=True, default=False, help="q is a regular expression (RE2 syntax)")
    _flag(p, "i", action="store_true", help="case-insensitive terms")
    _flag(p, "topic", default="", help="only records of this topic")
    _flag(p, "stats", action="store_true", help="print statistics only, scanning nothing")
    _flag(p, "ulid", action="store_true", help="print each record's ULID")
    _flag(p, "time", action="store_true", help="print each record's time")
    _flag(p, "json", action="store_true", help="one JSON object per record")
    _flag(p, "v", action=_VerboseOrTerm, nargs="?", default=False, help="-v TERM (repeatable): records whose line holds TERM do not match; -v alone: statistics to stderr")
    p.set_defaults(without=[])
    _flag(p, "timeout", type=_duration, default=0.0, help="give up after this long (0: never)")
    _access_flags(p)
    _flag(p, "count", action="store_true", help="print the number of matching records (exact, cluster-wide)")
    _flag(p, "where", action="append", default=[], help="a condition on a field of JSON or logfmt lines: status>=500, level=error, msg~timeout (= != < <= > >= ~ !~; repeat it: all must hold)")
    _flag(p, "fields", default="", help="print just these fields (a,b) of JSON or logfmt lines, as logfmt")
    _flag(p, "by", default="", help="with -count: counts per value of this field (or topic)")
    _flag(p, "top", type=int, default=0, help="with -by: only the N largest counts")
    _flag(p, "A", type=int, default=None, help="print N records of the same topic after each match")
    _flag(p, "B", type=int, default=None, help="print N records of the same topic before each match")
    _flag(p, "C", type=int, default=None, help="print N records of the same topic before and after each match")
    _flag(p, "hist", default="", help="matches per time bucket of this step (1m, 1h): bars on a terminal, TIME<TAB>COUNT piped, JSON with -json")
    return p


def cmd_query(argv: list[str]) -> int:
    ns = query_parser().parse_args(argv)
    from oklog.cli.query import query_main

    return query_main(ns)


def cmd_topics(argv: list[str]) -> int:
    p = _parser("oklog topics", "Every topic in the cluster: records, bytes, first and last time.")
    _flag(p, "store", default="localhost:7650", help="store node API address")
    _range_flags(p, "", " (default: the beginning)")
    _flag(p, "json", action="store_true", help="the JSON answer of /store/topics")
    _flag(p, "timeout", type=_duration, default=0.0, help="give up after this long (0: never)")
    _access_flags(p)
    ns = p.parse_args(argv)
    from oklog.cli.query import topics_main

    return topics_main(ns)


def cmd_stream(argv: list[str]) -> int:
    p = _parser("oklog stream", "Live tail of matching records from the whole cluster.")
    _flag(p, "store", default="localhost:7650", help="any node's API address")
    _flag(p, "q", default="", help="filter: substring, or regex with -regex")
    _flag(p, "regex", type=_bool, nargs="?", const=True, default=False, help="q is a regular expression")
    _flag(p, "topic", default="", help="only this topic")
    _flag(p, "ulid", action="store_true", help="print each record's ULID")
    _flag(p, "time", action="store_true", help="print each record's time")
    _flag(p, "window", type=_duration, default=3.0, help="deduplication window")
    _flag(p, "catchup", type=_duration, default=15.0, help="after resuming on another node, query the store this long for records missed")
    _access_flags(p)
    ns = p.parse_args(argv)
    from oklog.cli.stream import stream_main

    return stream_main(ns)


def _tool_flags(p: argparse.ArgumentParser) -> None:
    """The closing flags of an operator's tool that walks every store member."""
    _flag(p, "quiet", action="store_true", help="no progress bar")
    _access_flags(p, tool=True)


def cmd_repair(argv: list[str]) -> int:
    p = _parser("oklog repair", "Restore the replication factor of every record in a time range.")
    _flag(p, "store", default="localhost:7650", help="any store node's API address")
    _range_flags(p, "168h")
    _flag(p, "step", type=_duration, default=0.0,
          help="widest time slice examined at once (default: the whole range; halved while large)")
    _tool_flags(p)
    ns = p.parse_args(argv)
    from oklog.cli.repair import repair_main

    return repair_main(ns)


def cmd_rebalance(argv: list[str]) -> int:
    p = _parser("oklog rebalance", "Move segments between store members until disk usage evens out.")
    _flag(p, "store", default="localhost:7650", help="any store node's API address")
    _flag(p, "ratio", type=float, default=1.5, help="stop when largest/smallest store is at most this")
    _tool_flags(p)
    ns = p.parse_args(argv)
    from oklog.cli.repair import rebalance_main

    return rebalance_main(ns)


def cmd_testsvc(argv: list[str]) -> int:
    p = _parser("oklog testsvc", "Emit records at a fixed rate on stdout.")
    _flag(p, "id", default="foo", help="service id in each record")
    _flag(p, "rate", type=float, default=5.0, help="records per second")
    _flag(p, "size", type=int, default=80, help="approximate record size")
    _flag(p, "count", type=int, default=0, help="stop after this many (0: never)")
    ns = p.parse_args(argv)
    from oklog.cli.testsvc import testsvc_main

    return testsvc_main(ns.id, ns.rate, ns.size, ns.count)


def cmd_tui(argv: list[str]) -> int:
    p = _parser("oklog tui", "Live dashboard of a running cluster (attach to any node).")
    _flag(p, "node", default="localhost:7650", help="any node's API address HOST:PORT")
    _flag(p, "refresh", type=_duration, default=2.0, help="refresh interval (seconds or a duration)")
    _access_flags(p)
    ns = p.parse_args(argv)
    from oklog.net.auth import cli_http_kwargs
    from oklog.tui.app import make_app
    from oklog.tui.client import NodeClient

    http = cli_http_kwargs(ns)
    make_app(ns.node, ns.refresh, client=lambda n: NodeClient(n, state_timeout=max(2.0, ns.refresh), http=http)).run()
    return 0


def cmd_keygen(argv: list[str]) -> int:
    p = _parser("oklog keygen", "Write a new cluster key (give every node the file with -cluster.key).")
    _flag(p, "o", default="", metavar="FILE", help="write a new key file (mode 0600; never overwrites); "
          "without it the key line goes to stdout, to add to an existing file when rotating")
    ns = p.parse_args(argv)
    from oklog.cluster.keyring import new_key

    line = new_key() + "\n"
    if not ns.o:
        sys.stdout.write(line)
        return 0
    try:
        fd = os.open(ns.o, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        print(f"oklog keygen: {ns.o}: {e.strerror}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as f:
        f.write("# oklog cluster key ring: the first key sends, every key receives\n" + line)
    return 0


def cmd_role(role: str) -> Callable[[list[str]], int]:
    return lambda argv: cmd_run(argv, role, f"oklog {role}")


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "run": (cmd_run, "run a node (-role ingest|store|ingeststore)"),
    "ingeststore": (cmd_role("ingeststore"), "run an ingest+store node"),
    "ingest": (cmd_role("ingest"), "run an ingest node"),
    "store": (cmd_role("store"), "run a store node"),
    "forward": (cmd_forward, "forward stdin to ingest nodes"),
    "query": (cmd_query, "query the cluster"),
    "topics": (cmd_topics, "topics with their records, bytes and first/last time"),
    "stream": (cmd_stream, "live tail of the cluster"),
    "repair": (cmd_repair, "restore the replication factor of a time range"),
    "rebalance": (cmd_rebalance, "even out store disk usage across members"),
    "testsvc": (cmd_testsvc, "emit test records"),
    "tui": (cmd_tui, "live dashboard of a running cluster"),
    "keygen": (cmd_keygen, "write a cluster key file (-cluster.key)"),
}


def usage() -> str:
    lines = ["usage: oklog <command> [flags]", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run 'oklog <command> -h' for a command's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    entry = COMMANDS.get(name)
    if entry is None:
        print(f"oklog: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        return entry[0](rest)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader stopped (| head): no traceback, and nothing left to flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
