"""The HTTP server glue: a minimal ASGI router served by hypercorn on trio.

Handlers take a ``Request`` and return a ``Response``. A response either carries
its whole body or a ``stream`` coroutine that writes chunks; streaming is how
query results reach the client as they are found. ``HTTPError`` becomes a plain
text error response with its status.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from oklog.addr import parse_addr  # noqa: F401  (re-exported)

log = logging.getLogger("oklog.http")

MAX_BODY = 256 << 20  # bulk replicate bodies are whole segments
MAX_HEADER_BYTES = 64 << 10  # the limit on a request's head, as promised
# h11 checks its buffer only after each read (hypercorn reads 64 KiB at a time),
# so the configured bound must be a read smaller to hold MAX_HEADER_BYTES.
_H11_INCOMPLETE = MAX_HEADER_BYTES - (64 << 10) + 8 << 10

Write = Callable[[bytes], Awaitable[None]]
Start = Callable[[int, dict[str, str]], Awaitable[None]]


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: Callable[[Write], Awaitable[None]] | None = None
    content_type: str = "text/plain; charset=utf-8"
    # A deferred response decides its status and headers inside ``respond``:
    # it calls ``start(status, headers)`` once, then ``write`` chunks.
    respond: Callable[[Start, Write], Awaitable[None]] | None = None

    @classmethod
    def json(cls, obj, status: int = 200) -> Response:
        return cls(status, json.dumps(obj).encode() + b"\n", content_type="application/json")


class Request:
    def __init__(self, scope: dict, receive) -> None:
        self.scope = scope
        self._receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        raw = scope.get("query_string", b"").decode("latin-1")
        try:
            # latin-1 keeps every percent-escaped byte as it was sent (q is bytes).
            self.query = parse_qs(raw, keep_blank_values=True, encoding="latin-1")
        except ValueError as e:
            raise HTTPError(400, f"malformed query string: {e}") from None
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def has(self, name: str) -> bool:
        return name in self.query

    async def body(self, limit: int = MAX_BODY) -> bytes:
        declared = self.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise HTTPError(413, f"body of {declared} bytes exceeds the {limit}-byte limit")
            except ValueError:
                raise HTTPError(400, "bad Content-Length") from None
        chunks: list[bytes] = []
        total = 0
        while True:
            msg = await self._receive()
            if msg["type"] == "http.disconnect":
                raise HTTPError(499, "client disconnected")
            chunk = msg.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise HTTPError(413, f"body exceeds the {limit}-byte limit")
            chunks.append(chunk)
            if not msg.get("more_body"):
                return b"".join(chunks)


Handler = Callable[[Request], Awaitable[Response]]
UNKNOWN_ROUTE = "(unknown)"  # the route label of every path no handler serves


@dataclass
class _Seen:
    """What a request came to, for ``Router.on_response``."""

    route: str = UNKNOWN_ROUTE
    status: int = 0


class Router:
    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Handler]] = {}
        # Paths with a variable part (``/<index>/_bulk``), tried after exact paths.
        self._patterns: list[tuple[re.Pattern[str], dict[str, Handler]]] = []
        # Called with (route, status) after every request, answered or not.
        self.on_response: Callable[[str, int], None] | None = None
        # Called with (request, route) before the handler; a Response refuses it (oklog.auth).
        self.guard: Callable[[Request, str], Response | None] | None = None

    def add(self, methods: str, path: str, handler: Handler) -> None:
        for m in methods.split("|"):
            self._routes.setdefault(path, {})[m] = handler

    def add_pattern(self, methods: str, pattern: str, handler: Handler) -> None:
        self._patterns.append((re.compile(pattern), dict.fromkeys(methods.split("|"), handler)))

    def mount(self, other: Router) -> None:
        for path, methods in other._routes.items():
            self._routes.setdefault(path, {}).update(methods)
        self._patterns += other._patterns

    def _lookup(self, path: str) -> tuple[str, dict[str, Handler] | None]:
        """(route name for metrics, handlers by method); unknown paths share one name."""
        methods = self._routes.get(path)
        if methods is not None:
            return path, methods
        for pattern, pmethods in self._patterns:
            if pattern.fullmatch(path):
                return pattern.pattern, pmethods
        return UNKNOWN_ROUTE, None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        seen = _Seen()

        async def counted(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                seen.status = msg["status"]
            await send(msg)

        try:
            await self._serve(scope, receive, counted, seen)
        except (trio.BusyResourceError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
            # The client went away mid-request: hypercorn shuts the socket down
            # from its reader, unlocked, while the answer is being sent.
            log.debug("%s %s: client gone while answering: %s", scope["method"], scope["path"], e)
        finally:
            if self.on_response is not None:
                self.on_response(seen.route, seen.status)

    async def _serve(self, scope, receive, send, seen: _Seen) -> None:
        try:
            req = Request(scope, receive)
            seen.route, methods = self._lookup(req.path)
            if methods is None:
                raise HTTPError(404, f"no such endpoint {req.path}")
            denied = self.guard(req, seen.route) if self.guard is not None else None
            handler = methods.get(req.method)
            if handler is None and req.method == "HEAD":
                handler = methods.get("GET")
            if handler is None:
                raise HTTPError(405, f"{req.method} not allowed on {req.path}")
            resp = denied if denied is not None else await handler(req)
        except HTTPError as e:
            resp = Response(e.status, (e.message + "\n").encode())
        except Exception:
            log.exception("handler failed for %s", scope.get("path"))
            resp = Response(500, b"internal error\n")
        seen.status = resp.status  # a deferred answer may still start with another
        await _send_response(scope, send, resp)


async def _send_deferred(scope, send, resp: Response) -> None:
    started = False
    head_only = scope["method"] == "HEAD"

    async def start(status: int, headers: dict[str, str]) -> None:
        nonlocal started
        if started:
            raise RuntimeError("response already started")
        started = True
        hs = [(b"content-type", resp.content_type.encode())]
        hs += [(k.lower().encode(), str(v).encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": hs})

    async def write(chunk: bytes) -> None:
        if not started:
            await start(resp.status, resp.headers)
        if chunk and not head_only:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    assert resp.respond is not None
    try:
        await resp.respond(start, write)
    except HTTPError as e:
        if started:
            raise
        await _send_response(scope, send, Response(e.status, (e.message + "\n").encode()))
        return
    if not started:
        await start(resp.status, resp.headers)
    await send({"type": "http.response.body", "body": b""})


async def _send_response(scope, send, resp: Response) -> None:
    if resp.respond is not None:
        await _send_deferred(scope, send, resp)
        return
    headers = [(b"content-type", resp.content_type.encode())]
    headers += [(k.lower().encode(), str(v).encode()) for k, v in resp.headers.items()]
    head_only = scope["method"] == "HEAD"
    if resp.stream is None:
        headers.append((b"content-length", str(len(resp.body)).encode()))
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head_only else resp.body})
        return
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    if not head_only:

        async def write(chunk: bytes) -> None:
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await resp.stream(write)
    await send({"type": "http.response.body", "body": b""})


async def serve_http(
    app: Router,
    host: str,
    port: int,
    *,
    shutdown: trio.Event | None = None,
    configure: Callable[[Config], None] | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app``; reports the bound (host, port) through task_status."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("oklog.http.hypercorn")
    config.keep_alive_timeout = 75
    config.h11_max_incomplete_size = max(_H11_INCOMPLETE, 8 << 10)
    config.graceful_timeout = 2
    config.read_timeout = 120
    if configure is not None:  # TLS (oklog.tls)
        configure(config)
    trigger = shutdown.wait if shutdown is not None else None

    async def _serve(task_status=trio.TASK_STATUS_IGNORED):
        await serve(app, config, shutdown_trigger=trigger, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(_serve)
        bound = binds[0].rsplit(":", 1)
        task_status.started((host, int(bound[1])))
