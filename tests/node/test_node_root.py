"""The composition root's pure parts and its document before it serves: every
row a full MemberRow, each role with its own components only."""

import pytest

from oklog.node.config import Addr, NodeConfig
from oklog.node.root import _members_as, open_node, unreadable_row
from oklog.node.state import MemberRow, unknown_keys

LO = "127.0.0.1"


def config(tmp_path, role):
    return NodeConfig(
        role=role,
        api=Addr(LO, 0), ingest_fast=Addr(LO, 0), ingest_durable=Addr(LO, 0),
        ingest_bulk=Addr(LO, 0), cluster=Addr(LO, 0),
        ingest_path=str(tmp_path / "ingest"), store_path=str(tmp_path / "store"),
    )


@pytest.mark.parametrize("role", ["ingest", "store", "ingeststore"])
def test_a_node_not_yet_serving_sends_the_defined_document(tmp_path, role):
    node = open_node(config(tmp_path, role))
    assert (node.ingest is not None) == (role != "store")
    assert (node.store is not None) == (role != "ingest")
    st = node.state()
    assert unknown_keys(st) == []  # the single-node row has every MemberRow field
    (me,) = st["members"]
    assert me["self"] and me["id"] == node.id and me["state"] == "alive"
    assert me["uptime_seconds"] is not None and me["uptime_seconds"] >= 0
    assert ("ingest" in st["pipeline"]) == (role != "store")
    assert ("store" in st["pipeline"]) == (role != "ingest")


def test_open_node_opens_what_the_role_needs_on_disk(tmp_path):
    open_node(config(tmp_path, "store"))
    assert (tmp_path / "store").is_dir() and not (tmp_path / "ingest").exists()
    open_node(config(tmp_path / "i", "ingest"))
    assert (tmp_path / "i" / "ingest").is_dir() and not (tmp_path / "i" / "store").exists()


def test_an_unreadable_member_row_is_still_a_full_row():
    row = unreadable_row("10.0.0.9:7659", "alive", False)
    assert unknown_keys(row, MemberRow, ".members[0]") == []
    assert row["error"] == "unreadable" and row["api_addr"] is None


def test_members_as_local_or_one_remote_per_address():
    made = []

    def make(api, node_id):
        made.append(api)
        return ("remote", api, node_id)

    cache = {}
    live = [("me", None), ("b", "10.0.0.2:7650"), ("c", "10.0.0.3:7650")]
    first = _members_as(live, "LOCAL", cache, make)
    again = _members_as(live, "LOCAL", cache, make)
    assert first == ["LOCAL", ("remote", "10.0.0.2:7650", "b"), ("remote", "10.0.0.3:7650", "c")]
    assert again == first and made == ["10.0.0.2:7650", "10.0.0.3:7650"]  # clients kept, not rebuilt
    assert _members_as(live, None, cache, make) == first[1:]  # no local half: only the others
