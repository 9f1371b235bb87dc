#!/usr/bin/env python
"""Chaos harness: proof (or disproof) of no acknowledged data loss.

Starts 3-5 real ``oklog run`` subprocesses on 127.0.0.1 (the first is the seed,
the others ``-peer`` it; replication factor 2), drives numbered records into
them while a seeded random schedule injects faults, lets the cluster settle,
queries EVERY node and checks every acknowledged record is returned exactly
once.

Writers (each record's line is ``chaos <writer> <seq> <tag>``, where ``tag`` is a
digest of writer and seq, so a corrupted copy is told apart from a good one):

* ``durable-N``  the harness speaks the durable protocol itself: a batch of
                 lines on the durable port, the node answers ``+N`` per fsynced
                 batch. Acknowledged = covered by a ``+N``. A line is sent once
                 (never resent), so unacknowledged lines may arrive 0 or 1 times.
* ``bulk-N``     the harness speaks the bulk protocol itself: ``BULK <n>`` frames
                 stamped with ``oklog.records.record.ULIDSource``; on ``ERR``, timeout or
                 a broken connection the SAME frame (same ULIDs) is retried on
                 another node until ``OK``. Acknowledged = every line of a frame
                 that got ``OK``.
* ``fast``       plain lines on the fast port (no acknowledgement): its loss is
                 measured, not asserted (bounded by what was in flight).
* ``fwd-bulk``   a real ``oklog forward -mode bulk`` fed by a pipe; it retries
                 until acknowledged, so every line must arrive exactly once.
* ``fwd-durable`` a real ``oklog forward -mode durable``; every line must arrive
                 (at least once: its contract allows a resent, unacknowledged
                 batch to be stored twice, so its duplicates are reported apart).

Faults (one at a time, so at most one node is impaired and RF=2 can hold):

* ``kill``     SIGKILL, down 1-4 s, restart with the same ports and dirs.
* ``stop``     SIGSTOP for 3-6 s (longer than the 2 s suspicion timeout: the
               others see a partitioned node), then SIGCONT.
* ``diskfull`` there is no small filesystem or quota here, so a full disk is
               emulated with ``prlimit(RLIMIT_FSIZE, 0)`` on the running node:
               for 3-6 s every write to a regular file fails (EFBIG instead of
               ENOSPC; Python ignores SIGXFSZ so the write call fails, it does
               not kill). Sockets are unaffected. Then the limit is restored.
* ``corrupt``  a store segment (``*.seg``) of a running node has bytes flipped
               or is truncated mid-record; the node must stay alive, keep
               answering ``/health`` and queries; whether it reports the file in
               ``pipeline.store.quarantined`` is recorded.

Settle: all nodes running, every member alive in every node's view, no
active/flushed/pending ingest segment anywhere (two polls in a row). Then
``GET /store/query?from=<start>&q=chaos`` on every node, and ``/store/_query``
on every node to count replicas. Prints a table and writes JSON.

Run:  .venv/bin/python tests/chaos/harness.py --duration 120 --seed 1
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from oklog.records.record import ULIDSource, stamp_lines  # noqa: E402


def _load_nodeproc():
    """tests/conftest.py's NodeProc, loaded under a private name (another
    ``conftest`` module may be in sys.modules under pytest)."""
    spec = importlib.util.spec_from_file_location("_oklog_tests_conftest", ROOT / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_oklog_tests_conftest", mod)
    spec.loader.exec_module(mod)
    return mod.NodeProc


NodeProc = _load_nodeproc()

OKLOG = [sys.executable, "-m", "oklog"]
CONNECT_TIMEOUT = 2.0
DURABLE_ACK_TIMEOUT = 5.0
BULK_ACK_TIMEOUT = 15.0
TICK = 0.1
TOPIC = b"chaos"


def tag(writer: str, seq: int) -> str:
    return hashlib.blake2b(f"{writer} {seq}".encode(), digest_size=6).hexdigest()


def line_of(writer: str, seq: int) -> bytes:
    return f"chaos {writer} {seq} {tag(writer, seq)}".encode()


def now_rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# -- configuration and report ---------------------------------------------------------


@dataclass
class Config:
    duration: float = 120.0
    rate: float = 300.0  # records per second over all writers
    nodes: int = 3
    seed: int = 1
    faults: list[str] | None = None  # fixed kinds in order (short form); None: random
    kinds: tuple[str, ...] = ("kill", "stop", "diskfull", "corrupt")
    corrupt_modes: tuple[str, ...] = ("flip", "truncate")
    fault_gap: tuple[float, float] = (3.0, 8.0)
    durable_writers: int = 2
    bulk_writers: int = 2
    fast_writer: bool = True
    forwarders: tuple[str, ...] = ("bulk", "durable")
    workdir: str | None = None
    keep: bool = False
    settle_timeout: float = 90.0
    json_path: str | None = None
    quiet: bool = False


@dataclass
class FaultRecord:
    kind: str
    node: int
    at: float  # seconds since the run started
    detail: str = ""
    recover_s: float | None = None
    survived: bool | None = None  # corrupt / diskfull: the node did not exit
    quarantined: bool | None = None  # corrupt: the file was reported


@dataclass
class WriterResult:
    name: str
    mode: str
    sent: int = 0
    acked: int = 0
    found: int = 0  # acknowledged (or, fast/forwarders: sent) records returned intact
    lost: int = 0  # acknowledged (or must-arrive) records not returned at all
    corrupted: int = 0  # copies returned with wrong bytes (a record with no intact copy is lost)
    duplicates: int = 0  # extra copies of one record in one answer
    duplicates_in_corrupted: int = 0  # of which the record lies in a corrupted file's ULID range
    unacked_found: int = 0  # durable/bulk: sent, not acknowledged, yet stored
    under_replicated: int = 0  # acknowledged records held by fewer than 2 nodes
    note: str = ""


# -- writers --------------------------------------------------------------------------


class Writer(threading.Thread):
    mode = ""

    def __init__(self, h: Harness, name: str, rate: float) -> None:
        super().__init__(name=name, daemon=True)
        self.h = h
        self.wname = name
        self.rate = rate
        self.next_seq = 0
        self.acked: set[int] = set()
        self.sent: set[int] = set()
        self.errors: list[str] = []
        self.rnd = random.Random(f"{h.cfg.seed}-{name}")

    def due(self, cap: int = 5000) -> int:
        elapsed = time.monotonic() - self.h.t0
        return max(0, min(cap, int(self.rate * elapsed) - self.next_seq))

    def take(self, n: int) -> list[int]:
        seqs = list(range(self.next_seq, self.next_seq + n))
        self.next_seq += n
        return seqs

    def connect(self, port_name: str) -> socket.socket | None:
        order = list(range(len(self.h.nodes)))
        self.rnd.shuffle(order)
        for i in order:
            try:
                s = socket.create_connection(
                    ("127.0.0.1", self.h.nodes[i].ports[port_name]), timeout=CONNECT_TIMEOUT
                )
            except OSError:
                continue
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        return None

    def note(self, msg: str) -> None:
        if len(self.errors) < 50:
            self.errors.append(f"{time.monotonic() - self.h.t0:.1f}s {msg}")


class StreamWriter(Writer):
    """A writer on one TCP connection at a time, reconnecting to a random node when
    ``send`` says the connection broke."""

    def run(self) -> None:
        sock: socket.socket | None = None
        while not self.h.stop_writing.is_set():
            time.sleep(TICK)
            if sock is None:
                sock = self.connect(self.mode)
                if sock is None:
                    continue
            n = self.due()
            if not n:
                continue
            if not self.send(sock, self.take(n)):
                sock.close()
                sock = None
        if sock is not None:
            self.finish(sock)

    def send(self, sock: socket.socket, seqs: list[int]) -> bool:
        """Write the lines of ``seqs``; False if the connection is no good any more."""
        raise NotImplementedError

    def finish(self, sock: socket.socket) -> None:
        sock.close()


class DurableWriter(StreamWriter):
    mode = "durable"

    def send(self, sock: socket.socket, seqs: list[int]) -> bool:
        n, acked, ok = len(seqs), 0, True
        try:
            sock.settimeout(DURABLE_ACK_TIMEOUT)
            sock.sendall(b"".join(line_of(self.wname, s) + b"\n" for s in seqs))
            self.sent.update(seqs)
            buf = b""
            deadline = time.monotonic() + DURABLE_ACK_TIMEOUT
            while acked < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{n - acked} of {n} lines not acknowledged")
                sock.settimeout(left)
                data = sock.recv(4096)
                if not data:
                    raise ConnectionError("node closed the connection")
                buf += data
                *acks, buf = buf.split(b"\n")
                for a in acks:
                    if not a.startswith(b"+"):
                        raise ConnectionError(f"unexpected reply {a[:60]!r}")
                    acked += int(a[1:])
        except (OSError, ValueError) as e:
            self.sent.update(seqs)
            self.note(f"durable batch broken after {acked}/{n} acks: {e}")
            ok = False
        self.acked.update(seqs[: min(acked, n)])
        return ok


class BulkWriter(Writer):
    mode = "bulk"
    interval = 0.5

    def run(self) -> None:
        ulids = ULIDSource()
        self.sock: socket.socket | None = None
        while not self.h.stop_writing.is_set():
            time.sleep(self.interval)
            n = self.due()
            if not n:
                continue
            seqs = self.take(n)
            body = stamp_lines([line_of(self.wname, s) for s in seqs], ulids.headers(n, TOPIC))
            frame = b"BULK %d\n" % len(body) + body
            self.sent.update(seqs)
            if self.deliver(frame, n):
                self.acked.update(seqs)
        if self.sock is not None:
            self.sock.close()

    def deliver(self, frame: bytes, n: int) -> bool:
        """Send ``frame`` until some node answers OK (same bytes, same ULIDs)."""
        tries = 0
        while time.monotonic() < self.h.give_up_at:
            tries += 1
            if self.sock is None:
                self.sock = self.connect("bulk")
                if self.sock is None:
                    time.sleep(0.2)
                    continue
            try:
                self.sock.settimeout(BULK_ACK_TIMEOUT)
                self.sock.sendall(frame)
                reply = b""
                while not reply.endswith(b"\n"):
                    data = self.sock.recv(256)
                    if not data:
                        raise ConnectionError("node closed the connection")
                    reply += data
                if reply.startswith(b"OK "):
                    if int(reply[3:]) != n:
                        self.note(f"OK for {reply[3:].strip()!r} records, sent {n}")
                    return True
                raise ConnectionError(f"reply {reply.strip()[:80]!r}")
            except (OSError, ValueError) as e:
                self.note(f"bulk frame try {tries} failed: {e}")
                self.sock.close()
                self.sock = None
                time.sleep(0.1)
        self.note("gave up on a frame")
        return False


class FastWriter(StreamWriter):
    mode = "fast"

    def send(self, sock: socket.socket, seqs: list[int]) -> bool:
        self.sent.update(seqs)
        try:
            sock.settimeout(DURABLE_ACK_TIMEOUT)
            sock.sendall(b"".join(line_of(self.wname, s) + b"\n" for s in seqs))
        except OSError as e:
            self.note(f"fast send failed: {e}")
            return False
        return True

    def finish(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            while sock.recv(4096):
                pass
        sock.close()


class ForwardWriter(Writer):
    """A real ``oklog forward`` subprocess fed by a pipe."""

    def __init__(self, h: Harness, name: str, rate: float, fmode: str) -> None:
        super().__init__(h, name, rate)
        self.mode = f"forward-{fmode}"
        self.fmode = fmode
        port = {"bulk": "bulk", "durable": "durable"}[fmode]
        addrs = [f"127.0.0.1:{n.ports[port]}" for n in h.nodes]
        self.log_path = Path(h.workdir) / f"{name}.log"
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            OKLOG + ["forward", "-mode", fmode, "-backoff", "0.5s", *addrs],
            stdin=subprocess.PIPE,
            stdout=self.logf,
            stderr=subprocess.STDOUT,
        )
        h.children.append(self.proc)
        self.rc: int | None = None

    def run(self) -> None:
        assert self.proc.stdin is not None
        try:
            while not self.h.stop_writing.is_set():
                time.sleep(TICK)
                n = self.due()
                if not n:
                    continue
                seqs = self.take(n)
                self.proc.stdin.write(b"".join(line_of(self.wname, s) + b"\n" for s in seqs))
                self.proc.stdin.flush()
                self.sent.update(seqs)
        except OSError as e:
            self.note(f"forwarder pipe broke: {e}")
        finally:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def finish(self, timeout: float) -> None:
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.note(f"forwarder did not exit within {timeout:.0f}s of EOF (killed)")
            self.proc.kill()
            self.rc = self.proc.wait(10)
        self.logf.close()
        if self.rc == 0:
            # It exits 0 only once every line was acknowledged.
            self.acked = set(self.sent)
        else:
            self.note(f"forwarder exited {self.rc}")


# -- faults ---------------------------------------------------------------------------


class Faults(threading.Thread):
    def __init__(self, h: Harness) -> None:
        super().__init__(name="faults", daemon=True)
        self.h = h
        self.rnd = random.Random(h.cfg.seed)
        self.records: list[FaultRecord] = []
        self.crashes: list[str] = []
        self.done = threading.Event()
        self.schedule = self.make_schedule()

    def make_schedule(self) -> list[tuple[float, str, int]]:
        cfg, rnd = self.h.cfg, self.rnd
        n = cfg.nodes
        if cfg.faults is not None:
            k = len(cfg.faults)
            return [
                (cfg.duration * (i + 1) / (k + 1) - 2, kind, rnd.randrange(n))
                for i, kind in enumerate(cfg.faults)
            ]
        out = []
        t = rnd.uniform(2, 5)
        while t < cfg.duration - 6:
            out.append((t, rnd.choice(cfg.kinds), rnd.randrange(n)))
            t += rnd.uniform(*cfg.fault_gap)
        return out

    def run(self) -> None:
        try:
            for at, kind, idx in self.schedule:
                while time.monotonic() - self.h.t0 < at:
                    if self.h.stop_faults.is_set():
                        return
                    self.watchdog()
                    time.sleep(0.2)
                if self.h.stop_faults.is_set():
                    return
                rec = FaultRecord(kind, idx, round(time.monotonic() - self.h.t0, 2))
                self.records.append(rec)
                self.h.say(f"[{rec.at:6.1f}s] fault {kind} on node {idx}")
                try:
                    getattr(self, f"do_{kind}")(idx, rec)
                except Exception as e:  # a harness problem must not hang the run
                    rec.detail += f" harness error: {e!r}"
                self.h.say(f"          -> {rec.detail.strip()} (recover {rec.recover_s}s)")
        finally:
            self.done.set()

    def watchdog(self) -> None:
        """A node that exited without being killed by us is a crash: record, restart."""
        for i, n in enumerate(self.h.nodes):
            if i in self.h.down:
                continue
            rc = n.proc.poll() if n.proc is not None else None
            if rc is not None:
                tail = n.log_path.read_text(errors="replace")[-1500:] if n.log_path else ""
                self.crashes.append(f"node {i} exited rc={rc} at {time.monotonic() - self.h.t0:.1f}s: ...{tail}")
                self.h.say(f"!! node {i} exited unexpectedly (rc {rc}); restarting")
                t = time.monotonic()
                n.start(timeout=30)
                self.h.wait_recovered(i, t)

    def do_kill(self, idx: int, rec: FaultRecord) -> None:
        node = self.h.nodes[idx]
        down = self.rnd.uniform(1, 4)
        self.h.down.add(idx)
        node.kill()
        time.sleep(down)
        t = time.monotonic()
        node.start(timeout=30)
        self.h.down.discard(idx)
        rec.recover_s = self.h.wait_recovered(idx, t)
        rec.detail = f"SIGKILL, down {down:.1f}s, restarted"

    def do_stop(self, idx: int, rec: FaultRecord) -> None:
        node = self.h.nodes[idx]
        hold = self.rnd.uniform(3, 6)
        self.h.down.add(idx)
        self.h.stopped.add(idx)
        node.signal(signal.SIGSTOP)
        time.sleep(hold)
        node.signal(signal.SIGCONT)
        self.h.stopped.discard(idx)
        t = time.monotonic()
        self.h.down.discard(idx)
        rec.recover_s = self.h.wait_recovered(idx, t)
        rec.detail = f"SIGSTOP {hold:.1f}s, SIGCONT"

    def do_diskfull(self, idx: int, rec: FaultRecord) -> None:
        node = self.h.nodes[idx]
        hold = self.rnd.uniform(3, 6)
        pid = node.proc.pid
        self.h.limited.add(pid)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        time.sleep(hold)
        if node.proc.poll() is None:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        self.h.limited.discard(pid)
        rc = node.proc.poll()
        rec.survived = rc is None and self.h.healthy(idx)
        rec.detail = f"file writes fail (RLIMIT_FSIZE=0) for {hold:.1f}s"
        if rc is not None:
            tail = node.log_path.read_text(errors="replace")[-1500:]
            self.crashes.append(f"node {idx} exited rc={rc} during diskfull: ...{tail}")
            rec.detail += f"; NODE EXITED rc={rc}, restarted"
            t = time.monotonic()
            node.start(timeout=30)
            rec.recover_s = self.h.wait_recovered(idx, t)
        else:
            rec.recover_s = self.h.wait_recovered(idx, time.monotonic() - 0.0)

    def do_corrupt(self, idx: int, rec: FaultRecord) -> None:
        node = self.h.nodes[idx]
        store = node.workdir / "store"
        # Damage at most one copy of any record: replication factor 2 promises to
        # survive one bad replica, not two (a segment overlapping one already
        # corrupted on another node is left alone).
        others = [name for i, name in self.h.corrupted_files if i != idx]
        segs = sorted(
            p for p in store.glob("*.seg")
            if p.stat().st_size > 200
            and not any(p.name[:26] <= o[27:53] and o[:26] <= p.name[27:53] for o in others)
        )
        if not segs:
            rec.detail = "no store segment to corrupt yet (skipped)"
            return
        victim = self.rnd.choice(segs)
        data = victim.read_bytes()
        how = self.rnd.choice(list(self.h.cfg.corrupt_modes))
        if how == "flip":
            spots = sorted(self.rnd.randrange(len(data)) for _ in range(3))
            with open(victim, "r+b") as f:
                for p in spots:
                    f.seek(p)
                    f.write(bytes([data[p] ^ 0x5A]))
            rec.detail = f"flipped bytes {spots} of {victim.name} ({len(data)} B)"
        else:
            mid = data.find(b"\n", len(data) // 2) + 1
            cut = min(len(data) - 1, mid + 13)  # inside the record after mid
            os.truncate(victim, cut)
            rec.detail = f"truncated {victim.name} from {len(data)} to {cut} B (mid-record)"
        self.h.corrupted_files.append((idx, victim.name))
        # Make the node read it: a query over the whole run, local and fanned out.
        statuses = []
        for path in ("/store/_query", "/store/query"):
            try:
                r = httpx.get(node.url + path, params={"from": self.h.start_rfc, "q": "chaos"}, timeout=20,
                              auth=node.member_auth())
                statuses.append(r.status_code)
            except httpx.HTTPError as e:
                statuses.append(type(e).__name__)
        time.sleep(1.0)
        rec.survived = node.proc.poll() is None and self.h.healthy(idx)
        rec.detail += f"; queries after: {statuses}"
        deadline = time.monotonic() + 3
        rec.quarantined = False
        while time.monotonic() < deadline and rec.survived:
            st = self.h.state(idx)
            q = (st or {}).get("pipeline", {}).get("store", {}).get("quarantined", [])
            if any(victim.name in x for x in q):
                rec.quarantined = True
                break
            time.sleep(0.3)
        if node.proc.poll() is not None:
            tail = node.log_path.read_text(errors="replace")[-1500:]
            self.crashes.append(f"node {idx} exited after corruption: ...{tail}")
            node.start(timeout=30)
        # The node never went down: this is how long it takes to answer again now.
        rec.recover_s = self.h.wait_recovered(idx, time.monotonic())


# -- the harness ----------------------------------------------------------------------


class Harness:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.own_workdir = cfg.workdir is None
        self.workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="oklog-chaos-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes: list = []
        self.children: list[subprocess.Popen] = []
        self.down: set[int] = set()
        self.stopped: set[int] = set()
        self.limited: set[int] = set()
        self.corrupted_files: list[tuple[int, str]] = []
        self.stop_writing = threading.Event()
        self.stop_faults = threading.Event()
        self.t0 = time.monotonic()
        self.give_up_at = self.t0 + 1e9
        self.start_rfc = ""
        self.log_lines: list[str] = []

    def say(self, msg: str) -> None:
        self.log_lines.append(msg)
        if not self.cfg.quiet:
            print(msg, flush=True)

    # -- cluster ------------------------------------------------------------------

    def node_args(self, i: int, seed_cluster: int) -> list[str]:
        args = [
            "-store.segment-replication-factor", "2",
            "-ingest.segment-flush-age", "0.5s",
            "-ingest.segment-pending-timeout", "5s",
            "-store.segment-target-age", "1s",
            "-cluster.suspicion-timeout", "2s",
            "-query.member-timeout", "10s",
            "-ingest.drain-timeout", "2s",
        ]
        if i:
            args += ["-peer", f"127.0.0.1:{seed_cluster}"]
        return args

    def start_cluster(self) -> None:
        seed = NodeProc(self.workdir / "n0")
        seed.args = self.node_args(0, seed.ports["cluster"])
        self.nodes.append(seed)
        for i in range(1, self.cfg.nodes):
            self.nodes.append(NodeProc(self.workdir / f"n{i}", self.node_args(i, seed.ports["cluster"])))
        for n in self.nodes:
            n.start(timeout=30)
        self.wait_members(timeout=30)

    def state(self, i: int) -> dict | None:
        try:
            r = httpx.get(self.nodes[i].url + "/cluster/state", timeout=2)
            return r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def healthy(self, i: int) -> bool:
        try:
            return httpx.get(self.nodes[i].url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def alive_view(self, i: int) -> set[str] | None:
        st = self.state(i)
        if st is None:
            return None
        return {m["api_addr"] for m in st["members"] if m["state"] == "alive" and m.get("api_addr")}

    def wait_members(self, timeout: float) -> bool:
        want = {n.api for n in self.nodes}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.alive_view(i) == want for i in range(len(self.nodes))):
                return True
            time.sleep(0.2)
        return False

    def wait_recovered(self, idx: int, since: float, timeout: float = 30.0) -> float | None:
        """Seconds from ``since`` until node idx answers /health and a query and
        every running node sees it alive; None if not within ``timeout``."""
        node = self.nodes[idx]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = self.healthy(idx)
            if ok:
                try:
                    r = httpx.get(node.url + "/store/query", params={"from": now_rfc3339(time.time() - 1), "q": "x"}, timeout=5)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
            if ok:
                for j in range(len(self.nodes)):
                    if j in self.down:
                        continue
                    view = self.alive_view(j)
                    if view is None or node.api not in view:
                        ok = False
                        break
            if ok:
                return round(time.monotonic() - since, 2)
            time.sleep(0.1)
        return None

    def settle(self, timeout: float) -> tuple[bool, float]:
        """Every node running and alive in every view; no ingest segment left."""
        t = time.monotonic()
        deadline = t + timeout
        clean = 0
        while time.monotonic() < deadline:
            ok = True
            for i in range(len(self.nodes)):
                st = self.state(i)
                if st is None:
                    ok = False
                    break
                segs = st["pipeline"].get("ingest", {}).get("segments", {})
                if any(segs.values()):
                    ok = False
                    break
            if ok and self.wait_members(timeout=0.5):
                clean += 1
                if clean >= 2:
                    return True, round(time.monotonic() - t, 2)
            else:
                clean = 0
            time.sleep(0.5)
        return False, round(time.monotonic() - t, 2)

    # -- checking -------------------------------------------------------------------

    def query(self, i: int, path: str) -> tuple[int, dict[str, str], bytes]:
        r = httpx.get(self.nodes[i].url + path, params={"from": self.start_rfc, "q": "chaos"}, timeout=60,
                      auth=self.nodes[i].member_auth())
        return r.status_code, dict(r.headers), r.content

    @staticmethod
    def parse(body: bytes) -> tuple[Counter, Counter, int]:
        """(intact copies per (writer, seq), corrupted copies per (writer, seq), garbage lines)."""
        intact: Counter = Counter()
        bad: Counter = Counter()
        garbage = 0
        for rec in body.split(b"\n"):
            if not rec:
                continue
            parts = rec.split(b" ", 2)
            line = parts[2] if len(parts) == 3 else b""
            f = line.split(b" ")
            try:
                key = (f[1].decode(), int(f[2]))
            except (IndexError, ValueError, UnicodeDecodeError):
                garbage += 1
                continue
            if line == line_of(*key) and len(parts[0]) == 26 and parts[1] in (TOPIC, b"default"):
                intact[key] += 1
            else:
                bad[key] += 1
        return intact, bad, garbage

    @staticmethod
    def raw_by_key(body: bytes, keys: set) -> dict:
        """The raw records (as text) of some (writer, seq) keys, for the report."""
        out: dict = {k: [] for k in keys}
        if not keys:
            return out
        for rec in body.split(b"\n"):
            f = rec.split(b" ", 2)[-1].split(b" ")
            try:
                key = (f[1].decode(), int(f[2]))
            except (IndexError, ValueError, UnicodeDecodeError):
                continue
            if key in out:
                out[key].append(rec.decode("utf-8", "backslashreplace")[:200])
        return out

    def in_corrupted_range(self, ulid: str) -> bool:
        return any(name[:26] <= ulid <= name[27:53] for _, name in self.corrupted_files)

    def check(self, writers: list[Writer]) -> dict:
        per_node = []
        results: dict[str, WriterResult] = {}
        for w in writers:
            results[w.wname] = WriterResult(w.wname, w.mode, len(w.sent), len(w.acked), found=-1)
        # Replica counts from each node's own part.
        holders: Counter = Counter()
        for i in range(len(self.nodes)):
            try:
                status, _, body = self.query(i, "/store/_query")
            except httpx.HTTPError:
                continue
            if status in (200, 206):  # 206: a quarantined file's records are missing, the rest are held
                intact, _, _ = self.parse(body)
                holders.update(intact.keys())
        for i in range(len(self.nodes)):
            try:
                status, headers, body = self.query(i, "/store/query")
            except httpx.HTTPError as e:
                per_node.append({"node": i, "error": repr(e)})
                continue
            intact, bad, garbage = self.parse(body)
            raw = self.raw_by_key(body, {k for k, c in intact.items() if c > 1} | set(bad))
            node_rep = {
                "node": i,
                "status": status,
                "error_count": headers.get("x-oklog-error-count"),
                "records": sum(intact.values()) + sum(bad.values()) + garbage,
                "garbage_lines": garbage,
                "writers": {},
            }
            for w in writers:
                res = results[w.wname]
                must = w.acked if w.mode != "fast" else set()
                lost = sorted(s for s in must if intact[(w.wname, s)] == 0)
                dup_keys = sorted(k for k, c in intact.items() if k[0] == w.wname and c > 1)
                dups = sum(intact[k] - 1 for k in dup_keys)
                dups_corrupt = sum(
                    intact[k] - 1 for k in dup_keys if self.in_corrupted_range(raw[k][0][:26])
                )
                bad_copies = sum(c for k, c in bad.items() if k[0] == w.wname)
                found_sent = sum(1 for s in w.sent if intact[(w.wname, s)])
                found_must = sum(1 for s in must if intact[(w.wname, s)])
                unacked_found = sum(1 for s in w.sent - w.acked if intact[(w.wname, s)])
                found = found_must if w.mode != "fast" else found_sent
                node_rep["writers"][w.wname] = {
                    "found": found,
                    "lost": len(lost),
                    "lost_sample": lost[:10],
                    "corrupted_copies": bad_copies,
                    "corrupted_sample": [raw[k][:3] for k in sorted(k for k in bad if k[0] == w.wname)[:5]],
                    "duplicates": dups,
                    "duplicate_sample": [raw[k][:3] for k in dup_keys[:5]],
                    "duplicates_in_corrupted": dups_corrupt,
                    "unacked_found": unacked_found,
                }
                # The table shows the worst node's answer.
                first = res.found == -1
                res.found = found if first else min(res.found, found)
                res.lost = max(res.lost, len(lost) if w.mode != "fast" else len(w.sent) - found_sent)
                res.corrupted = max(res.corrupted, bad_copies)
                res.duplicates = max(res.duplicates, dups)
                res.duplicates_in_corrupted = max(res.duplicates_in_corrupted, dups_corrupt)
                res.unacked_found = unacked_found if first else min(res.unacked_found, unacked_found)
            per_node.append(node_rep)
        for w in writers:
            res = results[w.wname]
            must = w.acked if w.mode != "fast" else w.sent
            res.under_replicated = sum(1 for s in must if holders[(w.wname, s)] < 2)
            res.note = "; ".join(w.errors[-3:])
        return {"per_node": per_node, "writers": [asdict(r) for r in results.values()]}

    # -- the run --------------------------------------------------------------------

    def run(self) -> dict:
        cfg = self.cfg
        report: dict = {"config": {k: v for k, v in asdict(cfg).items()}, "workdir": str(self.workdir)}
        started = time.monotonic()
        writers: list[Writer] = []
        faults: Faults | None = None
        try:
            self.say(f"chaos: {cfg.nodes} nodes, {cfg.duration:.0f}s at {cfg.rate:.0f} rec/s, seed {cfg.seed}, in {self.workdir}")
            self.start_cluster()
            self.start_rfc = now_rfc3339(time.time() - 5)
            self.t0 = time.monotonic()
            self.give_up_at = self.t0 + cfg.duration + 45
            kinds = (
                [("durable", i) for i in range(cfg.durable_writers)]
                + [("bulk", i) for i in range(cfg.bulk_writers)]
                + ([("fast", 0)] if cfg.fast_writer else [])
                + [(f"fwd-{m}", 0) for m in cfg.forwarders]
            )
            each = cfg.rate / max(1, len(kinds))
            for kind, i in kinds:
                if kind == "durable":
                    writers.append(DurableWriter(self, f"durable-{i}", each))
                elif kind == "bulk":
                    writers.append(BulkWriter(self, f"bulk-{i}", each))
                elif kind == "fast":
                    writers.append(FastWriter(self, "fast", each))
                else:
                    writers.append(ForwardWriter(self, kind, each, kind[4:]))
            faults = Faults(self)
            for w in writers:
                w.start()
            faults.start()
            time.sleep(max(0.0, self.t0 + cfg.duration - time.monotonic()))
            self.stop_writing.set()
            self.say(f"[{time.monotonic() - self.t0:6.1f}s] writing stopped; waiting for faults and writers")
            faults.done.wait(timeout=60)
            self.stop_faults.set()
            faults.join(timeout=5)
            self.restore_all()
            for w in writers:
                if isinstance(w, ForwardWriter):
                    w.join(timeout=5)
                    w.finish(timeout=max(10.0, self.give_up_at - time.monotonic()))
            for w in writers:
                w.join(timeout=max(1.0, self.give_up_at + BULK_ACK_TIMEOUT - time.monotonic()))
            faults.watchdog()
            settled, settle_s = self.settle(cfg.settle_timeout)
            self.say(f"[{time.monotonic() - self.t0:6.1f}s] settled={settled} in {settle_s}s; querying every node")
            check = self.check(writers)
            report.update(check)
            report["settled"] = settled
            report["settle_seconds"] = settle_s
            report["faults"] = [asdict(f) for f in faults.records]
            report["crashes"] = faults.crashes
            report["repair"] = self.repair()
            report["quarantine_states"] = {
                i: (self.state(i) or {}).get("pipeline", {}).get("store", {}).get("quarantined")
                for i in range(len(self.nodes))
            }
        finally:
            self.stop_writing.set()
            self.stop_faults.set()
            self.teardown()
        report["elapsed_seconds"] = round(time.monotonic() - started, 1)
        report["summary"] = summarize(report)
        if cfg.json_path:
            Path(cfg.json_path).write_text(json.dumps(report, indent=2, default=str))
        else:
            (self.workdir / "chaos-report.json").write_text(json.dumps(report, indent=2, default=str))
        if not cfg.keep and report["summary"]["ok"]:
            for n in self.nodes:  # node data; logs and the JSON stay
                for d in ("ingest", "store"):
                    shutil.rmtree(n.workdir / d, ignore_errors=True)
        return report

    def repair(self) -> dict:
        try:
            r = subprocess.run(OKLOG + ["repair", "-h"], capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            return {"available": False, "note": "oklog repair -h timed out"}
        if r.returncode != 0:
            return {
                "available": False,
                "note": f"`oklog repair -h` exits {r.returncode} ({r.stderr.decode(errors='replace').strip().splitlines()[0][:80]}): skipped",
            }
        out = subprocess.run(
            OKLOG + ["repair", "-store", self.nodes[0].api]
            + (["-cluster.key", self.nodes[0].key_path] if self.nodes[0].key_path else []),
            capture_output=True, timeout=120,
        )
        return {"available": True, "rc": out.returncode, "output": out.stdout.decode(errors="replace")[-2000:]}

    def restore_all(self) -> None:
        """Every node running, continued, with no file-size limit."""
        for i, n in enumerate(self.nodes):
            if n.proc is None:
                continue
            if n.proc.poll() is None:
                n.signal(signal.SIGCONT)
                with contextlib.suppress(OSError):
                    resource.prlimit(n.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            else:
                self.say(f"node {i} not running at the end; restarting")
                n.start(timeout=30)
            self.down.discard(i)

    def teardown(self) -> None:
        for p in self.children:
            if p.poll() is None:
                p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(10)
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.signal(signal.SIGCONT)
                n.kill()


def summarize(report: dict) -> dict:
    ws = report.get("writers", [])
    must = [w for w in ws if w["mode"] != "fast"]
    exact = [w for w in ws if w["mode"] != "forward-durable" and w["mode"] != "fast"]
    faults = report.get("faults", [])
    by_kind: dict[str, dict] = {}
    for f in faults:
        k = by_kind.setdefault(f["kind"], {"count": 0, "max_recover_s": None, "not_recovered": 0})
        k["count"] += 1
        if f["recover_s"] is None:
            if f["kind"] != "corrupt" or f.get("survived") is not None:
                k["not_recovered"] += f["kind"] != "corrupt" or not f.get("survived")
        else:
            k["max_recover_s"] = max(k["max_recover_s"] or 0, f["recover_s"])
    lost = sum(w["lost"] for w in must)
    dups = sum(w["duplicates"] for w in exact)
    corrupted = sum(w["corrupted"] for w in must)
    fast = next((w for w in ws if w["mode"] == "fast"), None)
    per_node_status = [p.get("status") for p in report.get("per_node", [])]
    return {
        "ok": bool(ws) and lost == 0 and dups == 0 and report.get("settled", False),
        "acked": sum(w["acked"] for w in must),
        "lost": lost,
        "duplicates": dups,
        "corrupted": corrupted,
        "duplicates_outside_corrupted": dups - sum(w["duplicates_in_corrupted"] for w in exact),
        "forward_durable_duplicates": sum(w["duplicates"] for w in ws if w["mode"] == "forward-durable"),
        "fast_sent": fast["sent"] if fast else 0,
        "fast_lost": fast["lost"] if fast else 0,
        "faults": by_kind,
        "crashes": len(report.get("crashes", [])),
        "query_status": per_node_status,
    }


def table(report: dict) -> str:
    s = report["summary"]
    out = ["", "faults injected", "  kind       count  max recover (s)  not recovered"]
    for k, v in sorted(s["faults"].items()):
        out.append(f"  {k:<10} {v['count']:>5}  {str(v['max_recover_s']):>15}  {v['not_recovered']:>13}")
    corrupt = [f for f in report.get("faults", []) if f["kind"] == "corrupt"]
    if corrupt:
        out.append(
            f"  corruption: node survived {sum(bool(f['survived']) for f in corrupt)}/{len(corrupt)}, "
            f"file reported quarantined {sum(bool(f['quarantined']) for f in corrupt)}/{len(corrupt)}"
        )
    out += [
        "",
        "records (worst node's answer)",
        "  writer        mode             sent   acked   found    lost  dups  corrupt  unacked-found  <2 replicas",
    ]
    for w in report.get("writers", []):
        out.append(
            f"  {w['name']:<13} {w['mode']:<15} {w['sent']:>6}  {w['acked']:>6}  {w['found']:>6}  {w['lost']:>6}"
            f"  {w['duplicates']:>4}  {w['corrupted']:>7}  {w['unacked_found']:>13}  {w['under_replicated']:>11}"
        )
    out += [
        "",
        f"acknowledged {s['acked']}, lost {s['lost']}, duplicates {s['duplicates']} "
        f"({s['duplicates'] - s['duplicates_outside_corrupted']} in corrupted files' ranges), "
        f"served corrupted {s['corrupted']}; fast: {s['fast_lost']} of {s['fast_sent']} lost "
        f"(unacknowledged mode); node crashes {s['crashes']}; query status per node {s['query_status']}; "
        f"settled {report.get('settled')} in {report.get('settle_seconds')}s; "
        f"repair: {report.get('repair', {}).get('note', 'ran')}; elapsed {report['elapsed_seconds']}s",
        "RESULT: " + ("PASS (0 acknowledged lost, 0 duplicates)" if s["ok"] else "FAIL"),
    ]
    return "\n".join(out)


def run_chaos(cfg: Config) -> dict:
    return Harness(cfg).run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=120.0, help="seconds of writing (default 120)")
    p.add_argument("--rate", type=float, default=300.0, help="records/s over all writers (default 300)")
    p.add_argument("--nodes", type=int, default=3, choices=[3, 4, 5])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--faults", default="", help="fixed fault kinds in order, e.g. kill,stop,corrupt (default: random)")
    p.add_argument("--kinds", default="kill,stop,diskfull,corrupt", help="kinds the random schedule picks from")
    p.add_argument("--corrupt-modes", default="flip,truncate", help="how a segment is corrupted: flip (3 bytes), truncate (mid-record)")
    p.add_argument("--workdir", default=None, help="node dirs and logs (default: a temp dir, removed on success)")
    p.add_argument("--keep", action="store_true", help="keep the workdir even on success")
    p.add_argument("--json", default=None, help="write the report here (default: <workdir>/chaos-report.json)")
    ns = p.parse_args(argv)
    cfg = Config(
        duration=ns.duration,
        rate=ns.rate,
        nodes=ns.nodes,
        seed=ns.seed,
        faults=[k for k in ns.faults.split(",") if k] or None,
        kinds=tuple(k for k in ns.kinds.split(",") if k),
        corrupt_modes=tuple(k for k in ns.corrupt_modes.split(",") if k),
        workdir=ns.workdir,
        keep=ns.keep,
        json_path=ns.json,
    )

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    report = run_chaos(cfg)
    print(table(report))
    if report.get("crashes"):
        print("\nnode crashes:")
        for c in report["crashes"]:
            print("  " + c[:1200].replace("\n", "\n    "))
    print(f"\nJSON: {cfg.json_path or Path(report['workdir']) / 'chaos-report.json'}; node logs in {report['workdir']}")
    return 0 if report["summary"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
