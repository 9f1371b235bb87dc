"""The TUI's view of a node: an httpx client of the HTTP API. I/O only.

Four calls, nothing else:

    cluster_state()   GET /cluster/state   → the document (``NodeState``, validated)
    query(request)    GET /store/query     → a RecordStream of complete records
    hits(request, step) GET /store/hits    → Hits: matches per time bucket
    tail(q, regex)    GET /store/stream    → a RecordStream that never ends

A ``RecordStream`` yields buffers of whole records (``ULID SP TOPIC SP LINE LF``,
cut at the last LF of what has arrived so far); ``parse_records`` turns a buffer
into ``Record`` values. Anything transport-level becomes ``NodeUnreachable``,
an HTTP error status becomes ``ApiError`` (``EndpointMissing`` for a 404 of an
endpoint this node does not have).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from oklog import units
from oklog.node.state import NodeState
from oklog.records.framing import Carry
from oklog.records.record import ULID_LEN, RecordError, ulid_ms
from oklog.tui.model import node_state

DEFAULT_NODE = "localhost:7650"
DEFAULT_API_PORT = 7650
STATE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0


class ClientError(Exception):
    """Something went wrong talking to the node."""


class NodeUnreachable(ClientError):
    """The node did not answer (refused, reset, timed out, name not found)."""


class ApiError(ClientError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text}" if text else str(status))
        self.status = status
        self.text = text


class EndpointMissing(ApiError):
    """404 for an endpoint: this node does not serve it (yet)."""


# -- records (pure) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    ulid: str
    topic: str
    line: str

    @property
    def ms(self) -> int:
        try:
            return ulid_ms(self.ulid.encode("ascii", "replace"))
        except RecordError:
            return 0

    def time_text(self) -> str:
        """UTC time to the millisecond: ``2026-11-23 20:11:53.123``."""
        ms = self.ms
        dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
        return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def parse_records(buf: bytes, last: int | None = None) -> list[Record]:
    """Whole records in ``buf`` → Records (only the final ``last`` if given).

    Malformed records (no topic field) keep their bytes as the line, so nothing a
    node sends is silently dropped from view.
    """
    lines = buf.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if last is not None and len(lines) > last:
        lines = lines[len(lines) - last :]
    out = []
    for raw in lines:
        ulid = raw[:ULID_LEN]
        rest = raw[ULID_LEN + 1 :]
        topic, sep, line = rest.partition(b" ")
        if len(ulid) != ULID_LEN or raw[ULID_LEN : ULID_LEN + 1] != b" " or not sep:
            out.append(Record("", "", raw.decode("utf-8", "replace")))
            continue
        out.append(
            Record(ulid.decode("ascii", "replace"), topic.decode("utf-8", "replace"),
                   line.decode("utf-8", "replace"))
        )
    return out


def resolve_time(text: str, now: float | None = None) -> str | None:
    """UI time → API value, as ``oklog query`` resolves it (``oklog.units.resolve_time``:
    empty or ``now`` → None, ``5m`` → RFC 3339 UTC 5 minutes ago); anything it
    does not take passes through, so the node's 400 says what is wrong with it."""
    try:
        return units.resolve_time(text, now)
    except ValueError:
        return text.strip()


def base_url(node: str) -> str:
    a = node.strip()
    for scheme in ("http://", "tcp://"):
        if a.startswith(scheme):
            a = a[len(scheme) :]
    a = a.rstrip("/")
    if a.startswith("["):
        host, _, rest = a[1:].partition("]")
        port = rest.lstrip(":") or str(DEFAULT_API_PORT)
        return f"http://[{host}]:{port}"
    host, _, port = a.partition(":")
    return f"http://{host or 'localhost'}:{port or DEFAULT_API_PORT}"


@dataclass(frozen=True)
class QueryRequest:
    q: str = ""
    regex: bool = False
    from_: str = "1h"
    to: str = ""
    topic: str = ""
    more: tuple[str, ...] = ()  # further terms that must match (-q)
    without: tuple[str, ...] = ()  # -v
    where: tuple[str, ...] = ()  # -where
    icase: bool = False  # -i

    def params(self, now: float | None = None) -> dict[str, str | list[str]]:
        p: dict[str, str | list[str]] = {
            "q": [self.q, *self.more] if self.more else self.q,
            "regex": "true" if self.regex else "false",
        }
        if self.icase:
            p["i"] = "true"
        if self.without:
            p["not"] = list(self.without)
        if self.where:
            p["where"] = list(self.where)
        f = resolve_time(self.from_, now)
        if f:
            p["from"] = f
        t = resolve_time(self.to, now)
        if t:
            p["to"] = t
        if self.topic.strip():
            p["topic"] = self.topic.strip()
        return p


@dataclass
class RecordStream:
    """An open streaming response: status, statistics, then buffers of records."""

    status: int
    stats: dict[str, str] = field(default_factory=dict)
    chunks: AsyncIterator[bytes] | None = None

    @property
    def partial(self) -> bool:
        return self.status == 206

    async def buffers(self) -> AsyncIterator[bytes]:
        """Buffers of whole records as they arrive; a torn tail is held back."""
        if self.chunks is None:
            return
        carry = Carry()
        async for chunk in self.chunks:
            if whole := carry.feed(chunk):
                yield whole
        if carry.rest:
            yield carry.rest + b"\n"


def stats_of(headers: httpx.Headers) -> dict[str, str]:
    """``X-Oklog-Nodes-Queried: 3`` → ``{"nodes queried": "3"}``, in header order."""
    out = {}
    for k, v in headers.items():
        if k.lower().startswith("x-oklog-"):
            out[k[len("x-oklog-") :].replace("-", " ").lower()] = v
    return out


@dataclass(frozen=True)
class Hits:
    """``GET /store/hits``: matches per bucket (``{ms: count}``, empty ones absent)."""

    total: int
    step_ms: int
    buckets: dict[int, int]
    complete: bool
    errors: str = ""
    status: int = 200


def parse_hits(status: int, doc: object) -> Hits:
    """The hits document → Hits; ``ApiError`` if it is not one. A 206, or
    ``complete`` anything but true, is an incomplete answer."""
    try:
        assert isinstance(doc, dict)
        buckets: dict[int, int] = {}
        for b in doc.get("buckets", []):
            ms, n = b["ms"], b["count"]
            if type(ms) is not int or type(n) is not int or n < 0:
                raise ValueError
            buckets[ms] = buckets.get(ms, 0) + n
        total, step = doc["total"], doc.get("step_ms", 0)
        if type(total) is not int or type(step) is not int:
            raise ValueError
        errors = doc.get("errors", "")
        complete = doc.get("complete") is True and status != 206
        return Hits(total, step, buckets, complete, errors if isinstance(errors, str) else str(errors), status)
    except (AssertionError, KeyError, TypeError, ValueError):
        raise ApiError(status, "the hits answer is not a hits document") from None


class Client(Protocol):
    """What the app needs from a node; NodeClient and the stub implement it."""

    node: str

    async def cluster_state(self) -> NodeState: ...

    def query(self, request: QueryRequest, now: float | None = None
              ) -> AbstractAsyncContextManager[RecordStream]: ...

    def tail(self, q: str, regex: bool) -> AbstractAsyncContextManager[RecordStream]: ...

    async def hits(self, request: QueryRequest, step: str, now: float | None = None) -> Hits: ...

    async def aclose(self) -> None: ...


class NodeClient:
    def __init__(self, node: str = DEFAULT_NODE, *, state_timeout: float = STATE_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None,
                 http: dict[str, Any] | None = None) -> None:
        self.node = node
        self.base_url = base_url(node)
        self.state_timeout = state_timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT),
            transport=transport,
            **(http or {}),  # credentials and TLS (oklog.net.auth.cli_http_kwargs)
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def cluster_state(self) -> NodeState:
        status, doc = await self._get_json("/cluster/state", timeout=self.state_timeout)
        try:
            return node_state(doc)
        except ValueError as e:
            raise ApiError(status, str(e)) from None

    async def _get_json(self, path: str, *, endpoint: bool = False, **kw: Any) -> tuple[int, object]:
        """GET ``path`` → (status, decoded JSON). A transport error is
        ``NodeUnreachable``, an error status ``ApiError`` (``EndpointMissing`` for
        a 404 of an ``endpoint`` a node may not have), a body not JSON ``ApiError``."""
        try:
            resp = await self._http.get(path, **kw)
        except httpx.TransportError as e:
            raise NodeUnreachable(_describe(e)) from e
        if endpoint and resp.status_code == 404:
            raise EndpointMissing(404, resp.text.strip() or f"{path} not found")
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, resp.text.strip())
        try:
            return resp.status_code, resp.json()
        except ValueError as e:
            raise ApiError(resp.status_code, f"not JSON: {e}") from e

    @asynccontextmanager
    async def query(self, request: QueryRequest, now: float | None = None
                    ) -> AsyncIterator[RecordStream]:
        async with self._stream("/store/query", request.params(now)) as s:
            yield s

    async def hits(self, request: QueryRequest, step: str, now: float | None = None) -> Hits:
        params = request.params(now)
        params["step"] = step
        status, doc = await self._get_json("/store/hits", endpoint=True, params=params)
        return parse_hits(status, doc)

    @asynccontextmanager
    async def tail(self, q: str, regex: bool) -> AsyncIterator[RecordStream]:
        params: dict[str, str | list[str]] = {"q": q, "regex": "true" if regex else "false"}
        async with self._stream("/store/stream", params) as s:
            yield s

    @asynccontextmanager
    async def _stream(self, path: str, params: dict[str, str | list[str]]) -> AsyncIterator[RecordStream]:
        try:
            async with self._http.stream("GET", path, params=params) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    text = resp.text.strip()
                    if resp.status_code == 404:
                        raise EndpointMissing(404, text or f"{path} not found")
                    raise ApiError(resp.status_code, text)
                yield RecordStream(resp.status_code, stats_of(resp.headers), _raw(resp))
        except httpx.TransportError as e:
            raise NodeUnreachable(_describe(e)) from e


async def _raw(resp: httpx.Response) -> AsyncIterator[bytes]:
    async for chunk in resp.aiter_raw():
        yield chunk


def _describe(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
