"""``oklog forward``: stdin to ingest nodes over the fast port.

Bytes pass through verbatim (``%`` included); only whole lines are sent, so a
broken connection never leaves half a record on a node. Several addresses (or a
name resolving to several hosts) are tried in random order with exponential
backoff; the chunk being written when a connection broke is sent again on the
next one, so no line is lost to a reconnect (it may arrive twice).
"""

from __future__ import annotations

import os
import random
import socket
import sys
import time

from oklog.addr import parse_addr
from oklog.config import DEFAULT_FAST_PORT

READ_SIZE = 1 << 20


def resolve(addrs: list[str], default_port: int = DEFAULT_FAST_PORT) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for a in addrs:
        host, port = parse_addr(a, default_port, default_host="localhost")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            print(f"oklog forward: cannot resolve {host}: {e}", file=sys.stderr)
            continue
        for info in infos:
            target = (str(info[4][0]), int(info[4][1]))
            if target not in out:
                out.append(target)
    return out


def add_prefix(chunk: bytes, prefix: bytes) -> bytes:
    """Prefix every line of a chunk of whole lines (ending in LF)."""
    if not prefix or not chunk:
        return chunk
    return prefix + chunk[:-1].replace(b"\n", b"\n" + prefix) + b"\n"


class Forwarder:
    def __init__(self, addrs: list[str], max_backoff: float = 1.0) -> None:
        self.addrs = addrs
        self.max_backoff = max_backoff
        self.sock: socket.socket | None = None
        self.reconnects = 0

    def _connect(self) -> socket.socket:
        backoff = 0.05
        while True:
            targets = resolve(self.addrs)
            random.shuffle(targets)
            for host, port in targets:
                try:
                    s = socket.create_connection((host, port), timeout=5)
                    s.settimeout(None)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    return s
                except OSError as e:
                    print(f"oklog forward: {host}:{port}: {e}", file=sys.stderr)
            time.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def send(self, data: bytes) -> None:
        while True:
            if self.sock is None:
                self.sock = self._connect()
            try:
                self.sock.sendall(data)
                return
            except OSError as e:
                print(f"oklog forward: connection lost ({e}); resending", file=sys.stderr)
                self.reconnects += 1
                self.close()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


def forward_main(addrs: list[str], prefixes: list[str] | None = None, max_backoff: float = 1.0) -> int:
    prefix = "".join(p + " " for p in (prefixes or [])).encode()
    fwd = Forwarder(addrs, max_backoff)
    fd = sys.stdin.fileno()
    partial = b""
    try:
        while True:
            data = os.read(fd, READ_SIZE)
            if not data:
                break
            buf = partial + data if partial else data
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                partial = buf
                continue
            partial = buf[cut:]
            fwd.send(add_prefix(buf[:cut], prefix))
        if partial:
            fwd.send(add_prefix(partial + b"\n", prefix))
    except KeyboardInterrupt:
        return 130
    finally:
        if fwd.sock is not None:
            try:
                fwd.sock.shutdown(socket.SHUT_WR)
                fwd.sock.settimeout(5)
                while fwd.sock.recv(65536):
                    pass
            except OSError:
                pass
            fwd.close()
    return 0
