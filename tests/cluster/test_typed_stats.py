"""The cluster's figures in /cluster/state are the typed rows of oklog.node.state."""

import dataclasses

from oklog.cluster.swim import DEAD, MemberInfo
from oklog.cluster.transport import GossipStats
from oklog.cluster.view import member_row
from oklog.node.state import GossipStats as GossipStatsDoc
from oklog.node.state import MemberRow


def test_gossip_report_carries_every_counter() -> None:
    stats = GossipStats()
    for i, f in enumerate(dataclasses.fields(stats)):
        setattr(stats, f.name, f"err {i}" if f.type in (str, "str") else i + 1)
    report = stats.report()
    assert report == dataclasses.asdict(stats)
    assert set(report) == set(GossipStatsDoc.__annotations__)


def test_member_row_has_the_schema_keys() -> None:
    m = MemberInfo(
        "10.0.0.2:7659", "ingeststore", ("10.0.0.2", 7659), DEAD, 3,
        {"api_addr": "10.0.0.2:7650", "started": 100.0}, 150.0,
    )
    row = member_row(m, now=200.0)
    assert set(row) == MemberRow.__required_keys__
    assert row["api_addr"] == "10.0.0.2:7650"
    assert row["gossip_addr"] == "10.0.0.2:7659"
    assert row["uptime_seconds"] == 50.0  # a dead member's uptime stops when it was last seen
