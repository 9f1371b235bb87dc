"""Helpers that tests in several folders share about real nodes (``conftest`` starts
them): a member's gossip id, its ``/cluster/state``, key and token files, and
stopping a subprocess a test started. Imported as ``support`` (tests/ is on
``sys.path`` as for ``conftest``)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import trio


def node_id(n: Any) -> str:
    """The member id other nodes know ``n`` by: its gossip address."""
    return f"127.0.0.1:{n.ports['cluster']}"


def cluster_state(n: Any, timeout: float = 5) -> dict[str, Any]:
    r = httpx.get(n.url + "/cluster/state", timeout=timeout)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def alive(n: Any) -> set[str]:
    """The ids ``n`` believes alive."""
    return {m["id"] for m in cluster_state(n)["members"] if m["state"] == "alive"}


def key_file(path: Path, *keys: str) -> Path:
    """A cluster key file holding ``keys``, one a line."""
    path.write_text("".join(k + "\n" for k in keys))
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stop_pid(proc: subprocess.Popen[Any]) -> None:
    """Terminate one subprocess we started, by its PID; kill it if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def keyed_nodes(node_factory: Any, tmp_path: Path, key: str, args: list[str], count: int = 3) -> tuple[list[Any], list[Path]]:
    """``count`` started nodes, each with its own key file holding ``key``, joined
    through the first; returns them and their key files once all see all alive."""
    from conftest import wait_for

    nodes: list[Any] = []
    files: list[Path] = []
    for i in range(count):
        f = key_file(tmp_path / f"key{i}", key)
        seed = ["-peer", node_id(nodes[0])] if nodes else []
        nodes.append(node_factory(f"n{i}", args + ["-cluster.key", str(f)] + seed).start())
        files.append(f)
    everyone = {node_id(n) for n in nodes}
    wait_for(lambda: all(alive(n) == everyone for n in nodes), 20, what=f"{count} members")
    return nodes, files


def holders(nodes: list[Any]) -> dict[bytes, int]:
    """ULID → how many of these nodes hold the record (each node asked for its own)."""
    counts: dict[bytes, int] = {}
    for n in nodes:
        data = httpx.get(n.url + "/store/_query", timeout=30, auth=n.member_auth()).content
        for u in {r[:26] for r in data.split(b"\n")[:-1]}:
            counts[u] = counts.get(u, 0) + 1
    return counts


CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ref_ms(ulid: bytes) -> int:
    """The ULID's time, decoded one character at a time (independent of oklog and numpy)."""
    ms = 0
    for ch in ulid[:10].decode().upper():
        ms = ms * 32 + CROCKFORD.index(ch)
    return ms


async def poll_until(cond: Any, poll: float = 0.01) -> None:
    """Wait in a trio test until ``cond()`` holds. For the counters and sets of real
    components (gates, stats, taps, ingest logs), which offer no event to wait on;
    the caller bounds the wait with ``trio.fail_after``."""
    while not cond():  # noqa: ASYNC110 -- the state polled has no event to wait on
        await trio.sleep(poll)


async def http_ingest_server(nursery: trio.Nursery, root: Path) -> str:
    """A real HTTP ingest router over an ingest log in ``root`` (1 MiB bodies, 4 KiB
    records, 1 s flushes) on 127.0.0.1; its base URL."""
    from oklog.fs import RealFS
    from oklog.ingest.httpingest import HTTPIngestStats, httpingest_router
    from oklog.ingest.listener import IngestSettings
    from oklog.ingest.log import IngestLog
    from oklog.net.http import serve_http

    ilog = IngestLog(RealFS(), str(root))
    settings = IngestSettings(flush_size=1 << 20, flush_age=1.0, max_record_size=4096)
    router = httpingest_router(ilog, settings, HTTPIngestStats(), max_body=1 << 20)
    _, port = await nursery.start(serve_http, router, "127.0.0.1", 0)
    return f"http://127.0.0.1:{port}"


def recv_all(s: Any) -> bytes:
    """What a socket receives until the peer closes (or the connection fails)."""
    out = b""
    try:
        while chunk := s.recv(4096):
            out += chunk
    except OSError:
        pass
    return out


def fluent_node(workdir: Path, flush: str) -> Any:
    """A conftest node (not started) that also serves the Fluent forward port
    (``ports["fluent"]``), flushing and settling segments after ``flush``."""
    from conftest import NodeProc, free_port

    n = NodeProc(workdir, ["-ingest.segment-flush-age", flush, "-store.segment-target-age", flush])
    n.ports["fluent"] = free_port()
    n.args += ["-ingest.fluent", f"127.0.0.1:{n.ports['fluent']}"]
    return n
