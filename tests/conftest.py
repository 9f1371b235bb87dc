"""Shared test helpers: corpus access, free ports, real node subprocesses."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "loghub"
OKLOG = [sys.executable, "-m", "oklog"]


def corpus_lines() -> list[bytes]:
    """Every line of the loghub corpus (read from ../shared, never copied)."""
    files = sorted(CORPUS.glob("*.log"))
    if not files:
        pytest.skip(f"corpus not found at {CORPUS}")
    lines: list[bytes] = []
    for f in files:
        lines += f.read_bytes().split(b"\n")[:-1]
    return lines


def sample_lines(n: int, seed: int = 7) -> list[bytes]:
    lines = corpus_lines()
    rnd = random.Random(seed)
    return [rnd.choice(lines) for _ in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class NodeProc:
    """A real ``oklog run`` subprocess on 127.0.0.1 with its own ports and dirs."""

    workdir: Path
    args: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    _retried: bool = False

    def __post_init__(self) -> None:
        if not self.ports:
            self.ports = {k: free_port() for k in ("api", "fast", "durable", "bulk", "cluster")}

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.ports['api']}"

    @property
    def url(self) -> str:
        return f"http://{self.api}"

    def command(self) -> list[str]:
        p = self.ports
        return OKLOG + [
            "run",
            "-api", f"127.0.0.1:{p['api']}",
            "-ingest.fast", f"127.0.0.1:{p['fast']}",
            "-ingest.durable", f"127.0.0.1:{p['durable']}",
            "-ingest.bulk", f"127.0.0.1:{p['bulk']}",
            "-cluster", f"127.0.0.1:{p['cluster']}",
            "-ingest.path", str(self.workdir / "ingest"),
            "-store.path", str(self.workdir / "store"),
            *self.args,
        ]

    def start(self, timeout: float = 20.0) -> NodeProc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "node.log"
        logf = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.command(), stdout=logf, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.log_path.read_text()
                if "Address already in use" in text.rsplit("oklog run", 1)[-1] and not self._retried:
                    # Another test took a port between free_port() and the bind.
                    self._retried = True
                    self.ports = {k: free_port() for k in self.ports}
                    return self.start(timeout)
                raise RuntimeError(f"node exited: {text[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"node did not come up: {self.log_path.read_text()[-2000:]}")

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def send_fast(self, data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", self.ports["fast"]), timeout=10) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            s.recv(1)

    def query(self, **params) -> httpx.Response:
        return httpx.get(self.url + "/store/query", params=params, timeout=30)


@pytest.fixture
def node_factory(tmp_path):
    nodes: list[NodeProc] = []

    def make(name: str = "n0", args: list[str] | None = None) -> NodeProc:
        n = NodeProc(tmp_path / name, list(args or []))
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.kill()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what} (last: {last!r})")
