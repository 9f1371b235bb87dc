"""Text for people: sizes, durations and errors as the CLI prints them. Pure and light.

Every command-line message that names a failure goes through ``describe_error``,
so no message shows a Python repr (``ConnectionRefusedError(111, ...)``, ``b'...'``).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator


def format_size(n: float) -> str:
    """``1536`` → ``1.5 KiB``; binary units, as the size flags take them (16MiB)."""
    n = float(n)
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
    return f"{n:.1f} TiB"


def format_duration(seconds: float | None, unknown: str = "unknown") -> str:
    """``75`` → ``1m15s``, ``90000`` → ``1d01h``; None → ``unknown``."""
    if seconds is None:
        return unknown
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"


_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by the other side",
    errno.EPIPE: "connection closed by the other side",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EADDRINUSE: "address already in use",
    errno.EADDRNOTAVAIL: "address not available on this host",
    errno.EACCES: "permission denied",
    errno.ENOENT: "no such file or directory",
    errno.ENOSPC: "no space left on device",
}


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def describe_error(e: BaseException) -> str:
    """A short lower-case phrase for an exception: what happened, never its repr.

    Looks through the cause chain (httpx wraps the socket error that says what
    really happened) and prefers the operating system's wording of an errno.
    """
    for x in _chain(e):
        if isinstance(x, socket.gaierror):
            return f"cannot resolve the host name ({x.strerror or 'unknown host'})"
        if isinstance(x, TimeoutError | socket.timeout):
            own = str(x) if x.errno is None else ""  # a message of ours says what timed out
            return own or "timed out"
        if isinstance(x, OSError) and x.errno is not None:
            text = _ERRNO_TEXT.get(x.errno) or (x.strerror or "").lower() or f"error {x.errno}"
            return text + (f": {x.filename}" if x.filename else "")
    name = type(e).__name__
    if "Timeout" in name:
        return "timed out"
    text = _plain(str(e))
    if not text:
        return {"ConnectError": "cannot connect", "RemoteProtocolError": "the other side closed the connection",
                "ReadError": "connection lost while reading", "WriteError": "connection lost while writing",
                "ConnectionResetError": "connection reset by the other side",
                "BrokenPipeError": "connection closed by the other side"}.get(name, _words(name))
    return text


def _plain(text: str) -> str:
    """Drop an ``[Errno N]`` prefix and bytes-literal quoting from a message."""
    t = text.strip()
    if t.startswith("[Errno ") and "]" in t:
        t = t[t.index("]") + 1 :].strip()
    if len(t) >= 3 and t[0] == "b" and t[1] in "'\"" and t[-1] == t[1]:
        t = t[2:-1]
    return t


def _words(name: str) -> str:
    """``ConnectionResetError`` → ``connection reset error``."""
    out = ""
    for ch in name:
        out += (" " + ch.lower()) if ch.isupper() and out else ch.lower()
    return out
