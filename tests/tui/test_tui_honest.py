"""The TUI tells the truth (issue 14), driven by Textual's pilot on the stub cluster:
the attached node dying switches to a live member with a notice; every record of
a large result is reachable; Save writes exactly what its dialog says; the tail
counts what the node dropped, clears on a new filter, never shows a negative rate;
control characters in records are shown, not obeyed."""

from __future__ import annotations

import asyncio

import pytest

from oklog.tui.app import OklogApp, switch_candidates
from oklog.tui.client import parse_records
from oklog.tui.screenshots import demo_app, prime, until
from oklog.tui.stub import query_body
from oklog.tui.widgets.query import QueryView
from oklog.tui.widgets.result_log import ESCAPES, escape, format_record
from oklog.tui.widgets.save_dialog import SaveDialog
from oklog.tui.widgets.tail import TailView, dropped_in

SIZE = (130, 40)


def run(body, timeout: float = 40.0) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout))


def notices(app: OklogApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


@pytest.mark.timeout(40)
def test_attached_node_dying_switches_to_a_live_member_with_a_notice():
    async def body() -> None:
        app = demo_app()
        async with app.run_test(size=SIZE) as pilot:
            await prime(pilot, 3)
            assert switch_candidates(app.state) == ["10.0.0.2:7650", "10.0.0.3:7650", "10.0.0.4:7650"]
            app.client.down = True  # type: ignore[attr-defined]
            await app.fetch_once()
            await pilot.pause()
            assert app.node == "10.0.0.1:7650"  # one missed poll is not a death
            await app.fetch_once()
            await until(pilot, lambda: app.node == "10.0.0.2:7650")
            await until(pilot, lambda: any(
                "10.0.0.1:7650 stopped answering: attached to 10.0.0.2:7650" in n for n in notices(app)))
            await prime(pilot, 1)
            assert app.state is not None and app.state.self_id == "ingest-2"
            assert not app.banner.display and "10.0.0.2:7650" in app.statusbar.content.plain

    run(body)


@pytest.mark.timeout(40)
def test_no_switch_when_no_member_answers():
    async def body() -> None:
        app = demo_app()
        async with app.run_test(size=SIZE) as pilot:
            await prime(pilot, 3)
            for c in app.client_factory.clients.values():  # type: ignore[attr-defined]
                c.down = True
            for _ in range(3):
                await app.fetch_once()
                await pilot.pause(0.05)
            await until(pilot, lambda: not app.switching)
            assert app.node == "10.0.0.1:7650" and app.banner.display

    run(body)


@pytest.mark.timeout(60)
def test_every_record_of_a_large_result_is_reachable_page_by_page():
    total, page = 25_000, 10_000
    want = [format_record(r.time_text(), r.topic, r.line) for r in parse_records(query_body(total))]

    async def body() -> None:
        app = demo_app(max_lines=page, query_records=total)
        async with app.run_test(size=SIZE) as pilot:
            view = app.query_one(QueryView)
            await pilot.press("3", "enter")  # everything
            await until(pilot, lambda: view.outcome == "done")
            assert view.records == total and view.results.line_count == page
            assert list(view.results.lines) == want[-page:]  # the last page, followed
            assert f"showing records {total - page + 1:,}–{total:,} of {total:,}" in view.status_text().plain
            await pilot.press("left_curly_bracket")  # the first page
            assert view.shown_range() == (0, page) and list(view.results.lines) == want[:page]
            assert "showing records 1–10,000 of 25,000" in view.status_text().plain
            seen: list[str] = []
            while True:
                first, end = view.shown_range()
                assert list(view.results.lines) == want[first:end]
                seen += want[first:end]
                if view.page_start is None:
                    break
                await pilot.press("right_square_bracket")
            assert set(seen) == set(want)  # every record was on some page
            await pilot.press("left_square_bracket")  # and back
            assert view.shown_range() == (total - 2 * page, total - page)
            assert list(view.results.lines) == want[total - 2 * page : total - page]

    run(body, 55)


@pytest.mark.timeout(40)
def test_save_writes_exactly_what_the_dialog_says(tmp_path):
    async def body() -> None:
        app = demo_app(max_lines=5)
        async with app.run_test(size=SIZE) as pilot:
            view = app.query_one(QueryView)
            await pilot.press("3", *"GET /v1", "enter")
            await until(pilot, lambda: view.outcome == "done")
            assert view.records == 12 and view.results.line_count == 5
            for raw in (False, True):
                await pilot.press("ctrl+s")
                await until(pilot, lambda: isinstance(app.screen, SaveDialog))
                dialog = app.screen
                assert isinstance(dialog, SaveDialog)
                path = tmp_path / f"saved-{raw}.log"
                dialog.query_one("#save-path").value = str(path)  # type: ignore[attr-defined]
                if raw:
                    await pilot.click("#save-raw")
                    await pilot.pause()
                note = dialog.note
                assert note.startswith("All 12 records of this result, one per line")
                assert ("ULID TOPIC LINE" in note) == raw and ("as shown on screen" in note) == (not raw)
                await pilot.click("#save-ok")
                await until(pilot, lambda p=path: p.exists() and any(
                    "saved 12 records" in n and str(p) in n for n in notices(app)))
                got = path.read_bytes()
                body = b"".join(r for r in query_body(40).splitlines(keepends=True) if b"GET /v1" in r)
                if raw:
                    assert got == body  # byte for byte what the node sent
                else:
                    lines = got.decode().splitlines()
                    assert len(lines) == 12
                    assert lines[-5:] == list(view.results.lines)  # the screen's own lines
                    assert lines == [format_record(r.time_text(), r.topic, r.line) for r in parse_records(body)]

    run(body)


@pytest.mark.timeout(40)
def test_tail_counts_drops_clears_on_a_new_filter_and_never_shows_a_negative_rate():
    async def body() -> None:
        app = demo_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("4")
            tail = app.query_one(TailView)
            await until(pilot, lambda: tail.log_widget.line_count >= 27)
            assert tail.dropped == 120
            status = tail.status_text().plain
            assert "120 dropped by the node" in status
            app.client_factory.clients[app.node].k += 5  # type: ignore[attr-defined]  # 10 s later
            tail.status_text()
            await pilot.press("slash", *"login", "enter")
            await until(pilot, lambda: app.client.tail_filters[-1] == ("login", False))  # type: ignore[attr-defined]
            await until(pilot, lambda: tail.log_widget.line_count == 5 + 2)  # 5 logins, 2 extra lines
            assert not any("GET /v1" in ln for ln in tail.log_widget.lines)  # the old filter's lines went
            assert tail.records == 7 and tail.dropped == 120  # counted afresh for this filter
            app.client_factory.clients[app.node].k += 5  # type: ignore[attr-defined]
            status = tail.status_text().plain
            assert "-" not in status.split("records ·")[1].split("/s")[0]
            assert tail.rate >= 0
            # The regex toggle reads as words.
            await pilot.press("ctrl+t")
            await pilot.pause()
            assert "regex: on" in str(app.query_one("#tail-regex").label)

    run(body)


def test_drop_notices_are_counted_from_whole_buffers():
    u = b"01KAAAAAAAAAAAAAAAAAAAAAAA"
    buf = (u + b" api a line saying oklog dropped 5 records\n"
           + u + b" oklog oklog: stream dropped 7 records (client too slow)\n"
           + u + b" oklog oklog: stream dropped 1 record (client too slow)\n")
    assert dropped_in(buf) == 8
    assert dropped_in(u + b" api nothing\n") == 0


@pytest.mark.timeout(40)
def test_control_characters_are_shown_not_obeyed():
    line = "a\x1b[2J\x1b]0;pwned\x07b\r\n\x9b31m\u202egnp.exe\u2066[bold]x[/bold]\x7f\tend"
    shown = escape(line)
    assert not any(ord(c) in ESCAPES for c in shown)
    assert shown == ("a^[[2J^[]0;pwned^Gb^M^J<U+009B>31m<U+202E>gnp.exe<U+2066>"
                     "[bold]x[/bold]^?\tend")

    async def body() -> None:
        app = demo_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("4")
            tail = app.query_one(TailView)
            await until(pilot, lambda: tail.log_widget.line_count >= 27)
            log = tail.log_widget
            y = next(i for i, ln in enumerate(log.lines) if "build" in ln)
            assert log.lines[y].endswith("worker build ^[[32mOK^[[0m^M <U+202E>txt.exe")
            strip = log._render_line_strip(y, log.rich_style)
            text = "".join(seg.text for seg in strip)
            assert "^[[32mOK" in text and not any(ord(c) in ESCAPES for c in text)
            dim = [seg for seg in strip if seg.text in ("^[", "^M", "<U+202E>")]
            assert dim and all(seg.style is not None and seg.style.dim for seg in dim)

    run(body)


@pytest.mark.timeout(40)
def test_a_partial_result_says_so_above_the_results():
    why = "1 of 2 store members down: store-2 (connection refused)"

    async def body() -> None:
        app = demo_app(query_errors=why)
        async with app.run_test(size=SIZE) as pilot:
            view = app.query_one(QueryView)
            await pilot.press("3", *"GET", "enter")
            await until(pilot, lambda: view.outcome)
            assert view.outcome == "partial"
            first = view.status_text().plain.splitlines()[0]
            assert first == f"⚠ results may be incomplete: {why}"
            await pilot.press("slash", "ctrl+a")  # a later complete answer clears it
            app.client.query_errors = ""  # type: ignore[attr-defined]
            await pilot.press("enter")
            await until(pilot, lambda: view.outcome == "done")
            assert "incomplete" not in view.status_text().plain

    run(body)
