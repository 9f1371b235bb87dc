"""``oklog query``: scripted output of a cluster query.

Records stream to stdout as they arrive, formatted a buffer at a time and
written in large writes. Statistics go to stderr with ``-v`` (or alone with
``-stats``). Exit status: 0 ok, 1 error, 3 partial result (206).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime

import httpx

from oklog.addr import parse_addr
from oklog.config import DEFAULT_API_PORT, parse_duration

WRITE_SIZE = 1 << 20


def format_name(ulid: bool, time_: bool, json_: bool) -> str:
    if json_:
        return "json"
    if time_:
        return "ulidtime" if ulid else "time"
    return "ulid" if ulid else "lines"


def resolve_time(text: str, now: float | None = None) -> str | None:
    """CLI time → API value: ``now``, a duration ago, RFC 3339 or a ULID."""
    t = text.strip()
    if not t or t == "now":
        return None
    try:
        ago = parse_duration(t)
    except ValueError:
        return t  # RFC 3339 or ULID; the node validates it
    now = time.time() if now is None else now
    return datetime.fromtimestamp(now - ago, tz=UTC).isoformat(timespec="milliseconds")


def base_url(store: str) -> str:
    host, port = parse_addr(store, DEFAULT_API_PORT, default_host="localhost")
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def build_params(ns) -> dict[str, str]:
    params: dict[str, str] = {"q": ns.q, "regex": "true" if ns.regex else "false"}
    f = resolve_time(getattr(ns, "from"))
    if f:
        params["from"] = f
    t = resolve_time(ns.to)
    if t:
        params["to"] = t
    return params


def print_stats(resp: httpx.Response, err) -> None:
    for k, v in resp.headers.items():
        if k.lower().startswith("x-oklog-"):
            print(f"{k[len('x-oklog-'):].replace('-', ' ').lower()}: {v}", file=err)


def query_main(ns, out=None, err=None) -> int:
    out_fd = out if out is not None else sys.stdout.fileno()
    err = err or sys.stderr
    params = build_params(ns)
    params["format"] = format_name(ns.ulid, ns.time, ns.json)
    url = base_url(ns.store) + "/store/query"
    timeout = httpx.Timeout(ns.timeout or None, connect=10.0)
    try:
        with httpx.Client(timeout=timeout) as client:
            if ns.stats:
                resp = client.head(url, params=params)
                if resp.status_code >= 400:
                    return _fail(client.get(url, params=params), err)
                print_stats(resp, sys.stdout)
                return 3 if resp.status_code == 206 else 0
            with client.stream("GET", url, params=params) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    return _fail(resp, err)
                # The node formats (in parallel, off this process); we only copy.
                for chunk in resp.iter_raw(WRITE_SIZE):
                    _write(out_fd, chunk)
                if ns.v:
                    print_stats(resp, err)
                if resp.status_code == 206:
                    print("oklog query: partial result (some nodes failed)", file=err)
                    return 3
    except httpx.HTTPError as e:
        print(f"oklog query: {url}: {e}", file=err)
        return 1
    return 0


def _fail(resp: httpx.Response, err) -> int:
    print(f"oklog query: {resp.status_code}: {resp.text.strip()}", file=err)
    return 1


def _write(fd, data: bytes) -> None:
    if not data:
        return
    if not isinstance(fd, int):
        fd.write(data)
        return
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
