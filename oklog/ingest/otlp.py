"""OTLP/HTTP logs: ``POST /v1/logs`` (and ``/otlp/v1/logs``).

What the OpenTelemetry SDKs' and Collector's ``otlphttp`` log exporters send:
an ``ExportLogsServiceRequest`` as protobuf (``application/x-protobuf``) or in
its JSON mapping (``application/json``), optionally gzip-compressed.

Each LogRecord becomes one record:

* topic: the first of the configured resource attributes (default
  ``service.name``) with a usable value, sanitized as Loki label values are;
  else ``?topic=`` or the node's default topic.
* line: a ``{k=v,...} `` prefix in the Loki push's form (sorted, logfmt-quoted)
  holding the resource attributes, ``scope`` (the instrumentation scope's
  name), the record's attributes (a record attribute wins over a resource
  attribute of the same name), ``severity`` (the text, else the number's
  name), ``trace_id``/``span_id`` (hex) and ``event_name`` when set; then the
  body: a string body verbatim (LF as ``\\n``), any other body as compact
  JSON (bytes as base64), no body as nothing.
* time: ``time_unix_nano``, else ``observed_time_unix_nano`` (the event-time
  rules of ``oklog.ingest.eventtime``).

Answers follow the OTLP/HTTP spec: 200 with an ``ExportLogsServiceResponse``
in the request's encoding (empty on full success; ``partial_success`` with
the count and reason of rejected records, here records whose values nest
deeper than ``MAX_DEPTH``); 400 (malformed, not retried by exporters), 413,
415 and 503 (retried) with a ``google.rpc.Status`` body. A request whose
records would take more than ``MAX_EXPANSION`` times its body (resource
attributes repeat on every record) is refused whole with 413.

The protobuf reader is hand-written (seven messages, the fields above);
unknown fields are skipped, truncation and bad wire types are errors, nesting
is bounded.
"""

from __future__ import annotations

import base64
import json
import logging
import struct
from collections.abc import Iterator
from typing import Any

from oklog.ingest.httpingest import (
    PROTOBUF_TYPES,
    Batch,
    PushWriter,
    _varint,
    escape_lf,
    fields_prefix,
    sanitize_topic,
)
from oklog.net.http import HTTPError, Request, Response, Router

log = logging.getLogger("oklog.ingest.otlp")

DEFAULT_TOPIC_ATTRIBUTES = ("service.name",)
MAX_DEPTH = 32  # nesting of AnyValue arrays/maps in one record
MAX_EXPANSION = 8  # bytes of records per byte of (decoded) request body
JSON_TYPES = ("application/json",)

SEVERITY_NAMES = {
    **{n: "TRACE" + (str(n) if n > 1 else "") for n in range(1, 5)},
    **{n: "DEBUG" + (str(n - 4) if n > 5 else "") for n in range(5, 9)},
    **{n: "INFO" + (str(n - 8) if n > 9 else "") for n in range(9, 13)},
    **{n: "WARN" + (str(n - 12) if n > 13 else "") for n in range(13, 17)},
    **{n: "ERROR" + (str(n - 16) if n > 17 else "") for n in range(17, 21)},
    **{n: "FATAL" + (str(n - 20) if n > 21 else "") for n in range(21, 25)},
}


class TooDeep(ValueError):
    """A value nests deeper than MAX_DEPTH: that record is rejected alone."""


Attrs = dict[str, Any]  # attributes: key → AnyValue as a Python value


# -- protobuf reading ----------------------------------------------------------------


def pb_fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of a message: an int for varint and
    fixed-width fields, a memoryview for length-delimited ones."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise ValueError("field number 0")
        value: int | memoryview
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            if size > n - i:
                raise ValueError("truncated field")
            value, i = buf[i : i + size], i + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if i + width > n:
                raise ValueError("truncated field")
            value, i = int.from_bytes(buf[i : i + width], "little"), i + width
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield num, wire, value


def _text(v: memoryview) -> str:
    return bytes(v).decode("utf-8", "replace")


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def pb_any(buf: memoryview, depth: int = 0) -> Any:
    """An AnyValue as a Python value (bytes as base64 text)."""
    if depth > MAX_DEPTH:
        raise TooDeep(f"value nested deeper than {MAX_DEPTH}")
    value: Any = None
    for num, wire, v in pb_fields(buf):
        if wire == 2 and isinstance(v, memoryview):
            if num == 1:
                value = _text(v)
            elif num == 5:
                value = [
                    pb_any(x, depth + 1)
                    for n, w, x in pb_fields(v)
                    if n == 1 and w == 2 and isinstance(x, memoryview)
                ]
            elif num == 6:
                value = pb_kvlist(v, depth + 1)
            elif num == 7:
                value = base64.b64encode(bytes(v)).decode()
        elif isinstance(v, int):
            if num == 2 and wire == 0:
                value = bool(v)
            elif num == 3 and wire == 0:
                value = _signed(v)
            elif num == 4 and wire == 1:
                value = struct.unpack("<d", v.to_bytes(8, "little"))[0]
    return value


def pb_kvlist(buf: memoryview, depth: int = 0, field: int = 1) -> Attrs:
    """Repeated KeyValue (field ``field`` of ``buf``) as a dict."""
    if depth > MAX_DEPTH:
        raise TooDeep(f"value nested deeper than {MAX_DEPTH}")
    out: Attrs = {}
    for num, wire, kv in pb_fields(buf):
        if num == field and wire == 2 and isinstance(kv, memoryview):
            key, value = pb_kv(kv, depth + 1)
            out[key] = value
    return out


def pb_kv(kv: memoryview, depth: int) -> tuple[str, Any]:
    """One KeyValue → (key, its AnyValue read at ``depth``)."""
    key, value = "", None
    for n, w, x in pb_fields(kv):
        if n == 1 and w == 2 and isinstance(x, memoryview):
            key = _text(x)
        elif n == 2 and w == 2 and isinstance(x, memoryview):
            value = pb_any(x, depth)
    return key, value


def _pb_strings(buf: memoryview, num: int) -> Iterator[memoryview]:
    """The length-delimited values of field ``num`` of ``buf``."""
    for n, w, x in pb_fields(buf):
        if n == num and w == 2 and isinstance(x, memoryview):
            yield x


class Record:
    """One LogRecord's parts, whichever encoding it came in."""

    __slots__ = ("time", "severity", "body", "body_raw", "attrs", "trace_id", "span_id", "event")

    def __init__(self) -> None:
        self.time: int | None = None
        self.severity = ""
        self.body: Any = None
        self.body_raw: bytes | None = None  # a string body's bytes, kept exactly
        self.attrs: Attrs = {}
        self.trace_id = ""
        self.span_id = ""
        self.event = ""


ScopeLogs = tuple[str, list[Record | TooDeep]]  # scope name, its records (or why one was rejected)
ResourceLogs = tuple[Attrs, list[ScopeLogs]]


def pb_record(buf: memoryview) -> Record:
    r = Record()
    observed = 0
    sev_num = 0
    for num, wire, v in pb_fields(buf):
        if isinstance(v, int):
            if num == 1 and wire == 1:
                r.time = v or None
            elif num == 11 and wire == 1:
                observed = v
            elif num == 2 and wire == 0:
                sev_num = v
        elif wire == 2:
            _pb_record_field(r, num, v)
    if r.time is None and observed:
        r.time = observed
    if not r.severity and sev_num:
        r.severity = SEVERITY_NAMES.get(sev_num, str(sev_num))
    if not isinstance(r.body, str):
        r.body_raw = None
    return r


def _pb_record_field(r: Record, num: int, v: memoryview) -> None:
    """A length-delimited LogRecord field into ``r``."""
    if num == 3:
        r.severity = _text(v)
    elif num == 5:
        body = pb_any(v)
        for x in _pb_strings(v, 1):
            r.body_raw = bytes(x)
        r.body = body
    elif num == 6:
        key, value = pb_kv(v, 1)
        r.attrs[key] = value
    elif num == 9:
        r.trace_id = bytes(v).hex()
    elif num == 10:
        r.span_id = bytes(v).hex()
    elif num == 12:
        r.event = _text(v)


def parse_pb_request(body: bytes) -> list[ResourceLogs]:
    """ExportLogsServiceRequest → [(resource attrs, [(scope name, [Record | TooDeep])])]."""
    return [_pb_resource_logs(rl) for rl in _pb_strings(memoryview(body), 1)]


def _pb_resource_logs(rl: memoryview) -> ResourceLogs:
    resource: Attrs = {}
    scopes: list[ScopeLogs] = []
    for n, w, v in pb_fields(rl):
        if w != 2 or not isinstance(v, memoryview):
            continue
        if n == 1:
            resource = pb_kvlist(v, 1)
        elif n == 2:
            scopes.append(_pb_scope_logs(v))
    return resource, scopes


def _pb_scope_logs(v: memoryview) -> ScopeLogs:
    scope = ""
    records: list[Record | TooDeep] = []
    for sn, sw, sv in pb_fields(v):
        if sw != 2 or not isinstance(sv, memoryview):
            continue
        if sn == 1:
            for fv in _pb_strings(sv, 1):
                scope = _text(fv)
        elif sn == 2:
            try:
                records.append(pb_record(sv))
            except TooDeep as e:
                records.append(e)
    return scope, records


# -- the JSON mapping ----------------------------------------------------------------


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    v = obj.get(camel)
    return obj.get(snake) if v is None else v


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ValueError(f"{v!r} is not an integer")
    return int(v)


def json_any(v: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise TooDeep(f"value nested deeper than {MAX_DEPTH}")
    if not isinstance(v, dict):
        raise ValueError("an AnyValue must be an object")
    for camel, snake in (("stringValue", "string_value"), ("boolValue", "bool_value")):
        x = _get(v, camel, snake)
        if x is not None:
            return x
    x = _get(v, "intValue", "int_value")
    if x is not None:
        return _int(x)
    x = _get(v, "doubleValue", "double_value")
    if x is not None:
        return float(x)
    x = _get(v, "arrayValue", "array_value")
    if x is not None:
        return [json_any(e, depth + 1) for e in _list(x.get("values") if isinstance(x, dict) else None)]
    x = _get(v, "kvlistValue", "kvlist_value")
    if x is not None:
        return json_kvlist(x.get("values") if isinstance(x, dict) else None, depth + 1)
    x = _get(v, "bytesValue", "bytes_value")
    if x is not None:
        return x if isinstance(x, str) else None
    return None


def _list(v: Any) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError("expected a list")
    return v


def json_kvlist(values: Any, depth: int = 0) -> Attrs:
    if depth > MAX_DEPTH:
        raise TooDeep(f"value nested deeper than {MAX_DEPTH}")
    out: Attrs = {}
    for kv in _list(values):
        if not isinstance(kv, dict) or not isinstance(kv.get("key", ""), str):
            raise ValueError("an attribute must be {key, value}")
        value = kv.get("value")
        out[kv.get("key", "")] = json_any(value, depth + 1) if value is not None else None
    return out


def json_record(obj: Any) -> Record:
    if not isinstance(obj, dict):
        raise ValueError("a logRecord must be an object")
    r = Record()
    t = _get(obj, "timeUnixNano", "time_unix_nano")
    if t is not None and _int(t):
        r.time = _int(t)
    else:
        o = _get(obj, "observedTimeUnixNano", "observed_time_unix_nano")
        if o is not None and _int(o):
            r.time = _int(o)
    sev = _get(obj, "severityText", "severity_text")
    r.severity = sev if isinstance(sev, str) else ""
    if not r.severity:
        num = _get(obj, "severityNumber", "severity_number")
        if isinstance(num, str) and num.startswith("SEVERITY_NUMBER_"):
            r.severity = num[len("SEVERITY_NUMBER_") :]
        elif num is not None and _int(num):
            r.severity = SEVERITY_NAMES.get(_int(num), str(num))
    body = obj.get("body")
    if body is not None:
        r.body = json_any(body, 1)
    r.attrs = json_kvlist(obj.get("attributes"), 1)
    for attr, camel, snake in (("trace_id", "traceId", "trace_id"), ("span_id", "spanId", "span_id")):
        v = _get(obj, camel, snake)
        if isinstance(v, str):
            setattr(r, attr, v.lower())
    ev = _get(obj, "eventName", "event_name")
    r.event = ev if isinstance(ev, str) else ""
    return r


def parse_json_request(body: bytes) -> list[ResourceLogs]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError("body must be an ExportLogsServiceRequest object")
    out: list[ResourceLogs] = []
    for rl in _list(_get(doc, "resourceLogs", "resource_logs")):
        if not isinstance(rl, dict):
            raise ValueError("resourceLogs entries must be objects")
        res = rl.get("resource") or {}
        resource = json_kvlist(res.get("attributes") if isinstance(res, dict) else None, 1)
        scopes: list[ScopeLogs] = []
        for sl in _list(_get(rl, "scopeLogs", "scope_logs")):
            if not isinstance(sl, dict):
                raise ValueError("scopeLogs entries must be objects")
            sc = sl.get("scope") or {}
            scope = sc.get("name", "") if isinstance(sc, dict) else ""
            records: list[Record | TooDeep] = []
            for lr in _list(_get(sl, "logRecords", "log_records")):
                try:
                    records.append(json_record(lr))
                except TooDeep as e:
                    records.append(e)
            scopes.append((scope if isinstance(scope, str) else "", records))
        out.append((resource, scopes))
    return out


# -- records ----------------------------------------------------------------------------


def otlp_topic(resource: Attrs, names: tuple[str, ...], default: bytes) -> bytes:
    for name in names:
        v = resource.get(name)
        if isinstance(v, str | int) and not isinstance(v, bool):
            t = sanitize_topic(str(v))
            if t is not None:
                return t
    return default


def record_line(resource: Attrs, scope: str, r: Record) -> bytes:
    fields = dict(resource)
    if scope:
        fields["scope"] = scope
    fields.update(r.attrs)
    for name, value in (
        ("severity", r.severity),
        ("trace_id", r.trace_id),
        ("span_id", r.span_id),
        ("event_name", r.event),
    ):
        if value:
            fields[name] = value
    prefix = fields_prefix(fields)
    if r.body_raw is not None:
        return prefix + r.body_raw.replace(b"\n", b"\\n")
    if r.body is None:
        return prefix.rstrip(b" ")
    if isinstance(r.body, str):
        return prefix + escape_lf(r.body)
    return prefix + json.dumps(r.body, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def to_batch(
    parsed: list[ResourceLogs], names: tuple[str, ...], default: bytes, max_bytes: int = 1 << 62
) -> tuple[Batch, int, str]:
    """Parsed resource logs → (batch, records rejected, the first rejection's
    reason); HTTPError(413) once the records would pass ``max_bytes``."""
    batch = Batch()
    rejected, reason = 0, ""
    total = 0
    for resource, scopes in parsed:
        topic = otlp_topic(resource, names, default)
        for scope, records in scopes:
            lines: list[bytes] = []
            times: list[int | None] = []
            for r in records:
                if isinstance(r, TooDeep):
                    rejected += 1
                    reason = reason or str(r)
                    continue
                line = record_line(resource, scope, r)
                total += len(line) + 40
                if total > max_bytes:
                    raise HTTPError(
                        413,
                        f"the request would become more than {max_bytes} bytes of records "
                        "(attributes repeat on every record); send smaller batches",
                    )
                lines.append(line)
                times.append(r.time)
            batch.add(topic, lines, times)
    return batch, rejected, reason


def parse_otlp(
    body: bytes, protobuf: bool, names: tuple[str, ...], default: bytes, cap: int
) -> tuple[Batch, int, str]:
    """A request body → ``to_batch``'s answer. Records may take at most
    ``MAX_EXPANSION`` times the body (64 KiB at least), never more than ``cap``."""
    try:
        parsed = parse_pb_request(body) if protobuf else parse_json_request(body)
    except (ValueError, UnicodeDecodeError, OverflowError, TypeError) as e:
        raise HTTPError(400, f"bad OTLP logs request: {e}") from None
    return to_batch(parsed, names, default, min(MAX_EXPANSION * max(len(body), 64 << 10), cap))


# -- answers -----------------------------------------------------------------------------


def _pb_varint(v: int) -> bytes:
    out = bytearray()
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb_bytes(num: int, data: bytes) -> bytes:
    return _pb_varint(num << 3 | 2) + _pb_varint(len(data)) + data


def success_response(protobuf: bool, rejected: int, reason: str) -> Response:
    if protobuf:
        body = b""
        if rejected:
            partial = _pb_varint(1 << 3) + _pb_varint(rejected) + _pb_bytes(2, reason.encode())
            body = _pb_bytes(1, partial)
        return Response(200, body, content_type="application/x-protobuf")
    doc: dict[str, Any] = {}
    if rejected:
        doc["partialSuccess"] = {"rejectedLogRecords": rejected, "errorMessage": reason}
    return Response.json(doc)


_GRPC_CODES = {400: 3, 413: 8, 415: 3, 499: 1, 503: 14}


def error_response(protobuf: bool, e: HTTPError) -> Response:
    """A google.rpc.Status body, as the OTLP/HTTP spec asks of failures."""
    code = _GRPC_CODES.get(e.status, 2)
    headers = {"Retry-After": "1"} if e.status == 503 else {}
    if protobuf:
        body = _pb_varint(1 << 3) + _pb_varint(code) + _pb_bytes(2, e.message.encode())
        return Response(e.status, body, headers, content_type="application/x-protobuf")
    resp = Response.json({"code": code, "message": e.message}, e.status)
    resp.headers.update(headers)
    return resp


def is_protobuf(content_type: str) -> bool:
    """OTLP/HTTP's two encodings by Content-Type: True for protobuf, False for
    JSON; HTTPError(415) for anything else."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in PROTOBUF_TYPES:
        return True
    if ctype in JSON_TYPES:
        return False
    raise HTTPError(415, f"unsupported Content-Type {ctype!r} (application/x-protobuf or application/json)")


class OTLPLogs:
    """``POST /v1/logs``: OTLP/HTTP logs into the push writer."""

    def __init__(self, w: PushWriter, topic_attributes: tuple[str, ...]) -> None:
        self.w = w
        self.topic_attributes = topic_attributes

    async def logs(self, req: Request) -> Response:
        w = self.w
        w.stats.requests += 1
        protobuf = False  # a 415 is answered in JSON
        try:
            protobuf = is_protobuf(req.headers.get("content-type", ""))
            body = await w.read_body(req)
            batch, rejected, reason = await w.run(
                parse_otlp, body, protobuf, self.topic_attributes, w.default_topic(req), 2 * w.max_body
            )
            if batch.records:
                await w.commit(batch)
        except HTTPError as e:
            w.stats.rejected += 1
            return error_response(protobuf, e)
        if rejected:
            log.info("OTLP logs: %d records rejected: %s", rejected, reason)
        return success_response(protobuf, rejected, reason)


def otlp_router(w: PushWriter, topic_attributes: tuple[str, ...]) -> Router:
    h = OTLPLogs(w, topic_attributes)
    r = Router()
    r.add("POST", "/v1/logs", h.logs)
    r.add("POST", "/otlp/v1/logs", h.logs)
    return r
