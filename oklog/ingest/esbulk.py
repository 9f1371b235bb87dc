"""The Elasticsearch bulk API, for shippers that only speak it.

``POST|PUT /_bulk`` and ``/<index>/_bulk``: NDJSON pairs of an action line and
a source line (elasticsearch-py ``helpers.bulk``, rsyslog ``omelasticsearch``,
syslog-ng ``elasticsearch-http()``, Filebeat, Vector, Fluent Bit ``es``).

* ``index`` and ``create`` actions store their source; ``update`` and
  ``delete`` are refused per item (400): oklog records are immutable.
* topic: the action's ``_index``, else the path's index, sanitized as Loki
  label values are (``logs-2026.11.30`` → ``logs-2026_11_30``).
* line: the source's ``message``, ``msg`` or ``log`` field (first present),
  after a ``{k=v,...} `` prefix (Loki push form) of the other fields but
  ``@timestamp``; a source with none of them is kept whole, as sent.
* time: ``@timestamp`` (RFC 3339 or epoch seconds/ms), under the event-time
  rules of ``oklog.ingest.eventtime``.
* ``_id``: a client's id is not kept (ids are not unique keys here); each
  item's answer carries the record's ULID as its ``_id``.

Answers are shaped as Elasticsearch's, so clients neither retry good data
nor drop bad data silently: ``{"took", "errors", "items": [{action: {"_index",
"_id", "status", "result" | "error"}}]}``, with 201 for stored items and 400
for refused ones; a malformed action line fails the whole request (400, as
Elasticsearch does). Every answer carries ``X-Elastic-Product:
Elasticsearch``, which the official clients check. ``GET /`` and ``HEAD /``
answer the version handshake clients make before bulk requests.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from oklog.ingest.httpingest import (
    Batch,
    PushWriter,
    _as_line,
    fields_prefix,
    parse_event_time,
    sanitize_topic,
)
from oklog.net.http import HTTPError, Request, Response, Router

PRODUCT = {"X-Elastic-Product": "Elasticsearch"}
VERSION = "8.17.0"  # what the handshake reports: clients of 7.x and 8.x accept it
MESSAGE_FIELDS = ("message", "msg", "log")
TIME_FIELD = "@timestamp"
CLUSTER_UUID = str(uuid.uuid5(uuid.NAMESPACE_DNS, "oklog"))


@dataclass
class Item:
    action: str
    index: str
    status: int = 201
    error_type: str = ""
    reason: str = ""


def es_error(status: int, type_: str, reason: str) -> Response:
    err = {"type": type_, "reason": reason}
    return _es(Response.json({"error": {"root_cause": [err], **err}, "status": status}, status))


def source_line(raw: bytes, doc: dict[str, Any]) -> tuple[bytes, int | None]:
    """A source document → (line, event time ns or None)."""
    t = parse_event_time(doc.pop(TIME_FIELD)) if TIME_FIELD in doc else None
    for name in MESSAGE_FIELDS:
        if name in doc:
            message = _as_line(doc.pop(name))
            return fields_prefix(doc) + message, t
    return raw, t


def parse_bulk(body: bytes, path_index: str | None, default: bytes) -> tuple[Batch, list[Item]]:
    """A bulk body → (the batch of stored items' lines, every item in order).
    HTTPError(400) for a malformed action line or a missing source."""
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in body.split(b"\n")]
    lines = [ln for ln in lines if ln.strip()]
    batch = Batch()
    items: list[Item] = []
    i = 0
    while i < len(lines):
        op, meta = _action(lines[i], i + 1)
        index = meta.get("_index", path_index)
        index = index if isinstance(index, str) else ""
        i += 1
        if op == "delete":
            items.append(Item(op, index, 400, "illegal_argument_exception",
                              "oklog records are immutable: delete is not supported"))
            continue
        if op not in ("index", "create", "update"):
            raise HTTPError(400, f"Malformed action/metadata line [{i}]: unknown action [{op}]")
        if i >= len(lines):
            raise HTTPError(400, f"the {op} action on line [{i}] has no source line")
        raw = lines[i]
        i += 1
        if op == "update":
            items.append(Item(op, index, 400, "illegal_argument_exception",
                              "oklog records are immutable: update is not supported"))
            continue
        items.append(_source_item(op, index, raw, default, batch))
    return batch, items


def _action(line: bytes, lineno: int) -> tuple[str, dict[str, Any]]:
    """An action/metadata line → (action, its metadata object); HTTPError(400) else."""
    try:
        action = json.loads(line)
    except (ValueError, RecursionError):
        action = None
    if not isinstance(action, dict) or len(action) != 1:
        raise HTTPError(
            400, f"Malformed action/metadata line [{lineno}], expected an object with one action"
        )
    ((op, meta),) = action.items()
    if not isinstance(meta, dict):
        raise HTTPError(400, f"Malformed action/metadata line [{lineno}]: {op} is not an object")
    return op, meta


def _source_item(op: str, index: str, raw: bytes, default: bytes, batch: Batch) -> Item:
    """An index/create source line: added to ``batch`` when it can be stored; its item."""
    topic = sanitize_topic(index) if index else default
    if topic is None:
        return Item(op, index, 400, "invalid_index_name_exception",
                    f"index [{index}] has no usable topic characters")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:
        return Item(op, index, 400, "document_parsing_exception", f"source is not JSON: {e}")
    if not isinstance(doc, dict):
        return Item(op, index, 400, "document_parsing_exception", "source must be a JSON object")
    try:
        line, t = source_line(raw, doc)
    except RecursionError:  # nested too deeply to write its fields back
        line, t = raw, None
    batch.add(topic, [line], [t])
    return Item(op, index or topic.decode())


def bulk_answer(items: list[Item], ulids: list[bytes], took_ms: int) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    k = 0
    for seq, it in enumerate(items):
        body: dict[str, Any]
        if it.status == 201:
            body = {
                "_index": it.index,
                "_id": ulids[k].decode(),
                "_version": 1,
                "result": "created",
                "_shards": {"total": 1, "successful": 1, "failed": 0},
                "_seq_no": seq,
                "_primary_term": 1,
                "status": 201,
            }
            k += 1
        else:
            body = {
                "_index": it.index,
                "status": it.status,
                "error": {"type": it.error_type, "reason": it.reason},
            }
        out.append({it.action: body})
    return {"took": took_ms, "errors": any(it.status != 201 for it in items), "items": out}


def handshake() -> dict[str, Any]:
    return {
        "name": "oklog",
        "cluster_name": "oklog",
        "cluster_uuid": CLUSTER_UUID,
        "version": {
            "number": VERSION,
            "build_flavor": "default",
            "build_type": "oklog",
            "build_hash": "0000000000000000000000000000000000000000",
            "build_date": "2024-12-11T12:08:05.663969764Z",
            "build_snapshot": False,
            "lucene_version": "9.12.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    }


def path_index(path: str) -> str | None:
    """The index named by a ``/<index>/_bulk`` path; None for ``/_bulk``."""
    parts = path.strip("/").split("/")
    return parts[0] if len(parts) == 2 else None


class ESBulk:
    """The Elasticsearch bulk API and the handshake its clients make first."""

    def __init__(self, w: PushWriter) -> None:
        self.w = w

    async def bulk(self, req: Request) -> Response:
        w = self.w
        w.stats.requests += 1
        started = time.monotonic()
        try:
            body = await w.read_body(req)
            batch, items = await w.run(parse_bulk, body, path_index(req.path), w.default_topic(req))
            ulids: list[bytes] = []
            if batch.records:
                await w.commit(batch, ulids)
        except HTTPError as e:
            w.stats.rejected += 1
            kind = "illegal_argument_exception" if e.status == 400 else "oklog_exception"
            return es_error(e.status, kind, e.message)
        answer = bulk_answer(items, ulids, int((time.monotonic() - started) * 1000))
        return _es(Response.json(answer))

    async def root(self, req: Request) -> Response:
        return _es(Response.json(handshake()))


def _es(resp: Response) -> Response:
    resp.headers.update(PRODUCT)
    return resp


def esbulk_router(w: PushWriter) -> Router:
    h = ESBulk(w)
    r = Router()
    r.add("POST|PUT", "/_bulk", h.bulk)
    r.add_pattern("POST|PUT", r"/[^/_][^/]*/_bulk", h.bulk)
    r.add("GET", "/", h.root)
    return r
