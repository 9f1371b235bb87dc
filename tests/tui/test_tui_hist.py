"""The Query view's histogram and query bar against a real ``oklog run``, driven
by Textual's pilot: per-bucket counts equal a Python count of what was ingested
(and the node's ``/store/hits``), a bucket selection narrows from/to to the
buckets' bounds, ``-i``/``-v``/``-where`` in the query bar select what the CLI
selects, and an incomplete answer is marked.

Records get known times through the VictoriaLogs push endpoint (``_time`` is
the record's event time within the last hour)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from conftest import NodeProc, wait_for
from test_tui_live import until
from textual.widgets import Input

from oklog.records.record import ulid_ms
from oklog.tui.app import make_app
from oklog.tui.widgets.histogram import Histogram, rfc3339_ms
from oklog.tui.widgets.query import QueryView

SIZE = (140, 44)
SPAN_MS = 30 * 60_000  # the records cover 30 minutes
ARGS = ["-ingest.segment-flush-age", "0.5s", "-store.segment-target-age", "0.5s"]


def make_lines(t0: int) -> list[tuple[int, str]]:
    """(ms, line): an uneven number of records every 15 s, logfmt lines with
    mixed case, levels and statuses; some minutes have none."""
    out = []
    for k in range(SPAN_MS // 15_000):
        for j in range((k * 7) % 5):
            level = ("info", "warn", "error")[(k + j) % 3]
            status = (200, 404, 500, 503)[(k * 3 + j) % 4]
            word = ("Timeout", "timeout", "ok", "TIMEOUT", "fine")[(k + 2 * j) % 5]
            out.append((t0 + k * 15_000 + j * 1_000 + k % 7, f"level={level} status={status} msg={word} k={k} j={j}"))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuihist")
    node = NodeProc(root / "n0", list(ARGS)).start()
    t0 = (int(time.time() * 1000) - 40 * 60_000) // 60_000 * 60_000
    lines = make_lines(t0)
    body = "".join(json.dumps({"_time": rfc3339_ms(ms), "_msg": line}) + "\n" for ms, line in lines)
    try:
        r = httpx.post(node.url + "/insert/jsonline", content=body.encode(), timeout=30)
        assert r.status_code < 300, r.text
        wait_for(lambda: httpx.get(node.url + "/store/hits", params={"from": rfc3339_ms(t0)}, timeout=10)
                 .json().get("total") == len(lines), what="records stored")
        yield node, t0, lines
    finally:
        node.kill()


def run(body: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout))


async def run_form(pilot, view: QueryView, q: str, from_: str, to: str) -> None:
    view.query_one("#q", Input).value = q
    view.query_one("#from", Input).value = from_
    view.query_one("#to", Input).value = to
    view.query_one("#q", Input).focus()
    gen = view.generation
    view.outcome = ""
    await pilot.press("enter")
    await until(pilot, lambda: view.generation > gen or view.outcome == "error")
    await settle(pilot, view)


async def settle(pilot, view: QueryView) -> None:
    """The query that started last is over, and so is its count."""
    await until(pilot, lambda: not view.running and view.outcome
                and view.histogram.state in ("done", "error", "idle"))


async def press_and_settle(pilot, view: QueryView, *keys: str) -> None:
    gen = view.generation
    await pilot.press(*keys)
    await until(pilot, lambda: view.generation > gen)
    await settle(pilot, view)


def shown(view: QueryView) -> list[bytes]:
    assert view.spool is not None
    return view.spool.read(0, view.spool.kept)


def bars(hist: Histogram) -> list[str]:
    """The drawn bar rows (without the header and axis lines)."""
    rows = hist.render().plain.split("\n")
    top = 2 if hist.hits is not None and not hist.hits.complete else 1
    return rows[top : top + 5]


@pytest.mark.timeout(120)
def test_histogram_counts_per_bucket_and_a_selection_narrows_the_range(data):
    node, t0, lines = data
    app = make_app(node.api, 0.5)

    async def body() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            view = app.query_view
            hist = view.histogram
            lo, hi = t0, t0 + SPAN_MS
            await run_form(pilot, view, "", rfc3339_ms(lo), rfc3339_ms(hi - 1))
            assert view.outcome == "done" and hist.state == "done"
            lay = hist.span
            assert lay is not None and (lay.lo, lay.hi) == (lo, hi)
            assert 40 <= len(hist.values) <= 120
            step = lay.step
            want = [0] * len(hist.values)
            for ms, _ in lines:
                want[(ms - lay.first) // step] += 1
            assert hist.values == want and sum(want) == len(lines)
            assert hist.hits is not None and hist.hits.complete and hist.hits.total == len(lines)
            # The node's own answer for the same request, bucket by bucket.
            asked, step_text = view.hits_asked  # type: ignore[misc]
            async with httpx.AsyncClient() as http:
                got = (await http.get(node.url + "/store/hits", params={**asked.params(), "step": step_text},
                                      timeout=10)).json()
            assert {b["ms"]: b["count"] for b in got["buckets"]} == {lay.first + i * step: c
                                                                     for i, c in enumerate(want) if c}
            # Drawn: a bar exactly where a bucket has matches, the tallest full height.
            col = hist._col()
            bottom, top_row = bars(hist)[-1], bars(hist)[0]
            assert [bottom[i * col] != " " for i in range(len(want))] == [c > 0 for c in want]
            assert top_row[want.index(max(want)) * col] == "█"
            assert f"{len(lines):,} matches" in hist.render().plain
            assert "PARTIAL" not in hist.render().plain

            # Select buckets 9..11 with the keyboard and narrow.
            hist.focus()
            await pilot.press(*["right"] * 10, "shift+right", "shift+right")
            assert hist.selection() == (9, 11)
            b0, b1 = lay.bounds(9, 11)
            assert (b0, b1) == (lay.first + 9 * step, lay.first + 12 * step)
            assert "selected" in hist.render().plain
            view.query_one("#q", Input).value = "edited, not run"  # narrowing reruns the query on screen
            await press_and_settle(pilot, view, "enter")
            assert view.query_one("#from", Input).value == rfc3339_ms(b0)
            assert view.query_one("#to", Input).value == rfc3339_ms(b1 - 1)
            p = view.request.params()
            assert (p["from"], p["to"]) == (rfc3339_ms(b0), rfc3339_ms(b1 - 1))
            inside = [line for ms, line in lines if b0 <= ms < b1]
            assert inside, "the chosen buckets hold records"
            recs = shown(view)
            assert sorted(r.split(b" ", 2)[2].decode() for r in recs) == sorted(inside)
            assert all(b0 <= ulid_ms(r[:26]) < b1 for r in recs)
            assert hist.span is not None and (hist.span.lo, hist.span.hi) == (b0, b1)
            assert hist.hits is not None and hist.hits.total == len(inside) == sum(hist.values)

            # Backspace on the histogram: the range before.
            hist.focus()
            await press_and_settle(pilot, view, "backspace")
            assert view.request is not None and view.request.from_ == rfc3339_ms(lo)
            assert view.records == len(lines) and hist.hits is not None and hist.hits.total == len(lines)

            # The mouse: press on one bucket, drag to another, release; Enter narrows.
            col = hist._col()
            await pilot.mouse_down(hist, offset=(1 + 20 * col, 3))
            await pilot.hover(hist, offset=(1 + 23 * col, 3))
            await pilot.mouse_up(hist, offset=(1 + 23 * col, 3))
            assert hist.selection() == (20, 23)
            await press_and_settle(pilot, view, "enter")
            c0, c1 = lay.bounds(20, 23)
            assert view.request is not None and view.request.from_ == rfc3339_ms(c0)
            assert view.records == sum(1 for ms, _ in lines if c0 <= ms < c1) == hist.hits.total

    run(body)


def cli(node: NodeProc, *args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "oklog", "query", "-store", node.api, *args],
                         capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert out.returncode == 0, out.stderr
    return out.stdout.decode().splitlines()


@pytest.mark.timeout(180)
def test_query_bar_flags_select_what_the_cli_selects(data):
    node, t0, lines = data
    lo, to = rfc3339_ms(t0), rfc3339_ms(t0 + SPAN_MS - 1)
    app = make_app(node.api, 0.5)
    cases = [
        # (query bar, CLI flags, Python reference)
        ("timeout -i", ["-q", "timeout", "-i"], lambda s: "timeout" in s.lower()),
        ("timeout -i -v status=404 -where level!=info", ["-q", "timeout", "-i", "-v", "status=404",
                                                         "-where", "level!=info"],
         lambda s: "timeout" in s.lower() and "status=404" not in s and "level=info" not in s),
        ("level=error -where 'status>=500' -v msg=ok", ["-q", "level=error", "-where", "status>=500", "-v", "msg=ok"],
         lambda s: "level=error" in s and int(s.split("status=")[1].split()[0]) >= 500 and "msg=ok" not in s),
        ("-q TIMEOUT -q status=5", ["-q", "TIMEOUT", "-q", "status=5"], lambda s: "TIMEOUT" in s and "status=5" in s),
    ]

    async def body() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            view = app.query_view
            for bar, flags, ref in cases:
                await run_form(pilot, view, bar, lo, to)
                assert view.outcome == "done", (bar, view.detail)
                want = sorted(line for _, line in lines if ref(line))
                assert want and len(want) < len(lines), bar
                got = sorted(r.split(b" ", 2)[2].decode() for r in shown(view))
                assert got == want, bar
                assert got == sorted(cli(node, "-from", lo, "-to", to, *flags)), bar
                assert view.histogram.hits is not None and view.histogram.hits.total == len(want)
                assert sum(view.histogram.values) == len(want)
            # Input that cannot run is an error on screen, and nothing crashes.
            for bad, says in (("x -where status", "NAME OP VALUE"), ("x -v", "-v needs a value"),
                              ("x -v 'open", "unterminated")):
                await run_form(pilot, view, bad, lo, to)
                assert view.outcome == "error" and says in view.detail, (bad, view.detail)
                assert says in view.status_text().plain
                assert view.histogram.state == "idle" and not view.histogram.values
            await run_form(pilot, view, "timeout -i", lo, to)  # and it still runs queries
            assert view.outcome == "done" and view.records > 0

    run(body, 150)


@pytest.mark.timeout(150)
def test_an_incomplete_count_is_marked(node_factory):
    """Two store members, replication factor 1, one killed: the node answers 206
    and the histogram says its counts may be short, above bars in the warning colour."""
    fast = [*ARGS, "-cluster.suspicion-timeout", "2s", "-store.segment-replication-factor", "1"]
    a = node_factory("a", fast).start()
    b = node_factory("b", [*fast, "-peer", f"127.0.0.1:{a.ports['cluster']}"]).start()

    def members() -> int:
        return len(httpx.get(a.url + "/cluster/state", timeout=5).json()["members"])

    wait_for(lambda: members() == 2, what="2 members")
    t0 = (int(time.time() * 1000) - 20 * 60_000) // 60_000 * 60_000
    body = "".join(json.dumps({"_time": rfc3339_ms(t0 + i * 7_000), "_msg": f"line {i}"}) + "\n" for i in range(100))
    assert httpx.post(a.url + "/insert/jsonline", content=body.encode(), timeout=30).status_code < 300
    params = {"from": rfc3339_ms(t0)}
    wait_for(lambda: httpx.get(a.url + "/store/hits", params=params, timeout=10).json().get("total") == 100,
             what="records stored")
    b.kill()
    wait_for(lambda: httpx.get(a.url + "/store/hits", params=params, timeout=30).status_code == 206,
             what="a partial answer")
    app = make_app(a.api, 0.5)

    async def run_it() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            view = app.query_view
            await run_form(pilot, view, "line", rfc3339_ms(t0), rfc3339_ms(t0 + 15 * 60_000))
            hist = view.histogram
            assert hist.state == "done" and hist.hits is not None and not hist.hits.complete
            assert hist.hits.status == 206
            text = hist.render()
            assert text.plain.startswith("⚠ PARTIAL: counts may be short")
            assert hist.hits.errors and hist.hits.errors[:40] in text.plain  # the node's own words
            styles = {str(span.style) for span in text.spans}
            assert "yellow" in styles and "green" not in styles, styles

    run(run_it)
