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
import sys

from oklog.addr import parse_addr
from oklog.cli.http import Access, Response, ResponseError, describe_os_error, printable, request
from oklog.cli.http import urlencode as urlencode  # re-exported: callers of this module's API
from oklog.units import DEFAULT_API_PORT
from oklog.units import resolve_time as resolve_time  # re-exported: oklog.cli.repair uses it

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~5 ms)
if TYPE_CHECKING:
    from argparse import Namespace
    from typing import Any, Protocol, TextIO

    class _Writer(Protocol):
        def write(self, data: bytes | memoryview, /) -> object: ...

    Out = int | _Writer | None  # a file descriptor, a binary file, or None for stdout


def format_name(ulid: bool, time_: bool, json_: bool) -> str:
    if json_:
        return "json"
    if time_:
        return "ulidtime" if ulid else "time"
    return "ulid" if ulid else "lines"


def build_params(ns: Namespace) -> dict[str, str | list[str]]:
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


def print_stats(headers: list[tuple[str, str]], out: TextIO) -> None:
    for k, v in headers:
        if k.lower().startswith("x-oklog-"):
            print(f"{k[len('x-oklog-'):].replace('-', ' ').lower()}: {v}", file=out)


def completeness_note(resp: Response) -> str | None:
    """One line about store members that did not answer in full (down, failed,
    or lacking damaged or quarantined segments: the reasons follow), or None.

    On a 206 the results may be incomplete; on a 200 that names missing
    members, the others are known to hold every record (replication)."""
    errors = resp.getheader("x-oklog-errors") or ""
    if resp.status != 206 and not errors:
        return None
    count = resp.getheader("x-oklog-error-count") or ""
    total = resp.getheader("x-oklog-store-members") or ""
    n = int(count) if count.isdigit() else 0
    if n and total.isdigit():
        who = f"{n} of {total} store members did not answer in full"
    elif n:
        who = f"{n} store member{'s' if n != 1 else ''} did not answer in full"
    else:
        who = "some store members did not answer"
    detail = f": {errors}" if errors else ""
    if resp.status == 206:
        return f"results may be incomplete: {who}{detail}"
    return f"note: {who}{detail}; the others hold every record (replication)"


# -- the command --------------------------------------------------------------------------


def query_main(ns: Namespace, out: Out = None, err: TextIO | None = None) -> int:
    err = err or sys.stderr
    try:
        params = build_params(ns)
    except UsageError as e:
        print(f"oklog query: {e}", file=err)
        return 1
    if getattr(ns, "count", False) or getattr(ns, "hist", "") or getattr(ns, "by", ""):
        return hits_main(ns, params, out, err)
    params["format"] = format_name(ns.ulid, ns.time, ns.json)
    node = _Node(ns, "/store/query")
    path = "/store/query?" + urlencode(params)
    resp = None
    try:
        if ns.stats:
            return _stats(node, path, err)
        resp = node.request("GET", path)
        if resp.status >= 400:
            return _fail(resp, err)
        out_fd = out if out is not None else sys.stdout.fileno()
        resp.copy_body(lambda view: _write(out_fd, view))
        if ns.v:
            print_stats(resp.headers, err)
        return _note(resp, err)
    except BrokenPipeError:
        raise  # the reader went away (| head): the CLI exits quietly
    except (OSError, ResponseError) as e:
        return node.failed(e, err)
    finally:
        if resp is not None:
            resp.sock.close()


def _stats(node: _Node, path: str, err: TextIO) -> int:
    """``-stats``: the answer's headers from HEAD, scanning nothing."""
    resp = node.request("HEAD", path)
    resp.sock.close()
    if resp.status >= 400:
        resp = node.request("GET", path)  # HEAD has no body to show
        try:
            return _fail(resp, err)
        finally:
            resp.sock.close()
    print_stats(resp.headers, sys.stdout)
    _print_ingest_waiting(node, sys.stdout)
    return _note(resp, err)


class _Node:
    """The node a command asks (``-store``, ``-token``, ``-tls.ca``, ``-timeout``)
    and how its failures are said."""

    def __init__(self, ns: Namespace, route: str, prog: str = "oklog query") -> None:
        self.host, self.port = parse_addr(ns.store, DEFAULT_API_PORT, default_host="localhost")
        self.access = Access.of(ns)
        self.timeout: float | None = ns.timeout or None
        self.prog = prog
        self.where = f"{self.access.scheme()}://{self.host}:{self.port}{route}"

    def request(self, method: str, path: str, timeout: float | None = None) -> Response:
        return request(
            self.host, self.port, method, path, timeout or self.timeout, token=self.access.token, tls=self.access.tls
        )

    def body(self, path: str, err: TextIO) -> tuple[Response, bytes] | int:
        """The whole answer of a GET, or the exit status of a failure already said."""
        try:
            resp = self.request("GET", path)
            try:
                return (resp, resp.read()) if resp.status < 400 else _fail(resp, err)
            finally:
                resp.sock.close()
        except (OSError, ResponseError) as e:
            return self.failed(e, err)

    def failed(self, e: Exception, err: TextIO) -> int:
        why = describe_os_error(e, self.timeout) if isinstance(e, OSError) else str(e)
        print(f"{self.prog}: {self.where}: {why}", file=err)
        return 1


def hits_main(ns: Namespace, params: dict[str, str | list[str]], out: Out, err: TextIO) -> int:
    """``-count`` / ``-hist STEP``: the answer of ``/store/hits``."""
    import json

    for k in ("fields", "A", "B", "C"):
        params.pop(k, None)
    if ns.by:
        params["by"] = ns.by
        if ns.top:
            params["top"] = str(ns.top)
    elif ns.hist:
        params["step"] = ns.hist
    node = _Node(ns, "/store/hits")
    got = node.body("/store/hits?" + urlencode(params), err)
    if isinstance(got, int):
        return got
    resp, body = got
    try:
        answer = json.loads(body)
        text = body.decode() if ns.json else _hits_text(ns, answer, out)
    except (ValueError, KeyError, TypeError) as e:
        return node.failed(e, err)
    _write(out if out is not None else sys.stdout.fileno(), text.encode())
    if answer.get("skipped"):
        print(f"oklog query: {answer['skipped']} lines holding the -where names were neither JSON nor logfmt (skipped)", file=err)
    if ns.v:
        print_stats(resp.headers, err)
    return _note(resp, err)


def _hits_text(ns: Namespace, answer: dict[str, Any], out: Out) -> str:
    """``/store/hits``'s answer as printed: counts per value, a total, or a histogram
    (bars on a terminal, TIME<TAB>COUNT otherwise)."""
    from oklog.query.count import filled, render_bars, render_tsv

    if ns.by:
        return "".join(f"{_value(v['value'])}\t{v['count']}\n" for v in answer["values"])
    if not ns.hist:
        return f"{answer['total']}\n"
    rows = filled(answer["buckets"], answer["step_ms"])
    fd = out if isinstance(out, int) else sys.stdout.fileno() if out is None else None
    if fd is not None and os.isatty(fd):
        return render_bars(rows, os.get_terminal_size(fd).columns) + f"total {answer['total']}\n"
    return render_tsv(rows)


def topics_main(ns: Namespace, out: Out = None, err: TextIO | None = None) -> int:
    """``oklog topics``: a table of ``/store/topics``."""
    import json

    err = err or sys.stderr
    params: dict[str, str | list[str]] = {}
    for flag, value in (("from", getattr(ns, "from")), ("to", ns.to)):
        try:
            v = resolve_time(value) if value else None
        except ValueError as e:
            print(f"oklog topics: -{flag} {e}", file=err)
            return 1
        if v:
            params[flag] = v
    node = _Node(ns, "/store/topics", "oklog topics")
    got = node.body("/store/topics?" + urlencode(params), err)
    if isinstance(got, int):
        return got
    resp, body = got
    try:
        text = body.decode() if ns.json else topics_table(json.loads(body)["values"])
    except (ValueError, KeyError, TypeError) as e:
        return node.failed(e, err)
    _write(out if out is not None else sys.stdout.fileno(), text.encode())
    return _note(resp, err)


def topics_table(values: list[dict[str, Any]]) -> str:
    rows = [("TOPIC", "RECORDS", "BYTES", "FIRST", "LAST")]
    for v in values:
        rows.append((_value(v["value"]), str(v["count"]), str(v["bytes"]), str(v["first"]), str(v["last"])))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows)


def _value(v: object) -> str:
    """A -by value on one line: text as is, a missing field as (none)."""
    return "(none)" if v is None else printable(str(v))


def _note(resp: Response, err: TextIO) -> int:
    note = completeness_note(resp)
    if note:
        print(f"oklog query: {note}", file=err)
    return 3 if resp.status == 206 else 0


def _fail(resp: Response, err: TextIO) -> int:
    body = resp.read().decode("utf-8", "replace").strip()
    print(f"oklog query: {resp.status}: {printable(body)}", file=err)
    return 1


def _print_ingest_waiting(node: _Node, out: TextIO) -> None:
    """``-stats``: records still in the node's ingest tier are not queryable
    yet; say how much is waiting there (from ``/cluster/state``), if it tells."""
    try:
        resp = node.request("GET", "/cluster/state", node.timeout or 5.0)
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
        f" on {st.get('self', node.host)} (not yet queryable)",
        file=out,
    )


def _write(fd: Out, data: bytes | memoryview) -> None:
    if not data:
        return
    if fd is None:
        fd = sys.stdout.fileno()
    if not isinstance(fd, int):
        fd.write(data)
        return
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
