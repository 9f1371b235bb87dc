"""The TUI against real ``oklog run`` subprocesses, driven by Textual's pilot.

Sync tests each run their own asyncio loop (``asyncio.run``), so no async test
plugin is involved; every test has a pytest timeout and an inner deadline.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from conftest import NodeProc, free_port, wait_for
from rich.console import Console
from support import cluster_state

from oklog.tui.app import OklogApp, make_app
from oklog.tui.client import NodeClient
from oklog.tui.widgets.banner import UnreachableBanner
from oklog.tui.widgets.members import MembersTable
from oklog.tui.widgets.node_pipeline import NodePipeline
from oklog.tui.widgets.query import QueryView
from oklog.tui.widgets.tail import TailView
from oklog.tui.widgets.topology import Topology

SIZE = (140, 44)
BIG_RECORDS = 150_000  # ~25 MB: enough that a full query takes many chunks


class Node(NodeProc):
    """conftest's node with half-second flushes and the few helpers these tests use."""

    def __init__(self, root: Path, api_port: int | None = None) -> None:
        super().__init__(root, ["-ingest.segment-flush-age", "0.5s", "-store.segment-target-age", "0.5s"])
        if api_port is not None:
            self.ports["api"] = api_port
            self._retried = True  # a retry would move the API port the test watches

    def send(self, data: bytes) -> None:
        self.send_fast(data)

    def state(self) -> dict:
        return cluster_state(self)

    def wait_stored(self, nbytes: int, timeout: float = 30.0) -> None:
        # "records_bytes": "bytes" is on disk, compressed
        wait_for(lambda: self.state()["pipeline"]["store"]["records_bytes"] >= nbytes, timeout,
                 what=f"store holding {nbytes} bytes")


@pytest.fixture(scope="module")
def node():
    root = Path(tempfile.mkdtemp(prefix="oklog-tui-"))
    n = Node(root / "n0").start()
    lines = b"".join(
        b"big record %06d lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod "
        b"tempor incididunt ut labore et dolore magna aliqua %s\n" % (i, b"needle" if i % 5000 == 0 else b"hay")
        for i in range(BIG_RECORDS)
    )
    n.send(lines)
    n.wait_stored(len(lines) + BIG_RECORDS * 35)  # + "ULID default " per record
    try:
        yield n
    finally:
        n.kill()
        shutil.rmtree(root, ignore_errors=True)


def run(body: Callable[[], Awaitable[None]], timeout: float = 40.0) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout))


async def until(pilot, pred: Callable[[], object], step: float = 0.02):
    """``pred()``'s first truthy value, polled between frames. No limit of its own:
    ``run`` bounds the whole test (``asyncio.wait_for``); a wait cut short says what
    it was waiting for."""
    try:
        while not (v := pred()):
            await pilot.pause(step)
        return v
    except asyncio.CancelledError as e:
        e.add_note(f"while waiting for {getattr(pred, '__name__', 'a condition')}")
        raise


async def until_line(pilot, tail: TailView, send: Callable[[bytes], None], prefix: bytes) -> None:
    """Forward a fresh line (``send``) every 2 s, ten at most, until one sent after the
    tail went live appears in it: the very first may race the node's subscription."""
    sent: list[str] = []
    for _ in range(10):
        line = b"%s %d %d" % (prefix, len(sent), time.monotonic_ns())
        await asyncio.to_thread(send, line)
        sent.append(line.decode())
        for _ in range(100):
            if any(s in ln for ln in tail.log_widget.lines for s in sent):
                return
            await pilot.pause(0.02)
    raise AssertionError(f"none of {sent} appeared in the tail: {tail.status_text().plain}")


def text_of(widget) -> str:
    """The plain text a Static shows (Text or any Rich renderable)."""
    content = widget.content
    if isinstance(content, str):
        return content
    if hasattr(content, "plain"):
        return content.plain
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(content)
    return console.export_text()


@pytest.mark.timeout(60)
def test_cluster_view_lists_member_with_role(node):
    async def body() -> None:
        app = make_app(node.api, 0.3)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.polls >= 1)
            await pilot.pause()
            table = app.query_one(MembersTable)
            assert table.row_count == 1
            row = [getattr(c, "plain", str(c)) for c in table.get_row_at(0)]
            me = node.state()["self"]
            assert row[0] == "▶" and row[1] == me and row[2] == "ingeststore"
            assert row[3] == node.api and "alive" in row[4]
            topo = text_of(app.query_one(Topology))
            assert "ingest" in topo and "store" in topo and me in topo
            assert "attached" in text_of(app.query_one("#statusbar"))

    run(body)


@pytest.mark.timeout(60)
def test_pipeline_figures_move_when_data_is_forwarded(node):
    async def body() -> None:
        app = make_app(node.api, 0.25)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: app.state is not None)
            me = app.state.self_id
            before = app.state.pipelines[me]["ingest"]["records_in"]
            # records' bytes, not file bytes: compaction compressing earlier
            # segments meanwhile makes the files smaller while records arrive
            stored = app.state.pipelines[me]["store"]["records_bytes"]
            node.send(b"".join(b"pipeline moves %d\n" % i for i in range(2000)))

            def moved():
                p = app.state.pipelines[me]
                return p["ingest"]["records_in"] >= before + 2000 and p["store"]["records_bytes"] > stored

            try:  # a loaded CI machine (chaos test on the other worker) can take a while
                async with asyncio.timeout(30):
                    await until(pilot, moved)
            except TimeoutError:
                p = app.state.pipelines[me]
                raise AssertionError(
                    f"records_in {before} -> {p['ingest']['records_in']}, store records' bytes {stored} -> "
                    f"{p['store']['records_bytes']}, ingest {p['ingest']}, consumer {p.get('consumer')}"
                ) from None
            h = app.histories[me]
            assert max(h.record_rates()) > 0  # the rate derived from successive samples
            await pilot.pause(0.1)
            card = app.query_one(NodePipeline)
            ingest = text_of(card.query_one(".ingest"))
            assert f"{app.state.pipelines[me]['ingest']['records_in']:,}" in ingest
            assert "active" in ingest and "flushed" in ingest and "pending" in ingest

    run(body, 55.0)


class PacedClient(NodeClient):
    """A real NodeClient whose query reads are paced like a slow link, so the
    test can watch a response while it is still arriving."""

    PACE = 0.01  # seconds per network chunk

    @asynccontextmanager
    async def query(self, request, now=None):
        async with super().query(request, now) as stream:
            inner = stream.chunks

            async def paced():
                assert inner is not None
                async for chunk in inner:
                    await asyncio.sleep(self.PACE)
                    yield chunk

            stream.chunks = paced()
            yield stream


@pytest.mark.timeout(60)
def test_query_large_result_is_bounded_with_statistics(node):
    async def body() -> None:
        app = make_app(node.api, 5.0, max_lines=2_000)
        async with app.run_test(size=SIZE) as pilot:
            view = app.query_one(QueryView)
            await pilot.press("3", *"lorem ipsum", "enter")  # only the big records
            await until(pilot, lambda: view.outcome)
            assert view.outcome == "done", view.detail
            assert view.records == BIG_RECORDS
            # The first lines went on screen before the response had ended.
            assert 0 < view.shown_while_running < BIG_RECORDS
            assert view.results.line_count == 2_000  # bounded: the last N
            assert "149999" in view.results.lines[-1]
            assert view.results.lines[-1].startswith(("20", "19"))  # time, topic, line
            status = view.status_text().plain
            assert "showing records 148,001–150,000 of 150,000" in status
            assert "nodes 1" in status and "segments" in status  # X-Oklog-* statistics
            # Every record is reachable: the first page holds the first records.
            await pilot.press("left_curly_bracket")
            assert view.results.line_count == 2_000
            assert "big record 000000 " in view.results.lines[0] and "big record 001999 " in view.results.lines[-1]
            assert "showing records 1–2,000 of 150,000" in view.status_text().plain

    run(body)


@pytest.mark.timeout(90)
def test_query_streams_incrementally_and_esc_cancels(node):
    async def body() -> None:
        app = make_app(node.api, 5.0, max_lines=2_000, client=lambda n: PacedClient(n))
        async with app.run_test(size=SIZE) as pilot:
            view = app.query_one(QueryView)
            await pilot.press("3", "enter")
            # First results are on screen while the rest is still arriving.
            await until(pilot, lambda: view.results.line_count > 0 and view.running)
            first = view.records
            await until(pilot, lambda: view.records > first and view.running)
            assert "running" in view.status_text().plain
            # Esc cancels it.
            await pilot.press("escape")
            await until(pilot, lambda: not view.running)
            assert view.outcome == "cancelled" and 0 < view.records < BIG_RECORDS
            assert "cancelled" in view.status_text().plain
            # A new query cancels the running one (exclusive worker).
            view.run_query(view.form())
            await until(pilot, lambda: view.running and view.records > 0)
            q = app.query_one("#q")
            q.focus()
            q.value = "needle"
            await pilot.press("enter")
            await until(pilot, lambda: not view.running and view.outcome)
            assert view.outcome == "done", view.detail
            assert view.records == BIG_RECORDS // 5000
            assert view.results.line_count == BIG_RECORDS // 5000
            assert all("needle" in ln for ln in view.results.lines)

    run(body, timeout=80)


@pytest.mark.timeout(60)
def test_save_writes_all_records(node, tmp_path):
    async def body() -> None:
        app = make_app(node.api, 5.0, max_lines=5)
        async with app.run_test(size=SIZE) as pilot:
            view = app.query_one(QueryView)
            await pilot.press("3", *"needle", "enter")
            await until(pilot, lambda: view.outcome == "done")
            await pilot.press("ctrl+s")
            await pilot.pause(0.1)
            path = tmp_path / "saved.log"
            box = app.screen.query_one("#save-path")
            box.value = str(path)
            await pilot.press("enter")
            await until(pilot, lambda: path.exists() and path.read_bytes().count(b"\n") == 30)
            lines = path.read_text().splitlines()  # as on screen: time, topic, line
            assert all(ln.startswith("20") and " default big record " in ln and "needle" in ln for ln in lines)
            assert lines[-5:] == list(view.results.lines)

    run(body)


@pytest.mark.timeout(60)
def test_tail_view_shows_lines_forwarded_after_it_opened(node):
    async def body() -> None:
        app = make_app(node.api, 5.0)
        async with app.run_test(size=SIZE) as pilot:
            tail = app.query_one(TailView)
            await pilot.press("4")
            await until(pilot, lambda: tail.state not in ("idle", "connecting"))
            assert tail.state == "live", tail.status_text().plain  # /store/stream exists: no 404
            before = tail.log_widget.line_count
            await until_line(pilot, tail, lambda line: node.send(line + b"\n"), b"tail me please")
            # A batch forwarded now arrives whole and in order.
            batch = [f"tail batch {i:03d} {time.monotonic_ns()}" for i in range(50)]
            await asyncio.to_thread(node.send, "".join(b + "\n" for b in batch).encode())
            await until(pilot, lambda: sum(any(b in ln for b in batch) for ln in tail.log_widget.lines) == 50)
            got = [ln for ln in tail.log_widget.lines if "tail batch" in ln]
            assert [g.split("tail batch ")[1][:3] for g in got] == [f"{i:03d}" for i in range(50)]
            assert tail.log_widget.line_count > before
            assert tail.records >= 51
            assert "live" in tail.status_text().plain
            await pilot.press("space")
            assert tail.paused

    run(body)


@pytest.mark.timeout(60)
def test_unreachable_banner_appears_and_clears_when_node_comes_up(tmp_path):
    port = free_port()
    late = Node(tmp_path / "late", api_port=port)

    async def body() -> None:
        app: OklogApp = make_app(f"127.0.0.1:{port}", 0.3)
        async with app.run_test(size=SIZE) as pilot:
            banner = app.query_one(UnreachableBanner)
            await until(pilot, lambda: banner.display and app.failures >= 2)
            text = text_of(banner)
            assert "unreachable" in text and str(port) in text and "retrying" in text
            await asyncio.to_thread(late.start)
            await until(pilot, lambda: not banner.display and app.polls >= 1)
            assert app.query_one(MembersTable).row_count == 1

    try:
        run(body)
    finally:
        late.kill()
