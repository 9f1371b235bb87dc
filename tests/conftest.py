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
    if not files:  # the corpus is part of the test set-up: missing, it is a failure
        pytest.fail(f"corpus not found at {CORPUS} (tests need /work/shared/corpus/loghub)")
    lines: list[bytes] = []
    for f in files:
        lines += f.read_bytes().split(b"\n")[:-1]
    return lines


def sample_lines(n: int, seed: int = 7) -> list[bytes]:
    lines = corpus_lines()
    rnd = random.Random(seed)
    return [rnd.choice(lines) for _ in range(n)]


# Ports for test nodes come from below the kernel's ephemeral range (32768-60999 by
# default), one block per xdist worker, handed out in order.  Port 0 would give an
# ephemeral port, which any outgoing connection of a parallel test may take before the
# node binds it (CI saw a restarted node fail with EADDRINUSE that way).
PORT_LOW, PORT_BLOCK = 10_000, 4_000
_next_port: list[int] = []


def _port_block() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    idx = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    return PORT_LOW + PORT_BLOCK * (idx % 5)


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A TCP+UDP port on 127.0.0.1 no other test of this run will be handed."""
    base = _port_block()
    if not _next_port:
        _next_port.append((os.getpid() * 7919) % PORT_BLOCK)
    for _ in range(PORT_BLOCK):
        off = _next_port[0]
        _next_port[0] = (off + 1) % PORT_BLOCK
        if _bindable(base + off):
            return base + off
    raise RuntimeError("no free port in this worker's block")


def shared_cluster_key() -> Path:
    """One cluster key for every test node of this process (the secure path by default);
    a test that passes its own ``-cluster.key``, or ``-insecure``, gets none added."""
    if not _test_key:
        import tempfile

        from oklog.cluster.keyring import new_key

        d = Path(tempfile.mkdtemp(prefix="oklog-test-key-"))
        (d / "cluster.key").write_text(new_key() + "\n")
        _test_key.append(d / "cluster.key")
    return _test_key[0]


_test_key: list[Path] = []


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
        self.ports.setdefault("node", free_port())  # members' TLS listener (with a cluster key)

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
            *self.key_args(),
            *(["-cluster.api", f"127.0.0.1:{p['node']}"] if self.key_path and "-cluster.api" not in self.args else []),
        ]

    def key_args(self) -> list[str]:
        if "-cluster.key" in self.args or "-insecure" in self.args:
            return []
        return ["-cluster.key", str(shared_cluster_key())]

    @property
    def key_path(self) -> str:
        """The cluster key this node runs with ("" for none)."""
        args = self.args + self.key_args()
        return args[args.index("-cluster.key") + 1] if "-cluster.key" in args else ""

    def member_auth(self):
        """httpx auth proving membership (this node's key), for tests calling internal endpoints."""
        from oklog.cluster.keyring import Keyring
        from oklog.net.auth import ClientAuth, NodeKeys

        return ClientAuth(NodeKeys(Keyring.load(self.key_path))) if self.key_path else None

    def start(self, timeout: float = 20.0) -> NodeProc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "node.log"
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=logf, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.log_path.read_text()
                tail = text.rsplit("oklog run", 1)[-1].lower()
                if "address already in use" in tail and not self._retried:
                    # Another test took a port between free_port() and the bind.
                    self._retried = True
                    self.ports = {k: free_port() for k in self.ports}
                    return self.start(timeout)
                raise RuntimeError(f"node exited: {text[-2000:]}")
            if self.answering():
                return self
            time.sleep(0.1)
        raise TimeoutError(f"node did not come up: {self.log_path.read_text()[-2000:]}")

    def answering(self) -> bool:
        """This node (not another process on its API port) answers its API."""
        try:
            r = httpx.get(self.url + "/cluster/state", timeout=1)
            return r.status_code == 200 and r.json().get("self") == f"127.0.0.1:{self.ports['cluster']}"
        except (httpx.HTTPError, ValueError):
            return False

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
