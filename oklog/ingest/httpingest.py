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
    value of that field is *not* used for stamping — ULIDs are always arrival
    time, as on every ingest path — but it is kept: the line becomes
    ``<time> <message>`` so the producer's time is not lost when only the
    message is extracted. ``topic`` (default the node's default topic) must be a
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
      if given and present, else of label ``topic``, ``job`` or ``app`` (first
      present). Characters outside ``[A-Za-z0-9_-]`` become ``_`` and leading
      ``_``/``-`` are dropped; if nothing usable is left, ``default``.
    * line: the stream's labels in logfmt form, sorted by name and wrapped in
      braces, then a space, then the Loki line: ``{host=a,job=nginx} GET /``.
      Values with spaces, ``,``, ``=``, quotes or braces are double-quoted with
      backslash escapes, so the prefix parses back unambiguously. A stream
      with no labels gets no prefix.
    * the entry's nanosecond timestamp must be a decimal string (else 400) and
      is then dropped: records are stamped with arrival-time ULIDs and kept in
      the order sent. A third element (structured metadata) is ignored.
    * the answer is ``204 No Content``, as Loki's.

Common to both:

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
  decoded, are charged to the node's body budget (``oklog.http.BodyBudget``,
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

import json
import logging
import re
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import trio

from oklog.http import HTTPError, Request, Response, Router
from oklog.ingest.listener import IngestSettings, split_long
from oklog.ingest.log import ActiveSegment, IngestLog
from oklog.logfmt import logfmt_pairs
from oklog.record import MAX_TOPIC_LEN, RecordError, ULIDSource, stamp_lines, validate_topic

log = logging.getLogger("oklog.ingest.http")

MAX_BODY = 64 << 20
MAX_RECORDS = 1_000_000  # records one push request may become
MAX_EXPANSION = 8  # record bytes per (decoded) body byte, bodies of at least EXPANSION_FLOOR
EXPANSION_FLOOR = 64 << 10
RECORD_OVERHEAD = 29  # ULID, two spaces and the LF around a record's topic and line
MESSAGE_FIELDS = ("message", "msg", "log", "line")
LOKI_TOPIC_LABELS = ("topic", "job", "app")
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

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Batch:
    """Lines to stamp, grouped by topic in the order they were sent."""

    groups: list[tuple[bytes, list[bytes]]] = field(default_factory=list)
    invalid_json: int = 0

    def add(self, topic: bytes, lines: list[bytes]) -> None:
        if not lines:
            return
        if self.groups and self.groups[-1][0] == topic:
            self.groups[-1][1].extend(lines)
        else:
            self.groups.append((topic, lines))

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


def _as_line(value) -> bytes:
    if isinstance(value, str):
        return escape_lf(value)
    # Compact JSON escapes control characters, so no LF can appear.
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def parse_jsonlines(
    body: bytes,
    message_field: str = "message",
    time_field: str | None = None,
    limits: Limits | None = None,
    topic_len: int = 7,
) -> tuple[list[bytes], int]:
    """NDJSON body → (record lines, number of lines that were not valid JSON).

    ``limits`` is checked against the body's line count and an upper bound of
    the bytes its records can take, before any line is parsed."""
    if limits is not None:
        n = body.count(b"\n") + 1
        limits.charge(n, len(body) + n * (RECORD_OVERHEAD + topic_len))
    fields = (message_field,) + tuple(f for f in MESSAGE_FIELDS if f != message_field)
    lines: list[bytes] = []
    invalid = 0
    for raw in body.split(b"\n"):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deeply
            invalid += 1
            lines.append(raw)
            continue
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


def sanitize_topic(value: str) -> bytes | None:
    """A label value as a topic: invalid characters to ``_``; None if unusable."""
    t = _BAD_TOPIC_CHARS.sub("_", value).lstrip("_-")[:MAX_TOPIC_LEN]
    return t.encode() if t else None


def loki_topic(labels: dict[str, str], label: str | None, default: bytes) -> bytes:
    names = ((label,) if label else ()) + LOKI_TOPIC_LABELS
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


def parse_loki(body: bytes, topic_label: str | None, default: bytes, limits: Limits | None = None) -> Batch:
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
        topic = loki_topic(labels, topic_label, default)
        lim.charge(len(values), len(values) * (len(prefix) + RECORD_OVERHEAD + len(topic)))
        lines: list[bytes] = []
        for j, entry in enumerate(values):
            if (
                not isinstance(entry, list)
                or len(entry) < 2
                or not isinstance(entry[0], str)
                or not entry[0].isdigit()
                or not isinstance(entry[1], str)
            ):
                raise HTTPError(
                    400, f'streams[{i}].values[{j}] must be ["<unix epoch ns>", "<line>"]'
                )
            line = escape_lf(entry[1])
            lim.charge(0, len(line))
            lines.append(prefix + line)
        batch.add(topic, lines)
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


def _pb_fields(buf: memoryview):
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
    body: bytes, topic_label: str | None, default: bytes, limits: Limits | None = None
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
            for f, value in _pb_fields(stream):
                if f == 1 and isinstance(value, memoryview):
                    labels_text = bytes(value).decode("utf-8")
                elif f == 2 and isinstance(value, memoryview):
                    line = b""
                    for ef, ev in _pb_fields(value):
                        if ef == 2 and isinstance(ev, memoryview):
                            line = bytes(ev).replace(b"\n", b"\\n")
                    lim.charge(1, len(line) + RECORD_OVERHEAD)
                    lines.append(line)
            try:
                labels = parse_label_set(labels_text)
            except ValueError as e:
                raise HTTPError(400, f"streams[{i}]: {e}") from None
            prefix = labels_prefix(labels)
            topic = loki_topic(labels, topic_label, default)
            lim.charge(0, len(lines) * (len(prefix) + len(topic)))
            batch.add(topic, [prefix + ln for ln in lines])
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


def write_batch(ilog: IngestLog, batch: Batch, settings: IngestSettings) -> tuple[list[str], int]:
    """Stamp, write, fsync and flush ``batch`` into new segments (blocking).

    Returns (flushed segment ids, records split). One ULID source for the whole
    request keeps every segment in ULID order.
    """
    ulids = ULIDSource()
    limit = settings.max_record_size
    ids: list[str] = []
    split = 0
    seg: ActiveSegment | None = None
    try:
        for topic, lines in batch.groups:
            if any(len(ln) > limit for ln in lines):
                lines, n = split_long(lines, limit)
                split += n
            for chunk in _chunks(lines, settings.flush_size):
                if seg is None:
                    seg = ilog.new_segment()
                data = stamp_lines(chunk, ulids.headers(len(chunk), topic))
                seg.write(data, len(chunk))
                if seg.size >= settings.flush_size:
                    done, seg = seg, None
                    if done.flush(sync=True):
                        ids.append(done.id)
        if seg is not None:
            done, seg = seg, None
            if done.flush(sync=True):
                ids.append(done.id)
        if ids:
            ilog.fs.sync_dir(ilog.root)
    finally:
        if seg is not None:  # failed mid-write: hand over what is there
            try:
                seg.flush(sync=True)
            except OSError:
                log.exception("flushing segment %s after a failed write", seg.id)
    return ids, split


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


def httpingest_router(
    ilog: IngestLog,
    settings: IngestSettings,
    stats: HTTPIngestStats | None = None,
    *,
    max_body: int = MAX_BODY,
    limiter: trio.CapacityLimiter | None = None,
    max_records: int = MAX_RECORDS,
    max_expansion: int = MAX_EXPANSION,
) -> Router:
    """``POST /ingest/jsonline`` and ``POST /loki/api/v1/push`` into ``ilog``."""
    st = stats if stats is not None else HTTPIngestStats()
    lim = limiter if limiter is not None else trio.CapacityLimiter(CONCURRENT_WRITES)

    def limits(body: bytes) -> Limits:
        return Limits(len(body), max_records, max_expansion, 2 * max_body)

    async def read_body(req: Request) -> bytes:
        raw = await req.body(max_body)
        enc = req.headers.get("content-encoding")
        if enc and enc.strip().lower() not in ("identity", ""):
            body = await trio.to_thread.run_sync(decode_body, raw, enc, max_body, limiter=lim)
            req.reserve(len(body), "decoded request bodies")
            return body
        return raw

    def default_topic(req: Request) -> bytes:
        topic = req.arg("topic")
        if topic is None:
            return settings.topic
        try:
            return validate_topic(topic)
        except RecordError as e:
            raise HTTPError(400, str(e)) from None

    async def commit(batch: Batch) -> list[str]:
        try:
            ids, split = await trio.to_thread.run_sync(
                write_batch, ilog, batch, settings, limiter=lim
            )
        except OSError as e:
            log.error("HTTP ingest write failed: %s", e)
            raise HTTPError(503, f"could not write records: {e}") from None
        st.records += batch.records + split
        st.records_split += split
        st.segments += len(ids)
        return ids

    async def jsonline(req: Request) -> Response:
        st.requests += 1
        try:
            topic = default_topic(req)
            body = await read_body(req)
            st.bytes += len(body)
            field_ = req.arg("message_field") or "message"
            time_field = req.arg("time_field") or None
            lines, invalid = await trio.to_thread.run_sync(
                parse_jsonlines, body, field_, time_field, limits(body), len(topic), limiter=lim
            )
            st.invalid_json += invalid
            if invalid:
                log.info("jsonline: %d lines were not JSON, kept verbatim", invalid)
            batch = Batch(invalid_json=invalid)
            batch.add(topic, lines)
            ids = await commit(batch)
        except HTTPError:
            st.rejected += 1
            raise
        return Response.json({"records": batch.records, "invalid_json": invalid, "segments": ids})

    def _loki_protobuf(body: bytes, topic_label: str | None, default: bytes) -> Batch:
        data = snappy_block(body, max_body)
        return parse_loki_protobuf(data, topic_label, default, limits(data))

    async def loki_push(req: Request) -> Response:
        st.requests += 1
        try:
            ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
            body = await read_body(req)
            st.bytes += len(body)
            if ctype in PROTOBUF_TYPES:
                req.reserve(min(snappy_size(body), max_body), "decoded request bodies")
                batch = await trio.to_thread.run_sync(
                    _loki_protobuf, body, req.arg("topic"), settings.topic, limiter=lim
                )
            else:
                batch = await trio.to_thread.run_sync(
                    parse_loki, body, req.arg("topic"), settings.topic, limits(body), limiter=lim
                )
            await commit(batch)
        except HTTPError:
            st.rejected += 1
            raise
        return Response(204)

    r = Router()
    r.add("POST", "/ingest/jsonline", jsonline)
    r.add("POST", "/loki/api/v1/push", loki_push)
    return r
