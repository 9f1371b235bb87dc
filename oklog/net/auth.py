"""Who may call what: node proofs from the cluster key, client tokens with roles.

Two kinds of caller:

* **Members** prove they hold the cluster key on every node-to-node HTTP call:
  header ``X-Oklog-Node: v1 TS NONCE MAC``, MAC = HMAC-SHA256 over
  ``TS NONCE METHOD TARGET`` (target = path and query as sent) with a key
  derived (HKDF) from a cluster key. Every key of the ring verifies, so proofs
  follow key rotation; a proof is good within ``SKEW`` seconds of the receiver's
  clock and only once (its nonce is remembered), so a captured request cannot
  be replayed. The body is not covered (see docs/decisions.md, Security).
* **Clients** present a token from the ``-auth.tokens`` file: ``Authorization:
  Bearer TOKEN``, or Basic with the token as password (or as user name with an
  empty password); on the raw TCP ingest ports a first line
  ``\\x01oklog-token TOKEN\\n`` (before any topic line).

Tokens file: one ``TOKEN ROLE NAME`` per line (``#`` comments), role ``ingest``,
``query`` or ``admin``; re-read when it changes (checked at most once a second)
and on SIGHUP. Tokens are kept only as SHA-256 digests.

Endpoint classes (``route_class``): ``open`` (``/health``), ``ingest``,
``query``, ``node`` (internal: members, or an admin token) and ``admin``
(anything not listed: new endpoints are admin-only until classified here).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from oklog.cluster.keyring import Keyring
from oklog.net.http import Request, Response
from oklog.net.tls import close_quietly

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("oklog.net.auth")

ROLES = ("ingest", "query", "admin")
NODE_HEADER = "x-oklog-node"
TOKEN_PREAMBLE = b"\x01oklog-token "
SKEW = 300.0  # seconds a node proof's time may differ from ours
MAX_NONCES = 500_000  # remembered nonces (only ones with a valid MAC get in)
MIN_TOKEN_LEN = 16
RELOAD_CHECK = 1.0  # seconds between checks of the tokens file
PREAMBLE_LIMIT = 4096  # bytes of a TCP connection read looking for the token line
PREAMBLE_TIMEOUT = 10.0

# Internal endpoints: called by members (or by an admin's repair/rebalance).
NODE_ROUTES = frozenset({
    "/ingest/next", "/ingest/read", "/ingest/pending", "/ingest/commit", "/ingest/failed", "/ingest/_stream",
    "/store/replicate", "/store/_query", "/store/_hits", "/store/segment", "/store/segments",
    "/store/_clusterstate",
})
INGEST_ROUTES = frozenset({
    "/ingest/jsonline", "/insert/jsonline", "/loki/api/v1/push", "/v1/logs", "/otlp/v1/logs",
    "/_bulk", r"/[^/_][^/]*/_bulk", "/",
})
QUERY_ROUTES = frozenset({
    "/store/query", "/store/stream", "/cluster/state", "/metrics",
    "/store/hits", "/store/topics",
})
OPEN_ROUTES = frozenset({"/health"})


def route_class(route: str) -> str:
    if route in OPEN_ROUTES:
        return "open"
    if route in NODE_ROUTES:
        return "node"
    if route in INGEST_ROUTES:
        return "ingest"
    if route in QUERY_ROUTES:
        return "query"
    return "admin"


class TokenFileError(ValueError):
    pass


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


@dataclass(frozen=True)
class Principal:
    name: str
    role: str  # ingest | query | admin | node


def parse_tokens(text: str, where: str = "tokens file") -> dict[bytes, Principal]:
    out: dict[bytes, Principal] = {}
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        if len(parts) != 3:
            raise TokenFileError(f"{where}:{n}: want TOKEN ROLE NAME")
        token, role, name = parts
        if role not in ROLES:
            raise TokenFileError(f"{where}:{n}: role {role!r} is not one of {', '.join(ROLES)}")
        if len(token) < MIN_TOKEN_LEN:
            raise TokenFileError(f"{where}:{n}: a token is at least {MIN_TOKEN_LEN} characters (oklog keygen makes one)")
        d = _digest(token)
        if d in out:
            raise TokenFileError(f"{where}:{n}: token repeated")
        out[d] = Principal(name, role)
    return out


class Tokens:
    """The tokens file, re-read when it changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self.table: dict[bytes, Principal] = {}
        self.reload(force=True, strict=True)

    def reload(self, force: bool = False, strict: bool = False) -> bool:
        """Re-read if changed; a bad new file keeps the old tokens (logged), unless ``strict``."""
        self._checked = time.monotonic()
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp and not force:
                return False
            table = parse_tokens(self.path.read_text(), str(self.path))
        except (OSError, UnicodeDecodeError, TokenFileError) as e:
            if strict:
                raise TokenFileError(f"-auth.tokens: {e}") from None
            log.error("tokens file not re-read, keeping the previous tokens: %s", e)
            return False
        self._stamp, self.table = stamp, table
        log.info("tokens file %s: %d tokens", self.path, len(table))
        return True

    def lookup(self, token: str | bytes) -> Principal | None:
        if time.monotonic() - self._checked >= RELOAD_CHECK:
            self.reload()
        return self.table.get(_digest(token))


# -- node proofs ---------------------------------------------------------------------


def _http_key(key: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"oklog node http v1").derive(key)


class NodeKeys:
    """HTTP proof keys derived from a keyring (re-derived when the ring's keys change)."""

    def __init__(self, ring: Keyring) -> None:
        self.ring = ring
        self._for: list[bytes] = []
        self._keys: list[bytes] = []
        self._nonces: dict[str, float] = {}

    def keys(self) -> list[bytes]:
        if self.ring.keys is not self._for:
            self._for = self.ring.keys
            self._keys = [_http_key(k) for k in self._for]
        return self._keys

    def sign(self, method: str, target: bytes, now: float | None = None) -> str:
        ts = str(int(now if now is not None else time.time()))
        nonce = os.urandom(12).hex()
        mac = hmac.new(self.keys()[0], _msg(ts, nonce, method, target), hashlib.sha256).hexdigest()
        return f"v1 {ts} {nonce} {mac}"

    def verify(self, value: str, method: str, target: bytes, now: float | None = None) -> str | None:
        """None if the proof holds, else why not."""
        parts = value.split(" ")
        if len(parts) != 4 or parts[0] != "v1":
            return "malformed node proof"
        _, ts, nonce, mac = parts
        try:
            t = int(ts)
            got = bytes.fromhex(mac)
        except ValueError:
            return "malformed node proof"
        now = now if now is not None else time.time()
        if abs(now - t) > SKEW:
            return "node proof outside the clock window (clocks apart?)"
        msg = _msg(ts, nonce, method, target)
        if not any(hmac.compare_digest(hmac.new(k, msg, hashlib.sha256).digest(), got) for k in self.keys()):
            return "node proof does not verify with the cluster key"
        if nonce in self._nonces:
            return "node proof replayed"
        if len(self._nonces) >= MAX_NONCES:
            self._nonces = {n: e for n, e in self._nonces.items() if e > now}
            if len(self._nonces) >= MAX_NONCES:
                return "too many recent node proofs"
        self._nonces[nonce] = t + SKEW + 1
        return None


def _msg(ts: str, nonce: str, method: str, target: bytes) -> bytes:
    if target.endswith(b"?"):  # "path?" arrives as path and an empty query: the same target
        target = target[:-1]
    return b"%s %s %s %s" % (ts.encode(), nonce.encode(), method.encode(), target)


class ClientAuth(httpx.Auth):
    """Credentials on every request of an httpx client: a member's proof and/or a token.
    ``https`` turns the project's ``http://`` URLs into ``https://`` (TLS clusters).
    ``node_route`` (a member calling members): the project's ``http://API_ADDR`` URLs
    go to ``https://NODE_ADDR``, that member's TLS listener (oklog.cluster.nodetls);
    an address it does not know is not called at all (fails closed, never in clear),
    unless ``public_fallback`` (the operator's tools: the address they were given)."""

    def __init__(self, node_keys: NodeKeys | None = None, token: str = "", https: bool = False,
                 node_route: Callable[[str], str | None] | None = None, public_fallback: bool = False) -> None:
        self.node_keys = node_keys
        self.token = token
        self.https = https
        self.node_route = node_route
        self.public_fallback = public_fallback

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        to = None
        if self.node_route is not None and request.url.scheme == "http":
            api = request.url.netloc.decode("ascii")
            to = self.node_route(api)
            if to is None and not self.public_fallback:
                raise httpx.ConnectError(f"{api}: no member's node address known (node-to-node calls go over TLS only)",
                                         request=request)
        if to is not None:
            request.url = request.url.copy_with(scheme="https", netloc=to.encode("ascii"))
            request.headers["Host"] = to
        elif self.https and request.url.scheme == "http":
            request.url = request.url.copy_with(scheme="https")
        if self.node_keys is not None:
            request.headers["X-Oklog-Node"] = self.node_keys.sign(request.method, request.url.raw_path)
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


class NodeRoutes:
    """Members' API address -> their node (TLS) address, learnt from a cluster state:
    how an operator's tool holding the key reaches the members' listener."""

    def __init__(self) -> None:
        self.table: dict[str, str] = {}

    def learn(self, members: Iterable[Mapping[str, Any]]) -> None:
        for m in members:
            api, meta = m.get("api_addr"), m.get("meta")
            node = meta.get("node_addr") if isinstance(meta, dict) else None
            if isinstance(api, str) and isinstance(node, str):
                self.table[api] = node

    def __call__(self, api: str) -> str | None:
        return self.table.get(api)


class ToolTransport(httpx.BaseTransport):
    """Requests to a member's node address over the cluster key's TLS, the rest over
    the public API's (``-tls.ca`` or the system's CAs)."""

    def __init__(self, routes: NodeRoutes, public_verify: ssl.SSLContext | bool, node_verify: ssl.SSLContext) -> None:
        self.routes = routes
        self.public = httpx.HTTPTransport(verify=public_verify)
        self.node = httpx.HTTPTransport(verify=node_verify)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        to_node = request.url.scheme == "https" and request.url.netloc.decode("ascii") in self.routes.table.values()
        return (self.node if to_node else self.public).handle_request(request)

    def close(self) -> None:
        self.public.close()
        self.node.close()


def client_token(flag: str = "") -> str:
    return flag or os.environ.get("OKLOG_TOKEN", "")


# -- the gate ----------------------------------------------------------------------


@dataclass
class AuthStats:
    denied: dict[str, int] = field(default_factory=dict)  # reason -> count
    allowed_node: int = 0
    allowed_token: int = 0

    def deny(self, reason: str) -> None:
        self.denied[reason] = self.denied.get(reason, 0) + 1


class Auth:
    """What a node checks. ``node_keys`` None: no cluster key; ``tokens`` None: no tokens file."""

    def __init__(self, node_keys: NodeKeys | None, tokens: Tokens | None, insecure: bool = False) -> None:
        self.node_keys = node_keys
        self.tokens = tokens
        self.insecure = insecure
        self.stats = AuthStats()
        self.on_deny: Callable[[str], None] | None = None

    def _deny(self, reason: str) -> None:
        self.stats.deny(reason)
        if self.on_deny is not None:
            self.on_deny(reason)

    def token_principal(self, headers: dict[str, str]) -> tuple[Principal | None, str | None]:
        """(principal, None), (None, None) if no credentials, (None, why) if bad ones."""
        value = headers.get("authorization")
        if not value:
            return None, None
        scheme, _, cred = value.strip().partition(" ")
        cred = cred.strip()
        if scheme.lower() == "bearer":
            token = cred
        elif scheme.lower() == "basic":
            try:
                user, _, pw = base64.b64decode(cred, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, ValueError):
                return None, "malformed Basic credentials"
            token = pw or user
        else:
            return None, f"unsupported authorization scheme {scheme!r}"
        if self.tokens is None or not token:
            return None, "unknown token"
        p = self.tokens.lookup(token)
        return (p, None) if p is not None else (None, "unknown token")

    def check(self, req: Request, route: str) -> Response | None:
        """``Router.guard``: None lets the request through, else the refusal."""
        need = route_class(route)
        if need == "open":
            return None
        if need == "node":
            if self.node_keys is None and (self.tokens is None or self.insecure):
                return None
        elif self.tokens is None:
            return None
        proof = req.headers.get(NODE_HEADER)
        if proof is not None:
            return self._check_proof(req, proof)
        p, why = self.token_principal(req.headers)
        if p is None:
            if why is not None:
                return self._refuse(401, "bad_token", why)
            if need == "node":
                return self._refuse(401, "missing", f"{route} is internal: members of the cluster (cluster key) or an admin token only")
            return self._refuse(401, "missing", f"{route} needs a token with role {need} or admin (Authorization: Bearer TOKEN)")
        want = "admin" if need == "node" else need
        if p.role != want and p.role != "admin":
            return self._refuse(403, "wrong_role", f"token {p.name!r} has role {p.role}; {route} needs {want} or admin")
        self.stats.allowed_token += 1
        return None

    def _check_proof(self, req: Request, proof: str) -> Response | None:
        """A member's signature over the request line (method and raw target)."""
        if self.node_keys is None:
            return self._refuse(401, "node_proof_unkeyed", "node proof given but this node has no cluster key")
        qs = req.scope.get("query_string", b"")
        target = req.scope.get("raw_path") or req.path.encode()
        if qs:
            target += b"?" + qs
        why = self.node_keys.verify(proof, req.method, target)
        if why is not None:
            return self._refuse(401, "bad_node_proof", why)
        self.stats.allowed_node += 1
        return None

    def check_member(self, req: Request, route: str) -> Response | None:
        """The guard of the members' TLS listener: internal routes only, members only
        (a valid proof; tokens are for the public API)."""
        if route in OPEN_ROUTES:
            return None
        if route not in NODE_ROUTES:
            return self._refuse(404, "not_internal", f"{route} is not served on the node port (use the API)")
        if req.headers.get(NODE_HEADER) is None:
            return self._refuse(401, "missing", "the node port takes members only (a proof from the cluster key)")
        return self.check(req, route)

    def _refuse(self, status: int, reason: str, message: str) -> Response:
        self._deny(reason)
        log.debug("refused (%d): %s", status, message)
        headers = {"WWW-Authenticate": 'Bearer realm="oklog", Basic realm="oklog"'} if status == 401 else {}
        return Response(status, (message + "\n").encode(), headers=headers)

    # -- raw TCP ingest ------------------------------------------------------------

    async def admit(self, stream: trio.abc.Stream, *, cert_ok: bool = False) -> trio.abc.Stream | None:
        """The connection's token line checked (when tokens are on): the stream to read
        records from (the bytes after the line replayed first), or None (refused and closed)."""
        if self.tokens is None or cert_ok:
            return stream
        buf = b""
        with trio.move_on_after(PREAMBLE_TIMEOUT):
            try:
                # Stop early when the bytes cannot begin a token line (a syslog
                # sender's octet-counted frame has no LF to wait for).
                while b"\n" not in buf and len(buf) < PREAMBLE_LIMIT and TOKEN_PREAMBLE.startswith(
                    buf[: len(TOKEN_PREAMBLE)]
                ):
                    chunk = await stream.receive_some(PREAMBLE_LIMIT)
                    if not chunk:
                        break
                    buf += chunk
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                buf = b""
        line, nl, rest = buf.partition(b"\n")
        if not nl or not line.startswith(TOKEN_PREAMBLE):
            await self._close(stream, 401, "missing", "a token line (\\x01oklog-token TOKEN) must open the connection")
            return None
        p = self.tokens.lookup(line[len(TOKEN_PREAMBLE):].strip())
        if p is None:
            await self._close(stream, 401, "bad_token", "unknown token")
            return None
        if p.role not in ("ingest", "admin"):
            await self._close(stream, 403, "wrong_role", f"token {p.name!r} has role {p.role}; ingest needs ingest or admin")
            return None
        self.stats.allowed_token += 1
        return Replay(stream, rest) if rest else stream

    async def _close(self, stream: trio.abc.Stream, status: int, reason: str, message: str) -> None:
        self._deny(reason)
        log.debug("ingest connection refused (%d): %s", status, message)
        with trio.move_on_after(1):
            try:
                await stream.send_all(b"ERR %d %s\n" % (status, message.encode()))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await close_quietly(stream)

    async def watch_sighup(self) -> None:
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            async for _ in signals:
                if self.tokens is not None:
                    self.tokens.reload(force=True)


class Replay(trio.abc.Stream):
    """A stream whose first bytes were already read: they come back first."""

    def __init__(self, inner: trio.abc.Stream, head: bytes) -> None:
        self.inner = inner
        self.head = head

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.head:
            n = len(self.head) if max_bytes is None else max_bytes
            out, self.head = self.head[:n], self.head[n:]
            return out
        return bytes(await self.inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def socket(self) -> trio.socket.SocketType | None:
        sock = getattr(self.inner, "socket", None)
        return sock if isinstance(sock, trio.socket.SocketType) else None


def register_metrics(auth: Auth, registry: CollectorRegistry) -> None:
    """``oklog_auth_denied_total{reason}``: every refused request or connection."""
    from prometheus_client import Counter

    c = Counter("oklog_auth_denied", "Requests and connections refused for want of credentials, by reason",
                ["reason"], registry=registry)
    for r in ("missing", "bad_token", "wrong_role", "bad_node_proof", "node_proof_unkeyed", "tls_handshake",
              "not_internal"):
        c.labels(r)
    auth.on_deny = lambda reason: c.labels(reason).inc()


# -- secure by default -----------------------------------------------------------------


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


IngestAccess = Callable[[trio.abc.Stream], Awaitable[trio.abc.Stream | None]]


def ingest_gate(auth: Auth, tls_ctx: ssl.SSLContext | None = None) -> IngestAccess | None:
    """The accept step of the TCP ingest listeners: TLS handshake (``tls_ctx``), then
    the token line (unless a verified client certificate stands in). None: nothing to do."""
    if auth.tokens is None and tls_ctx is None:
        return None
    return IngestGate(auth, tls_ctx)


class IngestGate:
    """``ingest_gate``'s step: the stream to read records from, or None (refused, closed)."""

    def __init__(self, auth: Auth, tls_ctx: ssl.SSLContext | None) -> None:
        self.auth = auth
        self.tls_ctx = tls_ctx

    async def __call__(self, stream: trio.abc.Stream) -> trio.abc.Stream | None:
        from oklog.net import tls

        cert_ok = False
        if self.tls_ctx is not None:
            got = await tls.accept(stream, self.tls_ctx)
            if got is None:
                self.auth._deny("tls_handshake")
                return None
            stream, cert_ok = got
        return await self.auth.admit(stream, cert_ok=cert_ok)


def cli_http_kwargs(ns: argparse.Namespace) -> dict[str, Any]:
    """httpx client arguments of a CLI command's ``-token``, ``-tls.ca`` (https) and,
    for the operator's tools, ``-cluster.key`` (sign as a member)."""
    token = client_token(getattr(ns, "token", ""))
    ca = getattr(ns, "tls_ca", "")
    key = getattr(ns, "cluster_key", "")
    keys = NodeKeys(Keyring.load(key)) if key else None
    kw: dict[str, Any] = {"auth": ClientAuth(keys, token, https=bool(ca))}
    if ca:
        from oklog.net.tls import client_context

        kw["verify"] = client_context(ca)
    return kw


def tool_http_kwargs(ns: argparse.Namespace) -> dict[str, Any]:
    """``cli_http_kwargs`` for the operator's tools that call every member (repair,
    rebalance, synchronous httpx): with ``-cluster.key`` they call members on their
    node port over the key's TLS (``NodeRoutes.learn`` from the cluster state)."""
    kw = cli_http_kwargs(ns)
    key = getattr(ns, "cluster_key", "")
    if not key:
        return kw
    from oklog.cluster.nodetls import NodeTLS

    routes = NodeRoutes()
    auth = kw["auth"]
    auth.node_route, auth.public_fallback = routes, True
    node_verify = NodeTLS(auth.node_keys.ring, "oklog tool").client_context()
    kw["transport"] = ToolTransport(routes, kw.pop("verify", True), node_verify)
    return kw
