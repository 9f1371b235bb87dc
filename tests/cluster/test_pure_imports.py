"""The cluster package's pure modules (state machine, codec, simulator, view,
keyring) import without trio: the simulator and tools use them without an event loop."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pure_cluster_modules_do_not_import_trio() -> None:
    code = (
        "import sys, oklog.cluster, oklog.cluster.swim, oklog.cluster.codec,"
        " oklog.cluster.sim, oklog.cluster.view, oklog.cluster.keyring, oklog.records.dedup;"
        " print(sorted(m for m in ('trio', 'httpx') if m in sys.modules))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
