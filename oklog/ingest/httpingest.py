"""HTTP ingest for the logging ecosystem: NDJSON and the Loki push API.

``httpingest_router`` adds two endpoints to the node's HTTP API:

``POST /ingest/jsonline?topic=&message_field=&time_field=``
    NDJSON, one record per line (``\\n`` or ``\\r\\n`` terminated; blank lines
    are skipped). From a JSON object the record line is the value of
    ``message_field`` (default ``message``; ``msg``, ``log`` and ``line`` are
    tried next). A string value is taken as its UTF-8 text; any other JSON value
    is written as compact JSON. An object with none of these fields is kept
    whole: the line is the producer's JSON text exactly as sent. A top-level
    JSON string is its text. A line that is not valid JSON (or not UTF-8) is
    kept verbatim and counted (``invalid_json``). With ``time_field=ts`` the
    line becomes ``<time> <message>`` so the producer's time is not lost when
    only the message is extracted, and that time (RFC 3339 or epoch
    s/ms/us/ns) is the record's event time (``oklog.ingest.eventtime``). ``topic`` (default the node's default topic) must be a
    valid topic, else 400. The answer is ``200`` with a JSON summary
    ``{"records": n, "invalid_json": k, "segments": [...]}``.

``POST /loki/api/v1/push?topic=LABEL``
    The Loki push API, in both its forms: JSON (any Content-Type but
    protobuf), and ``application/x-protobuf``, a snappy-compressed (block
    format) ``logproto.PushRequest``, what Promtail, Alloy and Vector send by
    default. The JSON form::

        {"streams": [{"stream": {"job": "nginx", "host": "a"},
                      "values": [["<unix ns>", "<line>"], ...]}]}

    Design choices, since oklog records carry a topic but no labels:

    * topic: the value of the label named by the ``topic`` query parameter
      if given and present, else of the first present of the configured
      labels (``-ingest.loki-topic-labels``, default ``topic``, ``job``,
      ``app``, ``application``, ``service_name``). Characters outside ``[A-Za-z0-9_-]`` become ``_`` and leading
      ``_``/``-`` are dropped; if nothing usable is left, ``default``.
    * line: the stream's labels in logfmt form, sorted by name and wrapped in
      braces, then a space, then the Loki line: ``{host=a,job=nginx} GET /``.
      Values with spaces, ``,``, ``=``, quotes or braces are double-quoted with
      backslash escapes, so the prefix parses back unambiguously. A stream
      with no labels gets no prefix.
    * the entry's nanosecond timestamp must be a decimal string (else 400); it
      is the record's event time (``oklog.ingest.eventtime``: the ULID's time
      within a window around now, else arrival time with the time in front of
      the line). A third element (structured metadata) is ignored.
    * the answer is ``204 No Content``, as Loki's.

``POST /insert/jsonline?_msg_field=&_time_field=&_stream_fields=``
    VictoriaLogs JSON lines (``parse_vlogs``). OTLP/HTTP logs and the
    Elasticsearch bulk API are in ``oklog.ingest.otlp`` and
    ``oklog.ingest.esbulk``; their routes are mounted here.

Common to all:

* An LF inside a JSON string cannot be inside a record (LF ends a record), so
  it is written as the two characters ``\\n``; every other byte is kept.
* Lines longer than the node's max record size are split into several records
  (counted in ``records_split``), like the TCP listeners do.
* ``Content-Encoding: gzip`` is accepted; the body (decompressed) is bounded
  by ``max_body`` (default 64 MiB, else 413).
* Bounds, checked while parsing and before records are built (413 with the
  reason): at most ``max_records`` records per request (default 1,000,000;
  for NDJSON every LF counts, blank lines included) and at most
  ``max_expansion`` (8) bytes of records per byte of decoded body (bodies
  under 64 KiB count as 64 KiB), never more than twice ``max_body``: tiny
  entries under a long label set cannot become gigabytes. Bodies, raw and
  decoded, are charged to the node's body budget (``oklog.net.http.BodyBudget``,
  503 with Retry-After when spent).
* A JSON line nested deeper than the parser's recursion limit (about 1,000
  levels) is that line's error: kept verbatim and counted in
  ``invalid_json``, like any other line that is not JSON.
* Durability: a request's records go to fresh ingest segments of their own
  (a new one each ``flush_size`` bytes), which are fsynced and flushed (renamed
  ``.flushed``, directory synced) *before* the response: a 2xx means the
  records are on disk and queued for the store tier. Parsing and writing run
  in a worker thread. A failure while writing answers 503; records already
  written by that request may still reach the store (at-least-once: a client
  that retries may duplicate them, it never loses them).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import trio

from oklog.ingest.eventtime import EventWindow, Stamper
from oklog.ingest.listener import IngestSettings, split_long
from oklog.ingest.log import ActiveSegment, IngestLog
from oklog.logfmt import logfmt_pairs
from oklog.net.http import HTTPError, Request, Response, Router
from oklog.node.state import HTTPIngestStats as HTTPIngestStatsDict
from oklog.records.record import MAX_TOPIC_LEN, RecordError, ULIDSource, stamp_lines, validate_topic

log = logging.getLogger("oklog.ingest.http")
_T = TypeVar("_T")

MAX_BODY = 64 << 20
MAX_RECORDS = 1_000_000  # records one push request may become
MAX_EXPANSION = 8  # record bytes per (decoded) body byte, bodies of at least EXPANSION_FLOOR
EXPANSION_FLOOR = 64 << 10
RECORD_OVERHEAD = 29  # ULID, two spaces and the LF around a record's topic and line
MESSAGE_FIELDS = ("message", "msg", "log", "line")
LOKI_TOPIC_LABELS = ("topic", "job", "app", "application", "service_name")
PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
CONCURRENT_WRITES = 4  # requests parsed and written at once; the rest wait

_BAD_TOPIC_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class HTTPIngestStats:
    requests: int = 0
    records: int = 0
    bytes: int = 0
    invalid_json: int = 0
    records_split: int = 0
    rejected: int = 0  # requests answered 4xx/5xx
    segments: int = 0

    def as_dict(self) -> HTTPIngestStatsDict:
        return HTTPIngestStatsDict(
            requests=self.requests,
            records=self.records,
            bytes=self.bytes,
            invalid_json=self.invalid_json,
            records_split=self.records_split,
            rejected=self.rejected,
            segments=self.segments,
        )


@dataclass
class Batch:
    """Lines to stamp, grouped by topic in the order they were sent.

    ``times`` runs parallel to ``groups``: each group's event times in unix
    nanoseconds (None where a line has none), or None for a group without any.
    ``time_in_line``: the lines already show their event time, so one outside
    the event-time window is not written in front of the line again.
    """

    groups: list[tuple[bytes, list[bytes]]] = field(default_factory=list)
    invalid_json: int = 0
    times: list[list[int | None] | None] = field(default_factory=list)
    time_in_line: bool = False

    def add(self, topic: bytes, lines: list[bytes], times: list[int | None] | None = None) -> None:
        if not lines:
            return
        if times is not None and len(times) != len(lines):
            raise ValueError("times and lines differ in length")
        if self.groups and self.groups[-1][0] == topic:
            g_lines = self.groups[-1][1]
            prev = self.times[-1]
            if prev is not None or times is not None:
                if prev is None:
                    prev = self.times[-1] = [None] * len(g_lines)
                prev.extend(times if times is not None else [None] * len(lines))
            g_lines.extend(lines)
        else:
            self.groups.append((topic, lines))
            self.times.append(list(times) if times is not None else None)

    @property
    def has_times(self) -> bool:
        return any(t is not None for t in self.times)

    @property
    def records(self) -> int:
        return sum(len(lines) for _, lines in self.groups)


class Limits:
    """What one push request may become: at most ``max_records`` records and
    ``max_bytes`` bytes of records. Charged while parsing, before the records
    are built, so a request over either is refused (413) having cost little."""

    def __init__(
        self, body_len: int, max_records: int = MAX_RECORDS, expansion: int = MAX_EXPANSION, cap: int = 2 * MAX_BODY
    ) -> None:
        self.max_records = max_records
        self.body_len = body_len
        self.max_bytes = min(expansion * max(body_len, EXPANSION_FLOOR), cap)
        self.expansion = expansion
        self.records = 0
        self.bytes = 0

    def charge(self, records: int, nbytes: int) -> None:
        self.records += records
        self.bytes += nbytes
        if self.records > self.max_records:
            raise HTTPError(
                413, f"push holds more than {self.max_records} records (the per-request limit); split it"
            )
        if self.bytes > self.max_bytes:
            raise HTTPError(
                413,
                f"push of {self.body_len} bytes would become more than {self.max_bytes} bytes of records "
                f"(limit {self.expansion}x the body); split it or send fewer, longer entries",
            )


# -- parsing (pure) ---------------------------------------------------------------------


def escape_lf(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass").replace(b"\n", b"\\n")


def _as_line(value: Any) -> bytes:
    if isinstance(value, str):
        return escape_lf(value)
    # Compact JSON escapes control characters, so no LF can appear.
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


_RFC3339 = re.compile(
    r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(?:\.(\d{1,9})\d*)?([Zz]|[+-]\d\d:?\d\d)?\Z"
)


def parse_event_time(value: Any) -> int | None:
    """An event time as unix nanoseconds, or None if it is not one.

    RFC 3339 text (up to nanoseconds; no zone means UTC), or a number of
    seconds, milliseconds, microseconds or nanoseconds since the epoch, told
    apart by magnitude (as VictoriaLogs and Vector do); numeric text counts as
    a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return _time_text(value)
    return _time_number(value)


@functools.lru_cache(maxsize=4096)
def _time_text(value: str) -> int | None:
    """``parse_event_time`` of text: shippers repeat a timestamp over many records."""
    v = value.strip()
    m = _RFC3339.match(v)
    if m is None:
        try:
            return _time_number(float(v) if any(c in v for c in ".eE") else int(v))
        except ValueError:
            return None
    else:
        base, frac, zone = m.groups()
        try:
            dt = datetime.fromisoformat(base.replace("t", "T").replace(" ", "T"))
            if zone and zone not in "Zz":
                zone = zone if ":" in zone else zone[:3] + ":" + zone[3:]
                dt = dt.replace(tzinfo=datetime.fromisoformat("2000-01-01T00:00:00" + zone).tzinfo)
            else:
                dt = dt.replace(tzinfo=UTC)
        except ValueError:
            return None
        ns = int((frac or "0").ljust(9, "0"))
        return int(dt.timestamp()) * 1_000_000_000 + ns


def _time_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        a = abs(value)
        scale = 1e9 if a < 1e11 else 1e6 if a < 1e14 else 1e3 if a < 1e17 else 1
        if isinstance(value, int):
            return value * int(scale)
        whole = int(value)  # apart, so float rounding stays in the fraction
        return whole * int(scale) + round((value - whole) * scale)
    return None


NOT_JSON = object()  # json_lines' value for a line that is not JSON


def json_lines(body: bytes) -> Iterator[tuple[bytes, Any]]:
    """(line, parsed value) of each non-blank NDJSON line (a CR before the LF
    dropped); the value is NOT_JSON for a line that is not JSON, not UTF-8, or
    nested too deeply to parse."""
    for raw in body.split(b"\n"):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            obj = NOT_JSON
        yield raw, obj


def parse_jsonlines(
    body: bytes,
    message_field: str = "message",
    time_field: str | None = None,
    times_out: list[int | None] | None = None,
    limits: Limits | None = None,
    topic_len: int = 7,
) -> tuple[list[bytes], int]:
    """NDJSON body → (record lines, number of lines that were not valid JSON).
    ``times_out`` receives each line's event time (``time_field``) or None.

    ``limits`` is checked against the body's line count and an upper bound of
    the bytes its records can take, before any line is parsed."""
    if limits is not None:
        n = body.count(b"\n") + 1
        limits.charge(n, len(body) + n * (RECORD_OVERHEAD + topic_len))
    fields = (message_field,) + tuple(f for f in MESSAGE_FIELDS if f != message_field)
    lines: list[bytes] = []
    times: list[int | None] = times_out if times_out is not None else []
    invalid = 0
    for raw, obj in json_lines(body):
        if obj is NOT_JSON:
            invalid += 1
            lines.append(raw)
            times.append(None)
            continue
        t = None
        if isinstance(obj, dict) and time_field and time_field in obj:
            t = parse_event_time(obj[time_field])
        times.append(t)
        if isinstance(obj, str):
            lines.append(escape_lf(obj))
            continue
        if not isinstance(obj, dict):
            lines.append(raw)
            continue
        for name in fields:
            if name in obj:
                line = _as_line(obj[name])
                break
        else:
            lines.append(raw)
            continue
        if time_field and time_field in obj:
            line = _as_line(obj[time_field]) + b" " + line
        lines.append(line)
    return lines, invalid


def field_value(value: Any) -> str:
    """A structured field's value as prefix text: strings as they are, other
    scalars as JSON would write them, lists and objects as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


@functools.lru_cache(maxsize=8192)
def _pair(key: str, value: str) -> str:
    """One ``k=v`` of a prefix; the same pairs recur on record after record."""
    return logfmt_pairs(((key, value),))


def fields_prefix(fields: dict[str, Any]) -> bytes:
    """Structured fields in the Loki labels' prefix form, ``{k=v,...} ``
    (what ``labels_prefix`` writes for the same pairs)."""
    if not fields:
        return b""
    pairs = sorted((str(k), field_value(v)) for k, v in fields.items())
    return escape_lf("{" + ",".join([_pair(k, v) for k, v in pairs]) + "} ")


def parse_vlogs(
    body: bytes,
    msg_fields: list[str],
    time_field: str,
    stream_fields: list[str],
    default: bytes,
) -> Batch:
    """VictoriaLogs JSON lines → lines grouped by topic, with event times.

    The first of ``msg_fields`` present (then ``message``, ``msg``, ``log``,
    ``line``) is the line, the first of ``stream_fields`` with a usable value
    the topic; every other field but the time goes into the ``{k=v,...} ``
    prefix. A line that is not a JSON object is kept verbatim."""
    names = tuple(msg_fields) + tuple(f for f in MESSAGE_FIELDS if f not in msg_fields)
    batch = Batch()
    for raw, obj in json_lines(body):
        if obj is NOT_JSON:
            batch.invalid_json += 1
            batch.add(default, [raw], [None])
            continue
        if not isinstance(obj, dict):
            batch.add(default, [escape_lf(obj) if isinstance(obj, str) else raw], [None])
            continue
        try:
            topic, line, t = _vlogs_record(raw, obj, names, time_field, stream_fields, default)
        except RecursionError:  # a value too deep to write back as JSON: the line as sent
            batch.invalid_json += 1
            batch.add(default, [raw], [None])
            continue
        batch.add(topic, [line], [t])
    return batch


def _vlogs_record(
    raw: bytes,
    obj: dict[str, Any],
    names: Sequence[str],
    time_field: str,
    stream_fields: Sequence[str],
    default: bytes,
) -> tuple[bytes, bytes, int | None]:
    """One VictoriaLogs object → (topic, line, event time)."""
    t = parse_event_time(obj.pop(time_field)) if time_field in obj else None
    topic = default
    for name in stream_fields:
        v = obj.get(name)
        if isinstance(v, str | int) and not isinstance(v, bool):
            tp = sanitize_topic(str(v))
            if tp is not None:
                topic = tp
                break
    for name in names:
        if name in obj:
            line = _as_line(obj.pop(name))
            break
    else:
        return topic, raw, t
    return topic, fields_prefix(obj) + line, t


def sanitize_topic(value: str) -> bytes | None:
    """A label value as a topic: invalid characters to ``_``; None if unusable."""
    t = _BAD_TOPIC_CHARS.sub("_", value).lstrip("_-")[:MAX_TOPIC_LEN]
    return t.encode() if t else None


def loki_topic(
    labels: dict[str, str], label: str | None, default: bytes, names_: tuple[str, ...] = LOKI_TOPIC_LABELS
) -> bytes:
    names = ((label,) if label else ()) + names_
    for name in names:
        value = labels.get(name)
        if isinstance(value, str):
            topic = sanitize_topic(value)
            if topic is not None:
                return topic
    return default


def labels_prefix(labels: dict[str, str]) -> bytes:
    if not labels:
        return b""
    return escape_lf("{" + logfmt_pairs(sorted(labels.items()), sep=",") + "} ")


def parse_loki(
    body: bytes,
    topic_label: str | None,
    default: bytes,
    limits: Limits | None = None,
    *,
    topic_labels: tuple[str, ...] = LOKI_TOPIC_LABELS,
) -> Batch:
    """A Loki JSON push body → lines grouped by topic; HTTPError(400) if
    malformed, 413 if it would become more than ``limits`` allow."""
    lim = limits if limits is not None else Limits(len(body))
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise HTTPError(400, f"push body is not JSON: {e}") from None
    except RecursionError:
        raise HTTPError(400, "push body is nested too deeply") from None
    streams = doc.get("streams") if isinstance(doc, dict) else None
    if not isinstance(streams, list):
        raise HTTPError(400, 'push body must be {"streams": [...]}')
    batch = Batch()
    for i, stream in enumerate(streams):
        if not isinstance(stream, dict):
            raise HTTPError(400, f"streams[{i}] is not an object")
        labels = stream.get("stream") or {}
        values = stream.get("values") or []
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise HTTPError(400, f"streams[{i}].stream must map label names to strings")
        if not isinstance(values, list):
            raise HTTPError(400, f"streams[{i}].values must be a list")
        prefix = labels_prefix(labels)
        topic = loki_topic(labels, topic_label, default, topic_labels)
        lim.charge(len(values), len(values) * (len(prefix) + RECORD_OVERHEAD + len(topic)))
        lines: list[bytes] = []
        times: list[int | None] = []
        for j, entry in enumerate(values):
            if (
                not isinstance(entry, list)
                or len(entry) < 2
                or not isinstance(entry[0], str)
                or not entry[0].isdigit()
                or len(entry[0]) > 19
                or not isinstance(entry[1], str)
            ):
                raise HTTPError(
                    400, f'streams[{i}].values[{j}] must be ["<unix epoch ns>", "<line>"]'
                )
            line = escape_lf(entry[1])
            lim.charge(0, len(line))
            lines.append(prefix + line)
            times.append(int(entry[0]))
        batch.add(topic, lines, times)
    return batch


# -- Loki protobuf ------------------------------------------------------------------
# logproto.PushRequest { repeated StreamAdapter streams = 1; }
# StreamAdapter { string labels = 1; repeated EntryAdapter entries = 2; uint64 hash = 3; }
# EntryAdapter { Timestamp timestamp = 1; string line = 2; repeated LabelPair structuredMetadata = 3; }
# Read by hand (four messages, two fields each used): unknown fields are skipped.

_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\Z)', re.S)
_LABEL_ESC = re.compile(r"\\(.)", re.S)


def snappy_size(data: bytes) -> int:
    """The decompressed length a snappy block declares (0 if unreadable: the
    decoder then refuses it)."""
    try:
        return _varint(memoryview(data), 0)[0]
    except ValueError:
        return 0


def snappy_block(data: bytes, limit: int) -> bytes:
    """Undo Snappy block compression, refusing a body that says it would
    decompress beyond ``limit`` (its first varint is the decompressed length)."""
    import cramjam

    try:
        size, _ = _varint(memoryview(data), 0)
    except ValueError:
        raise HTTPError(400, "bad snappy body: no length") from None
    if size > limit:
        raise HTTPError(413, f"decompressed body exceeds the {limit}-byte limit")
    try:
        return bytes(cramjam.snappy.decompress_raw(data))
    except cramjam.DecompressionError as e:
        raise HTTPError(400, f"bad snappy body: {e}") from None


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(10):
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7
    raise ValueError("varint too long")


def _pb_fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview | None]]:
    """(field number, value) of a protobuf message: an int for varints, a
    memoryview for length-delimited fields, None for fixed-width ones."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        wire = key & 7
        value: int | memoryview | None = None
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            if i + size > n:
                raise ValueError("truncated field")
            value, i = buf[i : i + size], i + size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            if i > n:
                raise ValueError("truncated field")
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield key >> 3, value


def _pb_timestamp(buf: memoryview) -> int:
    """google.protobuf.Timestamp {int64 seconds = 1; int32 nanos = 2} → unix ns."""
    sec = nanos = 0
    for f, v in _pb_fields(buf):
        if f == 1 and isinstance(v, int):
            sec = v - (1 << 64) if v >= 1 << 63 else v
        elif f == 2 and isinstance(v, int):
            nanos = v & 0xFFFFFFFF
    return sec * 1_000_000_000 + nanos


def parse_label_set(text: str) -> dict[str, str]:
    """``{job="nginx", host="a"}`` (Prometheus label set syntax) → dict."""
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"labels {text[:80]!r} are not {{name=\"value\", ...}}")
    body, labels, pos = text[1:-1], {}, 0
    while pos < len(body) and body[pos:].strip():
        m = _LABEL.match(body, pos)
        if m is None:
            raise ValueError(f"labels {text[:80]!r} are not {{name=\"value\", ...}}")
        labels[m.group(1)] = _LABEL_ESC.sub(lambda e: {"n": "\n", "t": "\t"}.get(e.group(1), e.group(1)), m.group(2))
        pos = m.end()
    return labels


def parse_loki_protobuf(
    body: bytes,
    topic_label: str | None,
    default: bytes,
    limits: Limits | None = None,
    *,
    topic_labels: tuple[str, ...] = LOKI_TOPIC_LABELS,
) -> Batch:
    """A decompressed Loki protobuf push body → lines grouped by topic, as the
    JSON form; HTTPError(400) if malformed, 413 beyond ``limits``."""
    lim = limits if limits is not None else Limits(len(body))
    batch = Batch()
    try:
        for i, (field, stream) in enumerate(_pb_fields(memoryview(body))):
            if field != 1 or not isinstance(stream, memoryview):
                continue
            labels_text, lines = "{}", []
            times: list[int | None] = []
            for f, value in _pb_fields(stream):
                if f == 1 and isinstance(value, memoryview):
                    labels_text = bytes(value).decode("utf-8")
                elif f == 2 and isinstance(value, memoryview):
                    line, t = b"", None
                    for ef, ev in _pb_fields(value):
                        if ef == 2 and isinstance(ev, memoryview):
                            line = bytes(ev).replace(b"\n", b"\\n")
                        elif ef == 1 and isinstance(ev, memoryview):
                            t = _pb_timestamp(ev)
                    lim.charge(1, len(line) + RECORD_OVERHEAD)
                    lines.append(line)
                    times.append(t)
            try:
                labels = parse_label_set(labels_text)
            except ValueError as e:
                raise HTTPError(400, f"streams[{i}]: {e}") from None
            prefix = labels_prefix(labels)
            topic = loki_topic(labels, topic_label, default, topic_labels)
            lim.charge(0, len(lines) * (len(prefix) + len(topic)))
            batch.add(topic, [prefix + ln for ln in lines], times)
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPError(400, f"bad protobuf push body: {e}") from None
    return batch


def decode_body(data: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (identity or gzip), never beyond ``limit`` bytes."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return data
    if enc not in ("gzip", "x-gzip"):
        raise HTTPError(415, f"unsupported Content-Encoding {encoding!r} (use gzip or none)")
    out: list[bytes] = []
    total = 0
    rest = data
    try:
        while rest:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = d.decompress(rest, limit + 1 - total)
            total += len(chunk)
            if total > limit or d.unconsumed_tail:
                raise HTTPError(413, f"decompressed body exceeds the {limit}-byte limit")
            if not d.eof:
                raise HTTPError(400, "truncated gzip body")
            out.append(chunk)
            rest = d.unused_data  # concatenated gzip members
    except zlib.error as e:
        raise HTTPError(400, f"bad gzip body: {e}") from None
    return b"".join(out)


# -- writing ----------------------------------------------------------------------------


def stamp_batch(
    batch: Batch, window: EventWindow, limit: int, ulids_out: list[bytes] | None = None
) -> tuple[list[bytes], int]:
    """Records (``ULID SP TOPIC SP LINE``, no LF) of ``batch`` sorted by ULID, each
    at its event time where that lies in ``window``; and the number of splits.
    ``ulids_out`` receives the (first) ULID of each line in the order sent."""
    st = Stamper(window)
    records: list[bytes] = []
    split = 0
    for (topic, lines), times in zip(batch.groups, batch.times, strict=True):
        recs, n = st.stamp_group(topic, lines, times, batch.time_in_line, limit, ulids_out)
        records += recs
        split += n
    if st.event_stamped:
        records.sort()  # ULIDs are unique, so byte order is ULID order
    return records, split


class _SegmentWriter:
    """Records into new ingest segments, each fsynced and flushed once it
    reaches ``flush_size``; a write that fails hands over what is there."""

    def __init__(self, ilog: IngestLog, flush_size: int) -> None:
        self.ilog = ilog
        self.flush_size = flush_size
        self.ids: list[str] = []
        self.seg: ActiveSegment | None = None

    def write(self, data: bytes, records: int) -> None:
        if self.seg is None:
            self.seg = self.ilog.new_segment()
        self.seg.write(data, records)
        if self.seg.size >= self.flush_size:
            self._flush()

    def _flush(self) -> None:
        done, self.seg = self.seg, None
        if done is not None and done.flush(sync=True):
            self.ids.append(done.id)

    def finish(self) -> list[str]:
        self._flush()
        if self.ids:
            self.ilog.fs.sync_dir(self.ilog.root)
        return self.ids

    def abort(self) -> None:
        if self.seg is not None:  # failed mid-write: hand over what is there
            try:
                self.seg.flush(sync=True)
            except OSError:
                log.exception("flushing segment %s after a failed write", self.seg.id)


def write_records(ilog: IngestLog, records: list[bytes], flush_size: int) -> list[str]:
    """Write sorted records (no LF) into new segments, fsynced and flushed (blocking)."""
    w = _SegmentWriter(ilog, flush_size)
    try:
        for chunk in _chunks(records, flush_size):
            chunk.append(b"")
            w.write(b"\n".join(chunk), len(chunk) - 1)
        return w.finish()
    finally:
        w.abort()


def write_batch(
    ilog: IngestLog,
    batch: Batch,
    settings: IngestSettings,
    window: EventWindow | None = None,
    ulids_out: list[bytes] | None = None,
) -> tuple[list[str], int]:
    """Stamp, write, fsync and flush ``batch`` into new segments (blocking).

    Returns (flushed segment ids, records split). Lines with event times (or
    when the caller wants each line's ULID) go through ``stamp_batch``; the
    rest take arrival-time ULIDs from one source, which keeps every segment of
    the request in ULID order.
    """
    if batch.has_times or ulids_out is not None:
        records, split = stamp_batch(
            batch, window or EventWindow(), settings.max_record_size, ulids_out
        )
        return write_records(ilog, records, settings.flush_size), split
    ulids = ULIDSource()
    limit = settings.max_record_size
    split = 0
    w = _SegmentWriter(ilog, settings.flush_size)
    try:
        for topic, lines in batch.groups:
            if any(len(ln) > limit for ln in lines):
                lines, n = split_long(lines, limit)
                split += n
            for chunk in _chunks(lines, settings.flush_size):
                w.write(stamp_lines(chunk, ulids.headers(len(chunk), topic)), len(chunk))
        return w.finish(), split
    finally:
        w.abort()


def _chunks(lines: list[bytes], size: int) -> Iterable[list[bytes]]:
    """Runs of lines of about ``size`` bytes, so segments flush near flush_size."""
    start, total = 0, 0
    for i, ln in enumerate(lines):
        total += len(ln) + 40
        if total >= size:
            yield lines[start : i + 1]
            start, total = i + 1, 0
    if start < len(lines):
        yield lines[start:]


# -- the router -------------------------------------------------------------------------


class PushWriter:
    """What every push endpoint shares: bounded body reading, parsing off the
    event loop, and the durable write of a ``Batch`` (see the module docstring)."""

    def __init__(
        self,
        ilog: IngestLog,
        settings: IngestSettings,
        stats: HTTPIngestStats,
        max_body: int,
        limiter: trio.CapacityLimiter,
        window: EventWindow,
    ) -> None:
        self.ilog = ilog
        self.settings = settings
        self.stats = stats
        self.max_body = max_body
        self.limiter = limiter
        self.window = window

    async def read_body(self, req: Request) -> bytes:
        raw = await req.body(self.max_body)
        enc = req.headers.get("content-encoding")
        if enc and enc.strip().lower() not in ("identity", ""):
            raw = await self.run(decode_body, raw, enc, self.max_body)
            req.reserve(len(raw), "decoded request bodies")
        self.stats.bytes += len(raw)
        return raw

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in a worker thread, at most CONCURRENT_WRITES at once."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def default_topic(self, req: Request) -> bytes:
        topic = req.arg("topic")
        if topic is None:
            return self.settings.topic
        try:
            return validate_topic(topic)
        except RecordError as e:
            raise HTTPError(400, str(e)) from None

    async def commit(self, batch: Batch, ulids_out: list[bytes] | None = None) -> list[str]:
        try:
            ids, split = await self.run(
                write_batch, self.ilog, batch, self.settings, self.window, ulids_out
            )
        except OSError as e:
            log.error("HTTP ingest write failed: %s", e)
            raise HTTPError(503, f"could not write records: {e}") from None
        st = self.stats
        st.records += batch.records + split
        st.records_split += split
        st.segments += len(ids)
        return ids


def _names(text: str | None, default: list[str]) -> list[str]:
    if text is None:
        return default
    return [n.strip() for n in text.split(",") if n.strip()]


class PushEndpoints:
    """The NDJSON, VictoriaLogs and Loki push handlers over one ``PushWriter``."""

    def __init__(
        self,
        w: PushWriter,
        loki_labels: tuple[str, ...],
        max_records: int,
        max_expansion: int,
    ) -> None:
        self.w = w
        self.st = w.stats
        self.loki_labels = loki_labels
        self.max_records = max_records
        self.max_expansion = max_expansion

    def limits(self, body: bytes) -> Limits:
        return Limits(len(body), self.max_records, self.max_expansion, 2 * self.w.max_body)

    async def _counted(self, handle: Callable[[Request], Awaitable[Response]], req: Request) -> Response:
        """``handle(req)``, counted in ``requests`` and, when it fails, ``rejected``."""
        self.st.requests += 1
        try:
            return await handle(req)
        except HTTPError:
            self.st.rejected += 1
            raise

    async def jsonline(self, req: Request) -> Response:
        return await self._counted(self._jsonline, req)

    async def _jsonline(self, req: Request) -> Response:
        w = self.w
        topic = w.default_topic(req)
        body = await w.read_body(req)
        field_ = req.arg("message_field") or "message"
        time_field = req.arg("time_field") or None
        times: list[int | None] = []
        lines, invalid = await w.run(
            parse_jsonlines, body, field_, time_field, times, self.limits(body), len(topic)
        )
        self.st.invalid_json += invalid
        if invalid:
            log.info("jsonline: %d lines were not JSON, kept verbatim", invalid)
        batch = Batch(invalid_json=invalid, time_in_line=True)
        batch.add(topic, lines, times if time_field else None)
        ids = await w.commit(batch)
        return Response.json({"records": batch.records, "invalid_json": invalid, "segments": ids})

    async def vlogs_jsonline(self, req: Request) -> Response:
        return await self._counted(self._vlogs_jsonline, req)

    async def _vlogs_jsonline(self, req: Request) -> Response:
        w = self.w
        topic = w.default_topic(req)
        body = await w.read_body(req)
        msg_fields = _names(req.arg("_msg_field") or req.headers.get("vl-msg-field"), ["_msg"])
        time_field = req.arg("_time_field") or req.headers.get("vl-time-field") or "_time"
        stream_fields = _names(req.arg("_stream_fields") or req.headers.get("vl-stream-fields"), [])
        batch = await w.run(parse_vlogs, body, msg_fields, time_field, stream_fields, topic)
        self.st.invalid_json += batch.invalid_json
        ids = await w.commit(batch)
        return Response.json(
            {"records": batch.records, "invalid_json": batch.invalid_json, "segments": ids}
        )

    def _loki_protobuf(self, body: bytes, topic_label: str | None, default: bytes) -> Batch:
        data = snappy_block(body, self.w.max_body)
        return parse_loki_protobuf(
            data, topic_label, default, self.limits(data), topic_labels=self.loki_labels
        )

    def _loki_json(self, body: bytes, topic_label: str | None, default: bytes) -> Batch:
        return parse_loki(body, topic_label, default, self.limits(body), topic_labels=self.loki_labels)

    async def loki_push(self, req: Request) -> Response:
        return await self._counted(self._loki_push, req)

    async def _loki_push(self, req: Request) -> Response:
        w = self.w
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await w.read_body(req)
        parse: Callable[[bytes, str | None, bytes], Batch]
        if ctype in PROTOBUF_TYPES:
            req.reserve(min(snappy_size(body), w.max_body), "decoded request bodies")
            parse = self._loki_protobuf
        else:
            parse = self._loki_json
        batch = await w.run(parse, body, req.arg("topic"), w.settings.topic)
        await w.commit(batch)
        return Response(204)


def httpingest_router(
    ilog: IngestLog,
    settings: IngestSettings,
    stats: HTTPIngestStats | None = None,
    *,
    max_body: int = MAX_BODY,
    limiter: trio.CapacityLimiter | None = None,
    window: EventWindow | None = None,
    otlp_topic_attributes: tuple[str, ...] | None = None,
    loki_topic_labels: tuple[str, ...] | None = None,
    max_records: int = MAX_RECORDS,
    max_expansion: int = MAX_EXPANSION,
) -> Router:
    """The push endpoints into ``ilog``: NDJSON (``/ingest/jsonline`` and its
    VictoriaLogs form ``/insert/jsonline``), the Loki push, OTLP/HTTP logs and
    the Elasticsearch bulk API."""
    from oklog.ingest.esbulk import esbulk_router
    from oklog.ingest.otlp import DEFAULT_TOPIC_ATTRIBUTES, otlp_router

    st = stats if stats is not None else HTTPIngestStats()
    lim = limiter if limiter is not None else trio.CapacityLimiter(CONCURRENT_WRITES)
    w = PushWriter(ilog, settings, st, max_body, lim, window or EventWindow())
    ep = PushEndpoints(w, loki_topic_labels or LOKI_TOPIC_LABELS, max_records, max_expansion)
    r = Router()
    r.add("POST", "/ingest/jsonline", ep.jsonline)
    r.add("POST", "/insert/jsonline", ep.vlogs_jsonline)
    r.add("POST", "/loki/api/v1/push", ep.loki_push)
    r.mount(otlp_router(w, otlp_topic_attributes or DEFAULT_TOPIC_ATTRIBUTES))
    r.mount(esbulk_router(w))
    return r
