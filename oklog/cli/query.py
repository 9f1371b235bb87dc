"""``oklog query``: scripted output of a cluster query.

This command is run from scripts and compared with grep, so its fixed cost
counts: it imports no HTTP library (httpx costs ~0.4 s of start-up, http.client
~50 ms with its email.* imports) but speaks the little HTTP/1.1 it needs over a
plain socket: one request, ``Connection: close``, and a response body that is
chunked (the node streams that way), sized by Content-Length or ended by EOF.

The body is received into one large reused buffer and written to stdout from
there in large writes, a chunk at a time: no per-line work, no copies. The
node formats the records (in parallel, off this process); we only copy.
Statistics go to stderr with ``-v`` (or alone with ``-stats``, via HEAD).
Exit status: 0 ok, 1 error (including a response cut short: the output is then
truncated, after the last whole chunk received), 3 results may be incomplete
(206: a store member that may hold records did not answer; one line on stderr
names them).
"""

from __future__ import annotations

import os
import socket
import sys
import time

from oklog.addr import parse_addr
from oklog.units import DEFAULT_API_PORT, parse_duration

BUF_SIZE = 4 << 20  # receive buffer; the node sends chunks of about 1 MiB
MAX_HEAD = 64 << 10  # status line and headers, and any one chunk-size line
_HEX = b"0123456789abcdefABCDEF"


def format_name(ulid: bool, time_: bool, json_: bool) -> str:
    if json_:
        return "json"
    if time_:
        return "ulidtime" if ulid else "time"
    return "ulid" if ulid else "lines"


def resolve_time(text: str, now: float | None = None) -> str | None:
    """CLI time → API value: ``now``, a duration ago, RFC 3339 or a ULID.

    A duration becomes an RFC 3339 UTC time with milliseconds
    (``2026-11-23T22:23:07.498Z``).
    """
    t = text.strip()
    if not t or t.lower() == "now":
        return None
    try:
        ago = parse_duration(t)
    except ValueError:
        if not _looks_like_time(t):
            raise ValueError(f"{text!r} is not a time: {TIME_HINT}") from None
        return t  # RFC 3339 or ULID; the node validates it
    now = time.time() if now is None else now
    ms = round((now - ago) * 1e6) // 1000  # to the microsecond first, as datetime did
    sec, ms = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{ms:03d}Z"


TIME_HINT = "use a duration ago (30s, 5m, 1h30m, 2d), an RFC 3339 time (2026-11-23T10:00:00Z), a ULID, or now"
_CROCKFORD = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghjkmnpqrstvwxyzOoIiLl")


def _looks_like_time(t: str) -> bool:
    """An RFC 3339 time or a ULID in shape (the node checks it fully)."""
    if len(t) == 26 and all(c in _CROCKFORD for c in t):
        return True
    return len(t) >= 10 and t[:4].isdigit() and t[4] == "-" and t[5:7].isdigit() and t[7] == "-"


def build_params(ns) -> dict[str, str | list[str]]:
    terms = ns.q if isinstance(ns.q, list) else [ns.q]
    params: dict[str, str | list[str]] = {"q": terms[0] if len(terms) == 1 else terms or "", "regex": "true" if ns.regex else "false"}
    if getattr(ns, "i", False):
        params["i"] = "true"
    if getattr(ns, "without", None):
        params["not"] = list(ns.without)
    if getattr(ns, "where", None):
        params["where"] = list(ns.where)
    if getattr(ns, "fields", ""):
        params["fields"] = ns.fields
    for flag in ("A", "B", "C"):
        if getattr(ns, flag, None) is not None:
            params[flag] = str(getattr(ns, flag))
    if getattr(ns, "topic", ""):
        params["topic"] = ns.topic
    for flag, value in (("from", getattr(ns, "from")), ("to", ns.to)):
        try:
            v = resolve_time(value)
        except ValueError as e:
            raise UsageError(f"-{flag} {e}") from None
        if v:
            params[flag] = v
    return params


class UsageError(Exception):
    """A flag value the command cannot use; the message says what would do."""


_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _quote_plus(text: str) -> str:
    # The bytes the shell passed (os.fsencode undoes argv decoding): a term typed
    # in a UTF-8 terminal is searched as the UTF-8 bytes the logs hold.
    return "".join(chr(b) if b in _SAFE else "+" if b == 0x20 else f"%{b:02X}" for b in os.fsencode(text))


def urlencode(params) -> str:
    """``urllib.parse.urlencode`` of the argument bytes, without importing urllib;
    a list value repeats its name."""
    return "&".join(
        f"{_quote_plus(k)}={_quote_plus(x)}" for k, v in params.items() for x in (v if isinstance(v, list) else [v])
    )


def print_stats(headers, out) -> None:
    for k, v in headers:
        if k.lower().startswith("x-oklog-"):
            print(f"{k[len('x-oklog-'):].replace('-', ' ').lower()}: {v}", file=out)


def completeness_note(resp: Response) -> str | None:
    """One line about store members that did not answer, or None.

    On a 206 the results may be incomplete; on a 200 that names missing
    members, the others are known to hold every record (replication)."""
    errors = resp.getheader("x-oklog-errors") or ""
    if resp.status != 206 and not errors:
        return None
    count = resp.getheader("x-oklog-error-count") or ""
    total = resp.getheader("x-oklog-store-members") or ""
    n = int(count) if count.isdigit() else 0
    if n and total.isdigit():
        who = f"{n} of {total} store members down"
    elif n:
        who = f"{n} store member{'s' if n != 1 else ''} down"
    else:
        who = "some store members did not answer"
    detail = f": {errors}" if errors else ""
    if resp.status == 206:
        return f"results may be incomplete: {who}{detail}"
    return f"note: {who}{detail}; the others hold every record (replication)"


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


# -- a minimal HTTP/1.1 client -------------------------------------------------------------


def _shown(line: bytes) -> str:
    return _printable(line[:200].decode("latin-1"))


class ResponseError(Exception):
    """The response broke HTTP/1.1 framing or ended before its end."""


TRUNCATED = "connection closed before the end of the response: the output is truncated"


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
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise ResponseError(f"bad header line: {_shown(line)}")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        self.headers = headers

    # -- the body ---------------------------------------------------------------------

    def copy_body(self, sink) -> None:
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
                raise ResponseError(f"bad Content-Length: {_printable(cl)[:200]}") from None
            if length < 0:
                raise ResponseError(f"bad Content-Length: {_printable(cl)[:200]}")
            self._copy_exactly(length, sink)
            return
        self._copy_to_eof(sink)

    def read(self) -> bytes:
        parts: list[bytes] = []
        self.copy_body(lambda view: parts.append(bytes(view)))
        return b"".join(parts)

    def _copy_exactly(self, n: int, sink) -> None:
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

    def _copy_to_eof(self, sink) -> None:
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

    def _copy_chunked(self, sink) -> None:
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
    *, token: str = "", tls=None,
) -> Response:
    """Send one request with ``Connection: close`` and read the response head."""
    name = f"[{host}]" if ":" in host else host
    try:
        # getaddrinfo encodes a str host with the idna codec, importing it (~3 ms).
        addr_host: str | bytes = host.encode("ascii")
        host_header = f"{name}:{port}".encode("ascii")
    except UnicodeEncodeError:
        addr_host = host
        host_header = name.encode("idna") + b":%d" % port
    sock = socket.create_connection((addr_host, port), timeout=timeout)  # type: ignore[arg-type]
    try:
        # The request goes in one write, but over TLS it follows the handshake's last
        # flight: with Nagle it would wait for that flight's (delayed) ACK, ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:  # an ssl.SSLContext (-tls.ca)
            sock = tls.wrap_socket(sock, server_hostname=host)
        auth = b"Authorization: Bearer %s\r\n" % token.encode() if token else b""
        sock.sendall(
            b"%s %s HTTP/1.1\r\nHost: %s\r\nAccept-Encoding: identity\r\n%sConnection: close\r\n\r\n"
            % (method.encode("ascii"), path.encode("ascii"), host_header, auth)
        )
        return Response(sock, method, buf_size)
    except BaseException:
        sock.close()
        raise


# -- the command --------------------------------------------------------------------------


def query_main(ns, out=None, err=None) -> int:
    out_fd = out if out is not None else sys.stdout.fileno()
    err = err or sys.stderr
    try:
        params = build_params(ns)
    except UsageError as e:
        print(f"oklog query: {e}", file=err)
        return 1
    if getattr(ns, "count", False) or getattr(ns, "hist", "") or getattr(ns, "by", ""):
        return hits_main(ns, params, out, err)
    params["format"] = format_name(ns.ulid, ns.time, ns.json)
    host, port = parse_addr(ns.store, DEFAULT_API_PORT, default_host="localhost")
    path = "/store/query?" + urlencode(params)
    where = f"http{'s' if ns.tls_ca else ''}://{host}:{port}/store/query"
    timeout = ns.timeout or None
    cred = _credentials(ns)
    resp = None
    try:
        if ns.stats:
            resp = request(host, port, "HEAD", path, timeout, **cred)
            if resp.status >= 400:
                resp.sock.close()
                resp = request(host, port, "GET", path, timeout, **cred)  # HEAD has no body to show
                return _fail(resp, err)
            print_stats(resp.headers, sys.stdout)
            resp.sock.close()
            _print_ingest_waiting(host, port, timeout, sys.stdout, cred)
            return _note(resp, err)
        resp = request(host, port, "GET", path, timeout, **cred)
        if resp.status >= 400:
            return _fail(resp, err)
        resp.copy_body(lambda view: _write(out_fd, view))
        if ns.v:
            print_stats(resp.headers, err)
        return _note(resp, err)
    except BrokenPipeError:
        raise  # the reader went away (| head): the CLI exits quietly
    except OSError as e:
        print(f"oklog query: {where}: {describe_os_error(e, timeout)}", file=err)
        return 1
    except ResponseError as e:
        print(f"oklog query: {where}: {e}", file=err)
        return 1
    finally:
        if resp is not None:
            resp.sock.close()
    return 0


def hits_main(ns, params: dict, out, err) -> int:
    """``-count`` / ``-hist STEP``: the answer of ``/store/hits``."""
    import json

    from oklog.query.count import filled, render_bars, render_tsv

    for k in ("fields", "A", "B", "C"):
        params.pop(k, None)
    if ns.by:
        params["by"] = ns.by
        if ns.top:
            params["top"] = str(ns.top)
    elif ns.hist:
        params["step"] = ns.hist
    host, port = parse_addr(ns.store, DEFAULT_API_PORT, default_host="localhost")
    where = f"http://{host}:{port}/store/hits"
    timeout = ns.timeout or None
    resp = None
    try:
        resp = request(host, port, "GET", "/store/hits?" + urlencode(params), timeout, **_credentials(ns))
        if resp.status >= 400:
            return _fail(resp, err)
        body = resp.read()
        answer = json.loads(body)
        if ns.json:
            text = body.decode()
        elif ns.by:
            text = "".join(f"{_value(v['value'])}\t{v['count']}\n" for v in answer["values"])
        elif not ns.hist:
            text = f"{answer['total']}\n"
        else:
            rows = filled(answer["buckets"], answer["step_ms"])
            fd = out if isinstance(out, int) else sys.stdout.fileno() if out is None else None
            if fd is not None and os.isatty(fd):
                width = os.get_terminal_size(fd).columns
                text = render_bars(rows, width) + f"total {answer['total']}\n"
            else:
                text = render_tsv(rows)
        _write(out if out is not None else sys.stdout.fileno(), text.encode())
        if answer.get("skipped"):
            print(f"oklog query: {answer['skipped']} lines holding the -where names were neither JSON nor logfmt (skipped)", file=err)
        if ns.v:
            print_stats(resp.headers, err)
        return _note(resp, err)
    except BrokenPipeError:
        raise
    except OSError as e:
        print(f"oklog query: {where}: {describe_os_error(e, timeout)}", file=err)
        return 1
    except (ResponseError, ValueError, KeyError) as e:
        print(f"oklog query: {where}: {e}", file=err)
        return 1
    finally:
        if resp is not None:
            resp.sock.close()


def topics_main(ns, out=None, err=None) -> int:
    """``oklog topics``: a table of ``/store/topics``."""
    import json

    err = err or sys.stderr
    params: dict[str, str] = {}
    for flag, value in (("from", getattr(ns, "from")), ("to", ns.to)):
        try:
            v = resolve_time(value) if value else None
        except ValueError as e:
            print(f"oklog topics: -{flag} {e}", file=err)
            return 1
        if v:
            params[flag] = v
    host, port = parse_addr(ns.store, DEFAULT_API_PORT, default_host="localhost")
    where = f"http://{host}:{port}/store/topics"
    timeout = ns.timeout or None
    resp = None
    try:
        resp = request(host, port, "GET", "/store/topics?" + urlencode(params), timeout, **_credentials(ns))
        if resp.status >= 400:
            return _fail(resp, err)
        body = resp.read()
        if ns.json:
            text = body.decode()
        else:
            rows = [("TOPIC", "RECORDS", "BYTES", "FIRST", "LAST")]
            for v in json.loads(body)["values"]:
                rows.append((_value(v["value"]), str(v["count"]), str(v["bytes"]), v["first"], v["last"]))
            widths = [max(len(r[i]) for r in rows) for i in range(5)]
            text = "".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows)
        _write(out if out is not None else sys.stdout.fileno(), text.encode())
        return _note(resp, err)
    except OSError as e:
        print(f"oklog topics: {where}: {describe_os_error(e, timeout)}", file=err)
        return 1
    except (ResponseError, ValueError, KeyError) as e:
        print(f"oklog topics: {where}: {e}", file=err)
        return 1
    finally:
        if resp is not None:
            resp.sock.close()


def _value(v) -> str:
    """A -by value on one line: text as is, a missing field as (none)."""
    return "(none)" if v is None else _printable(str(v))


def _note(resp: Response, err) -> int:
    note = completeness_note(resp)
    if note:
        print(f"oklog query: {note}", file=err)
    return 3 if resp.status == 206 else 0


def _credentials(ns) -> dict:
    """``request`` arguments of ``-token`` (or $OKLOG_TOKEN) and ``-tls.ca``."""
    out: dict = {"token": getattr(ns, "token", "") or os.environ.get("OKLOG_TOKEN", "")}
    if getattr(ns, "tls_ca", ""):
        from oklog.net.tls import client_context

        out["tls"] = client_context(ns.tls_ca)
    return out


def _fail(resp: Response, err) -> int:
    body = resp.read().decode("utf-8", "replace").strip()
    print(f"oklog query: {resp.status}: {_printable(body)}", file=err)
    return 1


def _printable(text: str) -> str:
    """Remote text on one terminal line: control bytes shown as spaces."""
    return "".join(c if c >= " " and c != "\x7f" else " " for c in text)


def _print_ingest_waiting(host: str, port: int, timeout: float | None, out, cred: dict | None = None) -> None:
    """``-stats``: records still in the node's ingest tier are not queryable
    yet; say how much is waiting there (from ``/cluster/state``), if it tells."""
    try:
        resp = request(host, port, "GET", "/cluster/state", timeout or 5.0, **(cred or {}))
        try:
            body = resp.read() if resp.status == 200 else b""
        finally:
            resp.sock.close()
        import json

        st = json.loads(body)
        ingest = st["pipeline"]["ingest"]
        segs, sizes = ingest["segments"], ingest["bytes"]
        active = int(segs.get("active", 0))
        closed = int(segs.get("flushed", 0)) + int(segs.get("pending", 0))
        nbytes = int(sizes.get("flushed", 0)) + int(sizes.get("pending", 0))
    except (OSError, ResponseError, ValueError, KeyError, TypeError, AttributeError):
        return  # not an ingest node, or an older one: nothing to add
    # Active segments' sizes are not tracked until they are flushed.
    print(
        f"ingest waiting: {active} segments being written, {closed} flushed ({nbytes} bytes)"
        f" on {st.get('self', host)} (not yet queryable)",
        file=out,
    )


def _write(fd, data) -> None:
    if not data:
        return
    if not isinstance(fd, int):
        fd.write(data)
        return
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
