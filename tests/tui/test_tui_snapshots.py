"""Snapshot tests of every view at a fixed terminal size, from the stub cluster.

The scenes are the ones ``python -m oklog.tui.screenshots`` draws for the docs.
Update after an intended change with ``pytest tests/tui --snapshot-update``.
"""

from __future__ import annotations

import pytest

from oklog.tui.screenshots import SCENES, SIZE, demo_app


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scene", list(SCENES))
def test_view_snapshot(snap_compare, scene):
    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=SCENES[scene])
