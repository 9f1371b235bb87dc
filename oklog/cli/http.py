"""The one HTTP client of the command-line tools: HTTP/1.1 over a plain socket.

``oklog query`` is run from scripts and compared with grep, so its fixed cost
counts: this module imports no HTTP library (httpx costs ~0.4 s of start-up,
http.client ~50 ms with its email.* imports), nor typing or dataclasses. It
speaks the little HTTP/1.1 the tools need: one request per connection
(``Connection: close``), GET, HEAD or POST with a body, a bearer token and TLS
(``-token``, ``-tls.ca``: :class:`Access`), and a response body that is chunked
(the node streams that way), sized by Content-Length or ended by EOF.

The body is received into one large reused buffer and handed on from there
(:meth:`Response.copy_body`): no per-line work, no copies. A caller that
follows an endless body (``oklog stream``) takes the socket and the bytes
received after the head (:meth:`Response.detach`) and reads on its own terms.
"""

from __future__ import annotations

import os
import socket

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~5 ms)
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Mapping

    Sink = Callable[[memoryview], object]

BUF_SIZE = 4 << 20  # receive buffer; the node sends chunks of about 1 MiB
MAX_HEAD = 64 << 10  # status line and headers, and any one chunk-size line
_HEX = b"0123456789abcdefABCDEF"


class Access:
    """How to reach the nodes: ``-token`` (or $OKLOG_TOKEN) and ``-tls.ca``."""

    __slots__ = ("tls", "token")

    def __init__(self, token: str = "", tls: ssl.SSLContext | None = None) -> None:
        self.token = token
        self.tls = tls

    @classmethod
    def of(cls, ns: object) -> Access:
        """The access a command's flags give (``ns.token``, ``ns.tls_ca``; both optional)."""
        token = str(getattr(ns, "token", "") or "") or os.environ.get("OKLOG_TOKEN", "")
        ca = str(getattr(ns, "tls_ca", "") or "")
        if not ca:
            return cls(token)
        from oklog.net.tls import client_context

        return cls(token, client_context(ca))

    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


NO_ACCESS = Access()


class ResponseError(Exception):
    """The response broke HTTP/1.1 framing or ended before its end."""


TRUNCATED = "connection closed before the end of the response: the output is truncated"


def printable(text: str) -> str:
    """Remote text on one terminal line: control bytes shown as spaces."""
    return "".join(c if c >= " " and c != "\x7f" else " " for c in text)


def _shown(line: bytes) -> str:
    return printable(line[:200].decode("latin-1"))


class Response:
    """One response read from a socket: status and headers parsed, the body not yet read."""

    def __init__(self, sock: socket.socket, method: str, buf_size: int = BUF_SIZE) -> None:
        self.sock = sock
        self.buf = bytearray(buf_size)
        self.view = memoryview(self.buf)
        self.pos = 0  # unread bytes are buf[pos:end]
        self.end = 0
        self.method = method
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        while True:  # skip interim 1xx responses
            self._read_head()
            if not 100 <= self.status < 200 or self.status == 101:
                break

    def detach(self) -> tuple[socket.socket, bytes]:
        """The socket and the body bytes received with the head, for a caller
        that reads the rest of the body itself."""
        return self.sock, bytes(self.view[self.pos : self.end])

    def getheader(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def _fill(self) -> int:
        """Receive more bytes after the unread ones, making room first; 0 at EOF."""
        if self.pos == self.end:
            self.pos = self.end = 0
        elif self.end == len(self.buf) and self.pos:
            n = self.end - self.pos
            self.view[:n] = self.view[self.pos : self.end]  # memoryview copies handle overlap
            self.pos, self.end = 0, n
        if self.end == len(self.buf):
            raise ResponseError("a response line is longer than the receive buffer")
        n = self.sock.recv_into(self.view[self.end :])
        self.end += n
        return n

    def _read_head(self) -> None:
        start = self.pos
        i = self.buf.find(b"\r\n\r\n", start, self.end)
        while i < 0:
            if self.end - self.pos > MAX_HEAD:
                raise ResponseError(f"response headers over {MAX_HEAD >> 10} KiB")
            searched = max(self.end - self.pos - 3, 0)
            if self._fill() == 0:
                raise ResponseError("connection closed before the response headers ended")
            start = self.pos
            i = self.buf.find(b"\r\n\r\n", start + searched, self.end)
        if i - start > MAX_HEAD:
            raise ResponseError(f"response headers over {MAX_HEAD >> 10} KiB")
        lines = bytes(self.buf[start:i]).split(b"\r\n")
        self.pos = i + 4
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/") or len(code) != 3 or not code.isdigit():
            raise ResponseError(f"bad status line: {_shown(lines[0])}")
        self.status = int(code)
        self.reason = reason.decode("latin-1").strip()
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise ResponseError(f"bad header line: {_shown(line)}")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        self.headers = headers

    # -- the body ---------------------------------------------------------------------

    def copy_body(self, sink: Sink) -> None:
        """Pass the body to ``sink`` as memoryviews of the receive buffer.

        A view is valid only during the call (the buffer is reused). Raises
        ResponseError if the body is malformed or cut short.
        """
        if self.method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200:
            return
        te = self.getheader("transfer-encoding")
        if te is not None and te.rsplit(",", 1)[-1].strip().lower() == "chunked":
            self._copy_chunked(sink)
            return
        cl = self.getheader("content-length")
        if te is None and cl is not None:
            try:
                length = int(cl)
            except ValueError:
                raise ResponseError(f"bad Content-Length: {printable(cl)[:200]}") from None
            if length < 0:
                raise ResponseError(f"bad Content-Length: {printable(cl)[:200]}")
            self._copy_exactly(length, sink)
            return
        self._copy_to_eof(sink)

    def read(self) -> bytes:
        parts: list[bytes] = []
        self.copy_body(lambda view: parts.append(bytes(view)))
        return b"".join(parts)

    def _copy_exactly(self, n: int, sink: Sink) -> None:
        """Copy the next ``n`` body bytes, a whole chunk (or a full buffer) per call to sink."""
        cap = len(self.buf)
        while n:
            avail = self.end - self.pos
            if avail < n and (self.pos or self.end < cap):
                # Room for more: gather the rest of the chunk before writing it.
                if self._fill() == 0:
                    raise ResponseError(TRUNCATED)
                continue
            k = avail if avail < n else n
            sink(self.view[self.pos : self.pos + k])
            self.pos += k
            n -= k

    def _copy_to_eof(self, sink: Sink) -> None:
        while True:
            if self.end > self.pos:
                sink(self.view[self.pos : self.end])
                self.pos = self.end
            if self._fill() == 0:
                return

    def _chunk_size(self) -> int:
        i = self.buf.find(b"\n", self.pos, self.end)
        while i < 0:
            if self.end - self.pos > MAX_HEAD:
                raise ResponseError("chunk size line too long")
            if self._fill() == 0:
                raise ResponseError(TRUNCATED)
            i = self.buf.find(b"\n", self.pos, self.end)
        line = bytes(self.buf[self.pos : i])
        self.pos = i + 1
        size = line.split(b";", 1)[0].strip()  # drops chunk extensions and the CR
        if not size or size.strip(_HEX) or len(size) > 15:
            raise ResponseError(f"bad chunk size line: {_shown(line)}")
        return int(size, 16)

    def _copy_chunked(self, sink: Sink) -> None:
        while size := self._chunk_size():
            self._copy_exactly(size, sink)
            while self.end - self.pos < 2:
                if self._fill() == 0:
                    raise ResponseError(TRUNCATED)
            if self.buf[self.pos : self.pos + 2] != b"\r\n":
                raise ResponseError("chunk not followed by CRLF")
            self.pos += 2
        # The last chunk: any trailer fields are not needed (the connection closes).


def request(
    host: str, port: int, method: str, path: str, timeout: float | None, buf_size: int = BUF_SIZE,
    *, token: str = "", tls: ssl.SSLContext | None = None, body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Send one request with ``Connection: close`` and read the response head.

    ``body`` is sent with its Content-Length (POST); ``headers`` are added as given."""
    name = f"[{host}]" if ":" in host else host
    try:
        # getaddrinfo encodes a str host with the idna codec, importing it (~3 ms).
        addr_host: str | bytes = host.encode("ascii")
        host_header = f"{name}:{port}".encode("ascii")
    except UnicodeEncodeError:
        addr_host = host
        host_header = name.encode("idna") + b":%d" % port
    # create_connection takes a bytes host (typeshed says str only)
    sock = socket.create_connection((addr_host, port), timeout=timeout)  # type: ignore[arg-type]
    try:
        # The request goes in one write, but over TLS it follows the handshake's last
        # flight: with Nagle it would wait for that flight's (delayed) ACK, ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
        sock.sendall(_head(method, path, host_header, token, body, headers) + (body or b""))
        return Response(sock, method, buf_size)
    except BaseException:
        sock.close()
        raise


def _head(
    method: str, path: str, host_header: bytes, token: str, body: bytes | None, headers: Mapping[str, str] | None
) -> bytes:
    extra = b"Authorization: Bearer %s\r\n" % token.encode() if token else b""
    if body is not None:
        extra += b"Content-Length: %d\r\n" % len(body)
    for k, v in (headers or {}).items():
        extra += f"{k}: {v}\r\n".encode("latin-1")
    return (
        b"%s %s HTTP/1.1\r\nHost: %s\r\nAccept-Encoding: identity\r\n%sConnection: close\r\n\r\n"
        % (method.encode("ascii"), path.encode("ascii"), host_header, extra)
    )


def call(
    host: str, port: int, method: str, path: str, timeout: float | None, access: Access = NO_ACCESS,
    body: bytes | None = None, headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One whole exchange: (status, headers by lower-case name, body)."""
    resp = request(
        host, port, method, path, timeout, 1 << 20, token=access.token, tls=access.tls, body=body, headers=headers
    )
    try:
        data = resp.read()
    finally:
        resp.sock.close()
    return resp.status, {k.lower(): v for k, v in resp.headers}, data


def get(
    host: str, port: int, path: str, timeout: float | None, access: Access = NO_ACCESS
) -> tuple[int, dict[str, str], bytes]:
    return call(host, port, "GET", path, timeout, access)


# -- query strings and errors as a person reads them ---------------------------------------


_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _quote_plus(text: str) -> str:
    # The bytes the shell passed (os.fsencode undoes argv decoding): a term typed
    # in a UTF-8 terminal is searched as the UTF-8 bytes the logs hold.
    return "".join(chr(b) if b in _SAFE else "+" if b == 0x20 else f"%{b:02X}" for b in os.fsencode(text))


def urlencode(params: Mapping[str, str | list[str]]) -> str:
    """``urllib.parse.urlencode`` of the argument bytes, without importing urllib;
    a list value repeats its name."""
    return "&".join(
        f"{_quote_plus(k)}={_quote_plus(x)}" for k, v in params.items() for x in (v if isinstance(v, list) else [v])
    )


def describe_os_error(e: OSError, timeout: float | None) -> str:
    """An OSError as a person reads it: no Python repr."""
    if isinstance(e, TimeoutError) or type(e).__name__ == "timeout":
        return f"no answer within {timeout:g}s (-timeout)" if timeout else "timed out"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve the host name ({e.strerror or e})"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (is an oklog node listening there?)"
    text = e.strerror or str(e) or type(e).__name__
    return text[:1].lower() + text[1:]
