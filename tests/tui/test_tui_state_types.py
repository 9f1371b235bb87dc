"""The TUI reads ``GET /cluster/state`` through its one definition
(``oklog.node.state``): every key it reads is one the node sends, the stub sends
exactly that document, and the client's light validation keeps a badly shaped
section from reaching the views."""

from __future__ import annotations

import ast
import asyncio
import typing
from pathlib import Path

import httpx
import pytest

from oklog.node.state import NodeState, unknown_keys
from oklog.tui.app import recent_figures
from oklog.tui.client import ApiError, NodeClient
from oklog.tui.model import alert_of, node_state, parse_state, warnings
from oklog.tui.stub import MEMBERS, StubClient

TUI = Path(__file__).resolve().parents[2] / "oklog" / "tui"
# The modules that read the document; other .get calls in the TUI are on other dicts.
READERS = ["model.py", "widgets/node_pipeline.py", "widgets/topology.py", "app.py"]


def defined_keys() -> set[str]:
    """Every field name of every section reachable from NodeState."""
    out: set[str] = set()
    seen: set[type] = set()

    def visit(t: object) -> None:
        if isinstance(t, type) and typing.is_typeddict(t) and t not in seen:
            seen.add(t)
            hints = typing.get_type_hints(t)
            out.update(hints)
            for ft in hints.values():
                visit(ft)
        for a in typing.get_args(t):
            visit(a)

    visit(NodeState)
    return out


def keys_read(source: str) -> set[str]:
    """String keys in ``x.get("k")``, ``x["k"]`` and ``"k" in x``."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.add(node.args[0].value)
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, str):
            out.add(node.slice.value)
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) \
                and isinstance(node.left.value, str) and isinstance(node.ops[0], ast.In):
            out.add(node.left.value)
    return out


@pytest.mark.parametrize("module", READERS)
def test_the_tui_reads_only_keys_the_node_sends(module: str):
    """``TypedDict.get`` of a key the definition lacks is not a mypy error, so this
    keeps the readers honest: a key the node never sends (``disk``, ``retention``,
    a member's ``name``) would show as "unknown" forever."""
    stray = keys_read((TUI / module).read_text()) - defined_keys()
    assert stray == set(), f"{module} reads keys /cluster/state never has: {sorted(stray)}"


def test_the_stub_sends_exactly_the_defined_document():
    for _mid, _role, addr, *_ in MEMBERS:
        doc = asyncio.run(StubClient(addr).cluster_state())
        assert unknown_keys(doc) == [], (addr, unknown_keys(doc))


def test_validation_drops_badly_shaped_sections_and_keeps_figures():
    doc = node_state({
        "self": "a", "replication_factor": 2,
        "members": [{"id": "a", "meta": "junk", "api_addr": 5}, "junk", {"id": "b", "state": "alive"}],
        "pipeline": {"time": 1.0, "ingest": [1, 2], "store": {"segments": 3, "quarantined": "x"},
                     "warnings": [{"level": "warn", "text": "t"}, "junk"], "new_section": {"n": 1}},
    })
    assert [m.get("id") for m in doc["members"]] == ["a", "b"]
    assert "meta" not in doc["members"][0] and "api_addr" not in doc["members"][0]
    p = doc["pipeline"]
    assert "ingest" not in p and p.get("store") == {"segments": 3}
    assert p.get("warnings") == [{"level": "warn", "text": "t"}]
    assert p.get("new_section") == {"n": 1}  # a newer node's section: kept, read by no one
    st = parse_state(doc)
    assert st.self_id == "a" and [m.id for m in st.members] == ["a", "b"] and st.time == 1.0
    with pytest.raises(ValueError):
        node_state([])


def test_a_node_warning_keeps_its_level():
    assert alert_of("n", {"level": "warn", "kind": "k", "subject": "s", "text": "t"}).level == "warning"
    assert alert_of("n", {"level": "error", "kind": "k", "subject": "s", "text": "t"}).level == "error"
    st = parse_state(node_state({"self": "a", "members": [{"id": "a"}], "pipeline": {
        "warnings": [{"level": "warn", "kind": "gather", "subject": "i", "text": "cannot read from i"}]}}))
    assert [(w.level, w.text) for w in warnings(st, {})] == [("warning", "cannot read from i")]


def test_the_client_refuses_a_document_that_is_not_an_object():
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[1, 2])

    async def body() -> None:
        c = NodeClient("x:1", transport=httpx.MockTransport(handler))
        with pytest.raises(ApiError, match="not a JSON object"):
            await c.cluster_state()
        await c.aclose()

    asyncio.run(asyncio.wait_for(body(), 10))


def test_recent_figures_keep_a_slow_member_a_while_and_then_drop_it():
    p = node_state({"pipeline": {"time": 1.0}})["pipeline"]
    figures = {"slow": (p, 100.0), "gone": (p, 90.0)}
    kept, expired = recent_figures(figures, ["slow", "gone", "never"], now=104.0, stale=5.0)
    assert kept == {"slow": p} and expired == ["gone"]
