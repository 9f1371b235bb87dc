"""Ports, sizes and durations as the CLI and config use them. Pure and light.

Kept free of heavy imports (no dataclasses, logging, ctypes): the CLI imports it
on every start, and ``oklog query`` is run from scripts where start-up counts.
"""

from __future__ import annotations

DEFAULT_API_PORT = 7650
DEFAULT_FAST_PORT = 7651
DEFAULT_DURABLE_PORT = 7652
DEFAULT_BULK_PORT = 7653
DEFAULT_CLUSTER_PORT = 7659
DEFAULT_NODE_PORT = 7658  # members' TLS listener (with a cluster key)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "kib": KiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
}


def parse_size(text: str) -> int:
    """``16MB``, ``16MiB``, ``512k``, ``1048576`` → bytes (binary units)."""
    t = text.strip().lower().replace("_", "")
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num) :]
    if unit not in _UNITS or not num:
        raise ValueError(f"bad size {text!r} (examples: 16MiB, 512k, 1048576)")
    value = float(num) * _UNITS[unit]
    if value < 0:
        raise ValueError(f"negative size {text!r}")
    return int(value)


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Go-style durations: ``3s``, ``1m30s``, ``168h``, ``500ms``, ``2d``; a bare number is seconds."""
    import re

    t = text.strip()
    if not t:
        raise ValueError("empty duration")
    try:
        return float(t)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)", t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(t) or pos == 0:
        raise ValueError(f"bad duration {text!r} (examples: 3s, 5m, 1h30m, 168h)")
    return total


TIME_HINT = "use a duration ago (30s, 5m, 1h30m, 2d), an RFC 3339 time (2026-11-23T10:00:00Z), a ULID, or now"
_CROCKFORD = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghjkmnpqrstvwxyzOoIiLl")


def resolve_time(text: str, now: float | None = None) -> str | None:
    """A time as a person types it → the API's ``from``/``to`` value.

    Empty or ``now`` → None (no bound); a duration → that long before ``now``, as
    an RFC 3339 UTC time with milliseconds (``2026-11-23T22:23:07.498Z``); an
    RFC 3339 time or a ULID passes through (the node validates it fully).
    Anything else raises ValueError whose message says what would do (TIME_HINT).
    """
    import time

    t = text.strip()
    if not t or t.lower() == "now":
        return None
    try:
        ago = parse_duration(t)
    except ValueError:
        if not _looks_like_time(t):
            raise ValueError(f"{text!r} is not a time: {TIME_HINT}") from None
        return t
    now = time.time() if now is None else now
    ms = round((now - ago) * 1e6) // 1000  # to the microsecond first, as datetime does
    sec, ms = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{ms:03d}Z"


def _looks_like_time(t: str) -> bool:
    """An RFC 3339 time or a ULID in shape (the node checks it fully)."""
    if len(t) == 26 and all(c in _CROCKFORD for c in t):
        return True
    return len(t) >= 10 and t[:4].isdigit() and t[4] == "-" and t[5:7].isdigit() and t[7] == "-"
