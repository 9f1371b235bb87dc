"""Chaos, short form: ~35 s of writing into 3 real nodes (replication 2)
through every fault kind: a kill+restart, a stop+cont, a full disk, and three
store-segment corruptions (so two members may hold a quarantined file at
once: each then answers in part, and the records must still all come back);
0 acknowledged lost, 0 duplicates.

Find it with ``pytest -k chaos``; the long form is ``make chaos``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

FAULTS = ["corrupt", "kill", "corrupt", "stop", "diskfull", "corrupt"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_chaos_short_no_acknowledged_loss(tmp_path):
    cfg = harness.Config(
        duration=35,
        rate=200,
        nodes=3,
        seed=3,
        faults=FAULTS,
        corrupt_modes=("flip", "truncate"),
        workdir=str(tmp_path / "chaos"),
        keep=True,
        settle_timeout=40,
        quiet=True,
    )
    report = harness.run_chaos(cfg)
    print(harness.table(report))
    s = report["summary"]
    assert report["settled"], "cluster did not settle (ingest segments left or members not alive)"
    assert not report["crashes"], report["crashes"]
    assert [f["kind"] for f in report["faults"]] == FAULTS, report["faults"]
    for f in report["faults"]:
        if f["kind"] == "corrupt":
            assert f["survived"] is not False, f  # alive and /health answers
        else:
            assert f["recover_s"] is not None, f
    # 206 where members hold quarantined files (their records may be missing
    # there until the operator clears quarantine/); never a 502 or a failure.
    assert all(st in (200, 206) for st in s["query_status"]), s["query_status"]
    assert s["acked"] > 1000
    assert s["lost"] == 0, report["writers"]
    assert s["duplicates"] == 0, report["writers"]
    assert report["elapsed_seconds"] < 150
