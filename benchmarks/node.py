"""A real ``oklog run`` node as a subprocess: free loopback ports, health wait,
RSS sampling from /proc, and a clean stop of only the process we started."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from datetime import UTC, datetime

HOST = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    """Ports the kernel hands out for port 0 (held together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(c) for c in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree_rss_kib(pid: int) -> int:
    """VmRSS of a process plus all its descendants."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _status_kib(p, "VmRSS")
        todo += _children(p)
    return total


class Node:
    def __init__(self, oklog: str, workdir: str, name: str, log=print, extra_args: tuple[str, ...] = (),
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.extra_args = tuple(extra_args)
        self.ssl_context = ssl_context  # the node serves TLS (-tls.cert): requests go over https
        self.oklog = oklog
        self.dir = os.path.join(workdir, name)
        self.name = name
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self._peak_kib = 0
        self._stop_sampler = threading.Event()
        self._sampler: threading.Thread | None = None
        self.started_at = 0.0

    @property
    def api(self) -> str:
        return f"{HOST}:{self.ports['api']}"

    @property
    def fast(self) -> tuple[str, int]:
        return HOST, self.ports["fast"]

    @property
    def store_path(self) -> str:
        return os.path.join(self.dir, "store")

    def start(self, timeout: float = 30.0) -> None:
        if os.path.exists(self.dir):
            shutil.rmtree(self.dir)
        os.makedirs(self.dir)
        names = ("api", "fast", "durable", "bulk", "cluster")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        p = self.ports
        cmd = [
            self.oklog, "run",
            "-api", f"{HOST}:{p['api']}",
            "-ingest.fast", f"{HOST}:{p['fast']}",
            "-ingest.durable", f"{HOST}:{p['durable']}",
            "-ingest.bulk", f"{HOST}:{p['bulk']}",
            "-cluster", f"{HOST}:{p['cluster']}",
            "-ingest.path", os.path.join(self.dir, "ingest"),
            "-store.path", self.store_path,
            *self.extra_args,
        ]
        self._logfile = open(os.path.join(self.dir, "node.log"), "wb")
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            cmd, stdout=self._logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited with {self.proc.returncode}; see {self.dir}/node.log")
            try:
                status, _, _ = self.request("GET", "/health", timeout=2)
                if status == 200:
                    self.log(f"node {self.name} up (pid {self.proc.pid}, api {self.api}, fast {p['fast']})")
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"node {self.name} not healthy after {timeout:.0f}s; see {self.dir}/node.log")

    def _sample(self) -> None:
        while not self._stop_sampler.is_set() and self.proc is not None and self.proc.poll() is None:
            self._peak_kib = max(self._peak_kib, tree_rss_kib(self.proc.pid))
            self._stop_sampler.wait(0.2)

    def reset_peak(self) -> None:
        """Start a new peak window (sampled tree RSS; VmHWM cannot be reset)."""
        self._peak_kib = tree_rss_kib(self.proc.pid) if self.proc else 0

    def peak_rss_mib(self) -> float:
        """Max of sampled RSS of the node's process tree and the main process's VmHWM."""
        if self.proc is not None and self.proc.poll() is None:
            self._peak_kib = max(self._peak_kib, tree_rss_kib(self.proc.pid))
        return self._peak_kib / 1024

    def hwm_mib(self) -> float:
        return _status_kib(self.proc.pid, "VmHWM") / 1024 if self.proc else 0.0

    def request(self, method: str, path: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        conn = (http.client.HTTPSConnection(HOST, self.ports["api"], timeout=timeout, context=self.ssl_context)
                if self.ssl_context is not None else http.client.HTTPConnection(HOST, self.ports["api"], timeout=timeout))
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        finally:
            conn.close()

    def data_set_size(self, from_: str) -> int:
        status, headers, _ = self.request("HEAD", f"/store/query?from={from_}", timeout=10)
        if status >= 400:
            raise RuntimeError(f"HEAD /store/query: {status}")
        return int(headers.get("x-oklog-max-data-set-size", "0"))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        self._stop_sampler.set()
        if self.proc is None:
            return
        pid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.log(f"node {self.name} (pid {pid}) ignored SIGTERM for {timeout:.0f}s; killing")
                try:
                    os.killpg(pid, signal.SIGKILL)  # its own session: pgid == pid
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        # Children left in the node's own process group (if it spawned any).
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._logfile.close()

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
