"""Deterministic scenes of every view, from the stub client; SVG screenshots for the docs.

    python -m oklog.tui.screenshots [OUTDIR]     (default docs/screenshots)

The snapshot tests drive the same scenes, so the README pictures and the tested
pictures are the same pictures.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input

from oklog.tui.app import OklogApp, make_app
from oklog.tui.stub import StubClient, StubClientFactory
from oklog.tui.widgets.histogram import Histogram
from oklog.tui.widgets.query import QueryView
from oklog.tui.widgets.tail import TailView

SIZE = (130, 40)
SAMPLES = 60  # two minutes of history at the stub's 2 s step
NODE = "10.0.0.1:7650"
SETTLE = 10.0  # seconds a scene may take to settle


def demo_app(max_lines: int = 10_000, **kw: Any) -> OklogApp:
    """The app on a stub cluster; refresh never fires on its own (scenes poll)."""
    factory = StubClientFactory(**kw)
    return make_app(NODE, 3600.0, client=factory, clock=factory.clock, max_lines=max_lines)


async def prime(pilot: Pilot[None], samples: int = SAMPLES) -> None:
    app = pilot.app
    assert isinstance(app, OklogApp)
    await pilot.pause()
    while app.polls < samples:
        for _ in range(samples - app.polls):
            await app.fetch_once()
        await pilot.pause()


async def until(pilot: Pilot[None], pred: Callable[[], object]) -> None:
    """Pause until ``pred()`` holds; ``TimeoutError`` after ``SETTLE`` seconds."""
    try:
        async with asyncio.timeout(SETTLE):
            while not pred():
                await pilot.pause(0.02)
    except TimeoutError:
        raise TimeoutError("scene did not settle") from None


async def cluster(pilot: Pilot[None]) -> None:
    await prime(pilot)


async def pipeline(pilot: Pilot[None]) -> None:
    await prime(pilot)
    await pilot.press("2")


async def query(pilot: Pilot[None]) -> None:
    await prime(pilot)
    await pilot.press("3", *"GET /v1", "enter")
    view = pilot.app.query_one(QueryView)
    await until(pilot, lambda: view.outcome == "done" and view.query_one("#hist", Histogram).state == "done")
    await pilot.pause(0.15)


async def save(pilot: Pilot[None]) -> None:
    await query(pilot)
    await pilot.press("ctrl+s")
    await until(pilot, lambda: pilot.app.screen.query("#save-path"))
    pilot.app.screen.query_one("#save-path", Input).cursor_blink = False
    await pilot.pause(0.1)


async def tail(pilot: Pilot[None]) -> None:
    await prime(pilot)
    await pilot.press("4")
    view = pilot.app.query_one(TailView)
    await until(pilot, lambda: view.log_widget.line_count >= 27)
    await pilot.pause(0.15)


async def help_screen(pilot: Pilot[None]) -> None:
    await prime(pilot, 2)
    await pilot.press("f1")
    await pilot.pause(0.2)


async def unreachable(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, OklogApp)
    app.auto_switch = False  # this scene shows the banner; switching has its own test
    await prime(pilot)
    assert isinstance(app.client, StubClient)
    app.client.down = True
    for _ in range(3):
        await app.fetch_once()
        await pilot.pause()


SCENES: dict[str, Callable[[Pilot[None]], Awaitable[None]]] = {
    "cluster": cluster,
    "pipeline": pipeline,
    "query": query,
    "save": save,
    "tail": tail,
    "help": help_screen,
    "unreachable": unreachable,
}


async def shoot(name: str, out: Path) -> Path:
    app = demo_app()
    path = out / f"tui-{name}.svg"
    async with app.run_test(size=SIZE) as pilot:
        await SCENES[name](pilot)
        await pilot.pause()
        app.save_screenshot(path.name, str(out))
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    for name in SCENES:
        print(asyncio.run(shoot(name, out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
