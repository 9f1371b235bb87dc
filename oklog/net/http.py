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
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

log = logging.getLogger("oklog.net.http")

MAX_BODY = 256 << 20  # bulk replicate bodies are whole segments
BODIES_IN_FLIGHT = 256 << 20  # request bodies held at once across the node
RETRY_AFTER = "1"  # seconds, when the body budget is spent
MAX_HEADER_BYTES = 64 << 10  # the limit on a request's head, as promised
# h11 checks its buffer only after each read (hypercorn reads 64 KiB at a time),
# so the configured bound must be a read smaller to hold MAX_HEADER_BYTES.


def h11_incomplete_bound(max_header: int) -> int:
    """h11's buffer bound that keeps a request head within ``max_header``."""
    return max(max_header - (64 << 10) + (8 << 10), 8 << 10)


_H11_INCOMPLETE = h11_incomplete_bound(MAX_HEADER_BYTES)

Write = Callable[[bytes], Awaitable[None]]
Start = Callable[[int, dict[str, str]], Awaitable[None]]
# ASGI: a scope and messages are decoded dicts (hypercorn's TypedDicts widened).
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
HostPort = tuple[str, int]
ConnKey = tuple[object, ...]  # a connection's peer address


class ClientGone(Exception):
    """Raised by a response's ``stream`` when its client has gone: the response
    is left unfinished, so the server closes the connection at once (a
    finished one would be kept for the keep-alive timeout)."""


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def response(self) -> Response:
        return Response(self.status, (self.message + "\n").encode(), headers=dict(self.headers))


class BodyBudget:
    """Bytes of request bodies (and what they decode to) held at once across
    the node. A request that would go beyond it is answered 503 with
    Retry-After, and what it held is given back, so stalled or huge bodies
    cost at most the budget however many arrive."""

    def __init__(self, capacity: int = BODIES_IN_FLIGHT) -> None:
        self.capacity = capacity
        self.used = 0
        self.refused = 0

    def take(self, n: int, what: str = "request bodies") -> None:
        if self.used + n > self.capacity:
            self.refused += 1
            raise HTTPError(
                503,
                f"busy: {what} in flight would exceed the node's {self.capacity}-byte budget; retry",
                {"Retry-After": RETRY_AFTER},
            )
        self.used += n

    def give(self, n: int) -> None:
        self.used -= n


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
    def json(cls, obj: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(obj).encode() + b"\n", content_type="application/json")


class Request:
    def __init__(self, scope: Scope, receive: Receive, budget: BodyBudget | None = None) -> None:
        self.scope = scope
        self._receive = receive
        self.budget = budget if budget is not None else BodyBudget()
        self.held = 0  # bytes charged to the budget, given back when the request ends
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        raw = scope.get("query_string", b"").decode("latin-1")
        try:
            # latin-1 keeps every percent-escaped byte as it was sent (q is bytes).
            self.query = parse_qs(raw, keep_blank_values=True, encoding="latin-1")
        except ValueError as e:
            raise HTTPError(400, f"malformed query string: {e}") from None
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        # The connection's socket, where the server exposes it (see connection_socket).
        self.socket: trio.socket.SocketType | None = None
        self.disconnected = False  # the server reported the connection closed

    async def wait_disconnect(self) -> None:
        """Return once the server reports the connection closed. Hypercorn also
        reports its read timeout this way, so a long response that must tell the
        two apart checks ``socket`` (see oklog.stream.server)."""
        while not self.disconnected:
            msg = await self._receive()
            if msg["type"] == "http.disconnect":
                self.disconnected = True

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def reserve(self, n: int, what: str = "request bodies") -> None:
        """Charge ``n`` more bytes (e.g. a decoded body) to the node's budget
        until this request ends; HTTPError(503) if there is no room."""
        self.budget.take(n, what)
        self.held += n

    def release(self) -> None:
        self.budget.give(self.held)
        self.held = 0

    async def body(self, limit: int = MAX_BODY) -> bytes:
        declared = self.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise HTTPError(400, "bad Content-Length") from None
            if size > limit:
                raise HTTPError(413, f"body of {declared} bytes exceeds the {limit}-byte limit")
            if size > self.budget.capacity:
                raise HTTPError(413, f"body of {declared} bytes exceeds the node's {self.budget.capacity}-byte budget")
            if self.budget.used + size > self.budget.capacity:
                self.reserve(size)  # refused before a byte is read: it cannot fit now
        # Charged as it arrives: a stalled body holds what it sent, not what it declared.
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
            if chunk:
                self.reserve(len(chunk))
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
    def __init__(self, budget: BodyBudget | None = None) -> None:
        self._routes: dict[str, dict[str, Handler]] = {}
        # Paths with a variable part (``/<index>/_bulk``), tried after exact paths.
        self._patterns: list[tuple[re.Pattern[str], dict[str, Handler]]] = []
        # Called with (route, status) after every request, answered or not.
        self.on_response: Callable[[str, int], None] | None = None
        self.budget = budget if budget is not None else BodyBudget()
        self.connections: APIConnections | None = None  # set when served with a connection cap
        # Called with (request, route) before the handler; a Response refuses it (oklog.net.auth).
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        conns = self.connections
        if conns is not None:
            conns.request(scope.get("client"), +1)
        try:
            await self._counted(scope, receive, send)
        finally:
            if conns is not None:
                conns.request(scope.get("client"), -1)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = _Seen()

        async def counted(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                seen.status = msg["status"]
            await send(msg)

        try:
            await self._serve(scope, receive, counted, seen, connection_socket(send))
        except (trio.BusyResourceError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
            # The client went away mid-request: hypercorn shuts the socket down
            # from its reader, unlocked, while the answer is being sent.
            log.debug("%s %s: client gone while answering: %s", scope["method"], scope["path"], e)
        finally:
            if self.on_response is not None:
                self.on_response(seen.route, seen.status)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, seen: _Seen, sock: trio.socket.SocketType | None = None
    ) -> None:
        req: Request | None = None
        try:
            req = Request(scope, receive, self.budget)
            req.socket = sock
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
            resp = e.response()
        except Exception:
            log.exception("handler failed for %s", scope.get("path"))
            resp = Response(500, b"internal error\n")
        seen.status = resp.status  # a deferred answer may still start with another
        try:
            await _send_response(scope, send, resp)
        finally:
            if req is not None:
                req.release()


def connection_socket(send: Send) -> trio.socket.SocketType | None:
    """The TCP socket under hypercorn's ASGI ``send`` (HTTP/1.1), or None.

    ASGI gives a handler no handle on its connection, and hypercorn reports a
    client gone and its own read timeout alike (``http.disconnect``) while
    swallowing write errors; a response that lasts as long as its client (a live
    tail) needs the socket to tell whether the client is there and to end a
    write the client never reads. Found through hypercorn's objects (pinned
    version); None if they differ, and callers fall back to ``http.disconnect``.
    """
    try:
        found: Any = send  # hypercorn's bound methods, down to its TCPServer
        server = found.__self__.send.__self__.send.__self__
        stream = server.stream
        sock = getattr(stream, "socket", None) or stream.transport_stream.socket
    except AttributeError:
        return None
    return sock if isinstance(sock, trio.socket.SocketType) else None


async def _send_deferred(scope: Scope, send: Send, resp: Response) -> None:
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
        await _send_response(scope, send, e.response())
        return
    if not started:
        await start(resp.status, resp.headers)
    await send({"type": "http.response.body", "body": b""})


async def _send_response(scope: Scope, send: Send, resp: Response) -> None:
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

        try:
            await resp.stream(write)
        except ClientGone:
            return
    await send({"type": "http.response.body", "body": b""})


class APIConnections:
    """The API's open connections, at most ``cap`` (0: no cap). At the cap a new
    connection takes the place of the oldest one with no request in progress —
    a client still sending its request head, or an idle keep-alive one — so a
    flood of slow-header clients cannot lock ``/health`` out; with every
    connection busy in a request it is refused."""

    def __init__(self, cap: int = 0) -> None:
        self.cap = cap
        self._conns: dict[ConnKey, trio.CancelScope] = {}
        self._active: dict[ConnKey | None, int] = {}
        self.evicted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._conns)

    def request(self, client: Any, delta: int) -> None:
        """A request on connection ``client`` (the scope's peer address) began (+1) or ended (-1)."""
        key = tuple(client) if client else None
        if key in self._conns:
            self._active[key] = self._active.get(key, 0) + delta

    def admit(self, key: ConnKey, scope: trio.CancelScope) -> bool:
        if self.cap and len(self._conns) >= self.cap:
            victim = next((k for k in self._conns if not self._active.get(k)), None)
            if victim is None:
                self.refused += 1
                return False
            self._conns.pop(victim).cancel()
            self._active.pop(victim, None)
            self.evicted += 1
        self._conns[key] = scope
        return True

    def gone(self, key: ConnKey, scope: trio.CancelScope) -> None:
        if self._conns.get(key) is scope:
            del self._conns[key]
            self._active.pop(key, None)

    def as_dict(self) -> dict[str, int]:
        return {"open": len(self._conns), "cap": self.cap, "evicted": self.evicted, "refused": self.refused}


async def serve_http(
    app: Router,
    host: str,
    port: int,
    *,
    shutdown: trio.Event | None = None,
    idle_timeout: float = 30.0,
    connections: APIConnections | None = None,
    configure: Callable[[Config], None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[HostPort] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app``; reports the bound (host, port) through task_status.

    ``idle_timeout``: a connection is closed when it has sent no complete
    request head this long (hypercorn's keep-alive timer also runs while a
    head arrives), so slow-header clients hold a descriptor that long at most.
    ``connections``: accept connections here, within its cap, and hand each
    to hypercorn's connection handler (hypercorn itself has no cap)."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("oklog.net.http.hypercorn")
    config.keep_alive_timeout = idle_timeout
    config.h11_max_incomplete_size = _H11_INCOMPLETE
    config.graceful_timeout = 2
    config.read_timeout = 120
    if configure is not None:  # TLS (oklog.net.tls)
        configure(config)
    if connections is not None:
        await _serve_capped(app, config, host, port, connections, shutdown, task_status, ssl_context)
        return
    trigger = shutdown.wait if shutdown is not None else None

    async def _serve(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        # Router speaks ASGI with plain dicts, not hypercorn's TypedDict events.
        await serve(app, config, shutdown_trigger=trigger, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(_serve)
        bound = binds[0].rsplit(":", 1)
        task_status.started((host, int(bound[1])))


async def _serve_capped(
    app: Router,
    config: Config,
    host: str,
    port: int,
    conns: APIConnections,
    shutdown: trio.Event | None,
    task_status: trio.TaskStatus[HostPort],
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    from hypercorn.trio.worker_context import WorkerContext

    context = WorkerContext(None)
    if ssl_context is None and config.ssl_enabled:
        ssl_context = config.create_ssl_context()
    app.connections = conns
    handler = _CappedConnection(app, config, context, conns, ssl_context)
    listeners = await trio.open_tcp_listeners(port, host=host if host not in ("", "0.0.0.0") else None)
    for ln in listeners:
        ln.socket.listen(config.backlog)
    task_status.started((host, listeners[0].socket.getsockname()[1]))
    async with trio.open_nursery() as nursery:
        if shutdown is not None:

            async def stop() -> None:
                await shutdown.wait()
                await context.terminated.set()
                nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout

            nursery.start_soon(stop)
        await trio.serve_listeners(handler, listeners, handler_nursery=nursery)


class _CappedConnection:
    """Serves one accepted connection within ``conns``' cap with hypercorn's own
    per-connection server (the one its serve() runs), under an accept loop of
    ours; hypercorn is pinned, as these names are internal."""

    def __init__(
        self,
        app: Router,
        config: Config,
        context: Any,
        conns: APIConnections,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        from hypercorn.utils import wrap_app

        # Router speaks ASGI with plain dicts, not hypercorn's TypedDict events.
        self.wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
        self.config = config
        self.context = context
        self.conns = conns
        self.ssl_context = ssl_context

    async def __call__(self, stream: trio.SocketStream) -> None:
        from hypercorn.trio.tcp_server import TCPServer
        from hypercorn.typing import ConnectionState

        try:
            key = tuple(stream.socket.getpeername()[:2])
        except OSError:
            await stream.aclose()
            return
        scope = trio.CancelScope()
        if not self.conns.admit(key, scope):
            await stream.aclose()
            return
        served: trio.abc.Stream = stream
        if self.ssl_context is not None:  # as hypercorn's own listeners do with TLS on
            served = trio.SSLStream(stream, self.ssl_context, server_side=True, https_compatible=True)
        try:
            with scope:
                # hypercorn declares a SocketStream; it serves an SSLStream over one as well.
                await TCPServer(self.wrapped, self.config, self.context, ConnectionState({}), served)  # type: ignore[arg-type]
        finally:
            self.conns.gone(key, scope)
            if scope.cancelled_caught:
                with trio.CancelScope(shield=True):
                    try:
                        await stream.aclose()
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
