"""``oklog stream``: live tail of the cluster to stdout.

Reconnects on failure with backoff and resumes without duplicates: ULIDs
printed recently are remembered, and records seen again after a reconnect are
skipped.
"""

from __future__ import annotations

import collections
import http.client
import os
import sys
import time
from urllib.parse import urlencode

from oklog.addr import parse_addr
from oklog.config import DEFAULT_API_PORT

REMEMBER = 200_000  # recent ULIDs kept for resuming without duplicates


class Seen:
    def __init__(self, size: int = REMEMBER) -> None:
        self._set: set[bytes] = set()
        self._order: collections.deque[bytes] = collections.deque()
        self.size = size

    def fresh(self, data: bytes) -> bytes:
        out = []
        for rec in data.split(b"\n")[:-1]:
            u = rec[:26]
            if u in self._set:
                continue
            self._set.add(u)
            self._order.append(u)
            if len(self._order) > self.size:
                self._set.discard(self._order.popleft())
            out.append(rec)
        if not out:
            return b""
        out.append(b"")
        return b"\n".join(out)


def stream_main(ns, out_fd: int | None = None, max_seconds: float = 0.0) -> int:
    from oklog.query.format import FORMATS
    from oklog.querycli import format_name

    fmt = FORMATS[format_name(ns.ulid, ns.time, False)]
    assert fmt is not None
    out_fd = sys.stdout.fileno() if out_fd is None else out_fd
    host, port = parse_addr(ns.store, DEFAULT_API_PORT, default_host="localhost")
    params = {"q": ns.q, "regex": "true" if ns.regex else "false", "window": str(ns.window)}
    if ns.topic:
        params["topic"] = ns.topic
    path = "/store/stream?" + urlencode(params, encoding="latin-1")
    seen = Seen()
    backoff = 0.1
    deadline = time.monotonic() + max_seconds if max_seconds else None
    while deadline is None or time.monotonic() < deadline:
        conn = _connection(ns, host, port)
        try:
            conn.request("GET", path, headers=_headers(ns))
            resp = conn.getresponse()
            if resp.status in (400, 401, 403):  # retrying would not help
                print(f"oklog stream: {resp.read().decode().strip()}", file=sys.stderr)
                return 1
            if resp.status != 200:
                raise http.client.HTTPException(f"status {resp.status}")
            conn.sock.settimeout(None)
            backoff = 0.1
            rest = b""
            while chunk := resp.read1(1 << 20):
                buf = rest + chunk
                cut = buf.rfind(b"\n") + 1
                rest = buf[cut:]
                data = seen.fresh(buf[:cut])
                if data:
                    _write(out_fd, fmt(data))
                if deadline is not None and time.monotonic() > deadline:
                    return 0
            print("oklog stream: stream ended; reconnecting", file=sys.stderr)
        except (OSError, http.client.HTTPException) as e:
            print(f"oklog stream: {host}:{port}: {e}; reconnecting", file=sys.stderr)
        finally:
            conn.close()
        time.sleep(backoff)
        backoff = min(backoff * 2, 5.0)
    return 0


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _connection(ns, host: str, port: int) -> http.client.HTTPConnection:
    """Plain, or TLS verified with ``-tls.ca``."""
    if getattr(ns, "tls_ca", ""):
        from oklog.tls import client_context

        return http.client.HTTPSConnection(host, port, timeout=10, context=client_context(ns.tls_ca))
    return http.client.HTTPConnection(host, port, timeout=10)


def _headers(ns) -> dict[str, str]:
    token = getattr(ns, "token", "") or os.environ.get("OKLOG_TOKEN", "")
    return {"Authorization": f"Bearer {token}"} if token else {}
