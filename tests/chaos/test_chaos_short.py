"""A short form of ``make chaos`` in every test run: three real nodes,
replication 2, every writer and every fault kind once (a corrupted segment
twice, so two members may hold a quarantined file at the same time), and the
harness's own verdict: every acknowledged record found exactly once on every
node. The long, random schedule stays ``make chaos``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("harness.py")


@pytest.mark.timeout(420)
def test_short_chaos_loses_nothing_acknowledged(tmp_path):
    report = tmp_path / "report.json"
    p = subprocess.run(
        [sys.executable, str(HARNESS), "--duration", "35", "--seed", "3",
         "--faults", "corrupt,kill,corrupt,stop,diskfull,corrupt", "--workdir", str(tmp_path / "w"),
         "--json", str(report)],
        capture_output=True, timeout=400, cwd=Path(__file__).resolve().parents[2],
    )
    out = p.stdout.decode(errors="replace")
    assert report.exists(), out[-3000:] + p.stderr.decode(errors="replace")[-3000:]
    s = json.loads(report.read_text())["summary"]
    assert s["acked"] > 1000, out[-3000:]
    assert (s["lost"], s["duplicates"], s["crashes"]) == (0, 0, 0), out[-3000:]
    assert s["ok"] and p.returncode == 0, out[-3000:]
