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
