"""Network addresses as the CLI and flags accept them. Pure."""

from __future__ import annotations


def parse_addr(addr: str, default_port: int, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """Accept ``tcp://host:port``, ``host:port``, ``host`` and ``:port``."""
    a = addr.strip()
    for scheme in ("tcp://", "http://", "udp://"):
        if a.startswith(scheme):
            a = a[len(scheme) :]
    a = a.rstrip("/")
    if a.startswith("["):  # [v6]:port
        host, _, rest = a[1:].partition("]")
        port = rest.lstrip(":")
    elif a.count(":") == 1:
        host, _, port = a.partition(":")
    else:
        host, port = a, ""
    host = host or default_host
    if not port:
        return host, default_port
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"bad port in address {addr!r}") from None
    if not 0 <= p <= 65535:
        raise ValueError(f"port out of range in address {addr!r}")
    return host, p
